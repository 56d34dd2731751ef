"""Fixed inputs for the dashboard: the same bytes on every run and machine.

Ed25519 keys come from fixed seeds and Ed25519 signatures are
deterministic, so the certificates and OCSP responses here are identical
byte for byte every time: what the SVG snapshots need. Every state the
dashboard knows is present once: good, due, stale (and failing), expired,
missing, revoked, a fake tryLater, and an entry httpd wrote for a
certificate nobody configured.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from engine.ocsp.certs import Leaf
from engine.store.providers.base import Entry
from engine.store.providers.layout import FLAG_VALID
from engine.refresh.worker_state import CertState, Heartbeat, HistoryEntry
from engine.locks.stats import Holder, StripeStats
from staplectl.dashboard.snapshot import Snapshot, build_items

NOW = dt.datetime(2026, 11, 25, 3, 0, 0, tzinfo=dt.timezone.utc)
T = NOW.timestamp()
H = 3600.0
OCSP_URL = "http://ocsp.example.test/"
PID = 4242  # a worker "on another host": never checked against this machine's processes


def _key(n: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


CA_KEY = _key(1)
CA = (
    x509.CertificateBuilder()
    .subject_name(_name("Example Issuing CA"))
    .issuer_name(_name("Example Issuing CA"))
    .public_key(CA_KEY.public_key())
    .serial_number(0x1000)
    .not_valid_before(NOW - dt.timedelta(days=365))
    .not_valid_after(NOW + dt.timedelta(days=3650))
    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    .sign(CA_KEY, None)
)


def _leaf_cert(n: int, cn: str, *, ocsp_url: bool = True, must_staple: bool = False) -> x509.Certificate:
    key = _key(n + 10)
    aia = x509.AuthorityInformationAccess([
        x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(OCSP_URL))
    ])
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(CA.subject)
        .public_key(key.public_key())
        .serial_number(0x5EED0000 + n)
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW + dt.timedelta(days=60))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    )
    if ocsp_url:
        builder = builder.add_extension(aia, critical=False)
    if must_staple:
        builder = builder.add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False)
    return builder.sign(CA_KEY, None)


def leaf_without_ocsp(name: str, n: int, *, must_staple: bool = False) -> Leaf:
    """A configured certificate that names no OCSP responder (not among CERTS)."""
    cert = _leaf_cert(n, f"{name}.example.test", ocsp_url=False, must_staple=must_staple)
    return Leaf(cert, CA, path=Path(f"/etc/ssl/sites/{name}.pem"))


def response(cert: x509.Certificate, this_update: float, next_update: float | None, status: str = "good") -> bytes:
    """A response signed by the CA; times in seconds from NOW."""
    revoked = status == "revoked"
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=CA, algorithm=hashes.SHA1(),
        cert_status={"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                     "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status],
        this_update=NOW + dt.timedelta(seconds=this_update),
        next_update=None if next_update is None else NOW + dt.timedelta(seconds=next_update),
        revocation_time=NOW - dt.timedelta(days=2) if revoked else None,
        revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, CA)  # fmt: skip
    return _produced_at(builder.sign(CA_KEY, None), NOW + dt.timedelta(seconds=this_update))


def _produced_at(signed: ocsp.OCSPResponse, when: dt.datetime) -> bytes:
    """The response with producedAt set to ``when``, signed again.

    cryptography stamps producedAt with the real time and offers no way to
    set it. It is a GeneralizedTime of fixed length, the first time in
    tbsResponseData (version, responderID, producedAt, responses), so it
    can be replaced in place and the Ed25519 signature (fixed length too)
    made again over the new bytes.
    """
    der = signed.public_bytes(serialization.Encoding.DER)
    tbs = signed.tbs_response_bytes
    stamp = signed.produced_at_utc.strftime("%Y%m%d%H%M%SZ").encode()
    fixed = tbs.replace(b"\x18\x0f" + stamp, b"\x18\x0f" + when.strftime("%Y%m%d%H%M%SZ").encode(), 1)
    assert fixed != tbs or stamp == when.strftime("%Y%m%d%H%M%SZ").encode()
    return der.replace(tbs, fixed, 1).replace(signed.signature, CA_KEY.sign(fixed), 1)


TRY_LATER = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(
    serialization.Encoding.DER
)

# name: (n, subject, configured, staple (this_update, next_update, status) or "try-later" or None)
CERTS = {
    "www": (1, "www.example.test", True, (-1 * H, 23 * H, "good")),
    "api": (2, "api.example.test", True, (-14 * H, 10 * H, "good")),
    "shop": (3, "shop.example.test", True, (-20 * H, 4 * H, "good")),
    "mail": (4, "mail.example.test", True, (-30 * H, -6 * H, "good")),
    "old": (5, "old.example.test", True, (-1 * H, 23 * H, "revoked")),
    "new": (6, "new.example.test", True, None),
    "vpn": (7, "vpn.example.test", True, "try-later"),
    "legacy": (8, "legacy.example.test", False, (-2 * H, 22 * H, "good")),
}
CERTIFICATES = {name: _leaf_cert(n, cn) for name, (n, cn, _, _) in CERTS.items()}
LEAVES = {name: Leaf(cert, CA, path=Path(f"/etc/ssl/sites/{name}.pem")) for name, cert in CERTIFICATES.items()}


def entries() -> list[Entry]:
    found = []
    for name, (_, cn, configured, staple) in CERTS.items():
        leaf = LEAVES[name]
        if staple is None:
            continue
        der = TRY_LATER if staple == "try-later" else response(leaf.cert, *staple)
        # httpd writes no metadata; staplectl names the file and responder
        meta = {"cert_path": str(leaf.path), "responder": OCSP_URL, "fetched_at": "2026-11-25T02:00:00Z"}
        found.append(Entry(leaf.cert_id, f"mod_ssl-staple:{leaf.cert_id}", der, FLAG_VALID,
                           expires_at=T + 20 * H, meta=meta if configured else None))  # fmt: skip
    return found


def states() -> dict[str, CertState]:
    def state(name: str, **fields) -> CertState:
        leaf = LEAVES[name]
        base = CertState(leaf.cert_id, str(leaf.path), str(leaf.path), OCSP_URL, last_attempt=T - 600,
                         last_success=T - 600, next_attempt=T + 6 * H)  # fmt: skip
        return replace(base, **fields)

    timeout = "responder http://ocsp.example.test/: no complete answer within 10 s"
    found = [
        state("www", status="good", this_update=T - H, next_update=T + 23 * H),
        state("api", status="good", next_attempt=T + 90),
        state("shop", failures=3, last_success=T - 20 * H, last_error=timeout, last_reason="timeout", next_attempt=T + 240),
        state("mail", failures=9, last_success=T - 30 * H, last_error="responder http://ocsp.example.test/: "
              "connection refused", last_reason="unreachable", next_attempt=T + 1800),
        state("old", status="revoked"),
        state("new", failures=1, last_success=None, last_error=timeout, last_reason="timeout", next_attempt=T + 50),
        state("vpn", failures=2, last_error="response from http://ocsp.example.test/: responseStatus is try_later",
              last_reason="response_status", next_attempt=T + 120),
    ]  # fmt: skip
    return {s.cert_id: s for s in found}


HISTORY = {
    LEAVES["shop"].cert_id: (
        HistoryEntry(T - 20 * H, "updated", "good (fetched), nextUpdate 2026-11-25T07:00:00Z"),
        HistoryEntry(T - 2 * H, "failed", "timeout: no complete answer within 10 s (failure 1 in a row)"),
        HistoryEntry(T - H, "failed", "timeout: no complete answer within 10 s (failure 2 in a row)"),
        HistoryEntry(T - 600, "failed", "timeout: no complete answer within 10 s (failure 3 in a row)"),
    ),
}


#: stripe 3's total wait at each read: 0.4 s, then 2 s, then 0.1 s waited in between
WAITS = (9.5, 9.9, 11.9, 12.0)


def stripes(step: int = 0) -> tuple[StripeStats, ...]:
    """64 stripes, three of them used; ``step`` makes the counters of a later read."""
    def s(n: int, **fields) -> StripeStats:
        return StripeStats(stripe=n, acquisitions=0, contended=0, reentries=0, total_wait=0.0, max_wait=0.0,
                           total_hold=0.0, max_hold=0.0, **fields)  # fmt: skip

    used = {
        3: dict(acquisitions=120 + 4 * step, contended=14 + 2 * step, total_wait=WAITS[step], max_wait=3.2,
                total_hold=60.0, max_hold=10.0, holders=(Holder(LEAVES["shop"].cert_id, PID, T - 6, 3, True),)),
        17: dict(acquisitions=40 + step, contended=0, total_wait=0.002, max_wait=0.001, total_hold=4.0, max_hold=0.3),
        42: dict(acquisitions=8 + step, contended=1, total_wait=0.2 + 0.1 * step, max_wait=0.2,
                 total_hold=1.0, max_hold=0.2),
    }  # fmt: skip
    return tuple(
        replace(s(n), **{k: v for k, v in used[n].items()}) if n in used else s(n) for n in range(64)
    )


def snapshot(step: int = 0, **changes) -> Snapshot:
    leaves = [leaf for name, leaf in LEAVES.items() if CERTS[name][2]]
    items = build_items(T, leaves=leaves, entries=entries(), states=states())
    base = Snapshot(
        taken_at=T, cache_uri="memcache://127.0.0.1:11211", items=items,
        workers=(Heartbeat(f"web1:{PID}/1", PID, T - 86400, T - 4, 7),), stripes=stripes(step),
        lock_dir="/var/lib/staplectl/locks", data_at=T, state_path="/var/lib/staplectl/worker.db",
        state_exists=True,
    )  # fmt: skip
    return replace(base, **changes)
