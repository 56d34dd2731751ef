"""What a cache entry is, in an operator's terms: one row of ``inspect``.

Pure and UI-free (the dashboard reuses it): an Entry, the certificate if we
know it, and the prefetch worker's state if any, become an Inspection with
the response's times, a verdict (``valid``) and flags that say what is odd:

- ``error-entry``: flag byte 0x00, httpd cached a responder error;
- ``try-later``: a non-successful responseStatus stored as valid (0x01),
  httpd 2.4's fake tryLater, stapled for an hour;
- ``metadata-only``: staplectl's metadata without a staple (fetches failed);
- ``junk``: something not ours under the entry's keys (a value of another
  type or shape, metadata outside its schema), said in ``junk``; shown
  for this entry alone;
- ``invalid: <reason>``: the response fails a check (signature, CertID...);
- ``unverified``: the certificate is unknown, so signature and CertID were
  not checked (an entry httpd wrote for a certificate we were not told of);
- ``not-yet-valid``, ``expired``: thisUpdate/nextUpdate against the clock;
- ``due``: still valid, but past the point where it should be renewed.

``valid`` means every check we could make passed and the response may be
served now; with ``unverified`` that is decoding and times only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509 import ocsp

from engine.ocsp.certs import Leaf, cert_sha1, load_leaf, read_certificates, serial_text
from engine.clock import iso
from engine.errors import IssuerNotFoundError, MalformedResponseError, StapleError, ValidationError
from engine.refresh.freshness import DEFAULT_POLICY, FreshnessPolicy, expires_at, is_usable, renewal_point_for
from engine.store.providers.base import Entry
from engine.store.providers.layout import FLAG_ERROR
from engine.ocsp.staple import RESPONSE_STATUS_NAMES, Staple, parse_response, reading
from engine.refresh.worker_state import CertState
from engine.ocsp.validate import ValidationOptions, validate


@dataclass(frozen=True)
class Inspection:
    key: str
    cert_sha1: str
    #: the certificate file, when we know which one it is
    cert: str | None
    subject: str | None
    serial: str | None
    #: good | revoked | unknown; for a non-successful response its
    #: responseStatus (try_later, internal_error...); None without a response
    status: str | None
    response_status: str | None
    this_update: float | None
    next_update: float | None
    produced_at: float | None
    #: seconds until it may no longer be served (negative: since when)
    time_left: float | None
    #: seconds since thisUpdate: how old the information is
    age: float | None
    valid: bool
    flags: tuple[str, ...]
    #: the failed check, word for word, when ``invalid``
    problem: str | None = None
    #: the certificate file we found but could not use (moved, no issuer)
    cert_note: str | None = None
    entry_flag: int = 1
    #: what was junk under the entry's keys (see Entry.problem)
    junk: str | None = None
    #: when the store drops the entry, where it knows
    expires_at: float | None = None
    #: weak algorithms of a staple that validated (engine.ocsp.weak); flag "weak"
    weak: tuple[str, ...] = ()
    revocation_time: float | None = None
    revocation_reason: str | None = None
    meta: dict[str, Any] | None = field(default=None, compare=False)
    state: CertState | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain, stable JSON: ISO times, whole seconds, lists."""
        meta = self.meta or {}
        state = self.state
        return {
            "cache_key": self.key,
            "cert_sha1": self.cert_sha1,
            "cert": self.cert,
            "subject": self.subject,
            "serial": self.serial,
            "status": self.status,
            "response_status": self.response_status,
            # the staple's fields, named and ordered as every --json has them
            "revocation_time": iso(self.revocation_time),
            "revocation_reason": self.revocation_reason,
            "this_update": iso(self.this_update),
            "next_update": iso(self.next_update),
            "produced_at": iso(self.produced_at),
            "time_left_seconds": None if self.time_left is None else int(self.time_left),
            "weak": list(self.weak),
            "age_seconds": None if self.age is None else int(self.age),
            "valid": self.valid,
            "flags": list(self.flags),
            "problem": self.problem,
            "cert_note": self.cert_note,
            "entry_flag": self.entry_flag,
            "junk": self.junk,
            "expires_at": iso(self.expires_at),
            "fetched_at": meta.get("fetched_at"),
            "responder": meta.get("responder") or (state.responder if state else None),
            "failures": state.failures if state else None,
            "last_error": state.last_error if state else None,
            "next_attempt": iso(state.next_attempt) if state else None,
        }


@dataclass(frozen=True)
class Found:
    """What we know of the certificate behind a cache id."""

    leaf: Leaf | None = None
    #: the certificate alone (its file holds no issuer): decoded, not verified with
    cert: x509.Certificate | None = None
    path: str | None = None
    note: str | None = None


class KnownCertificates:
    """Certificates by cache id: the configured ones, then files named in metadata.

    A file named in metadata is checked against the cache id: letsencrypt's
    ``live/*/fullchain.pem`` holds a new certificate after every renewal,
    and the old staple must not be shown as the new certificate's.
    """

    def __init__(self, leaves: Iterable[Leaf] = ()) -> None:
        self._by_id = {leaf.cert_id: leaf for leaf in leaves}
        self._by_path: dict[str, Found] = {}

    def add(self, leaf: Leaf) -> None:
        self._by_id[leaf.cert_id] = leaf

    def find(self, cert_id: str, hints: Iterable[str | None] = (), *, unopened: str | None = None) -> Found:
        """The certificate: a known one, else one of the files ``hints`` name.

        ``unopened`` is a file a shared cache's metadata names: said in the
        note, never opened (docs/security.md).
        """
        leaf = self._by_id.get(cert_id)
        if leaf is not None:
            return Found(leaf=leaf, path=str(leaf.path) if leaf.path else None)
        notes = [f"the cache's metadata names {unopened}, not opened: the cache is shared"] if unopened else []
        for hint in dict.fromkeys(h for h in hints if h):
            found = self._by_path.get(hint)
            if found is None:
                found = self._by_path[hint] = _load(hint)
            if found.leaf is not None and found.leaf.cert_id == cert_id:
                return found
            if found.cert is not None and cert_sha1(found.cert) == cert_id:
                return found
            notes.append(f"{hint}: now holds another certificate" if found.cert or found.leaf else found.note)
        return Found(note="; ".join(n for n in notes if n) or None)


def _load(path: str) -> Found:
    try:
        leaf = load_leaf(Path(path))
        return Found(leaf=leaf, path=path)
    except IssuerNotFoundError:
        cert = read_certificates(Path(path))[0]
        return Found(cert=cert, path=path, note=f"{path}: issuer not found beside the certificate, so not verified")
    except StapleError as error:
        return Found(note=str(error))


def inspect_entry(
    entry: Entry,
    now: float,
    *,
    found: Found = Found(),
    state: CertState | None = None,
    policy: FreshnessPolicy = DEFAULT_POLICY,
    options: ValidationOptions = ValidationOptions(),
) -> Inspection:
    """One entry, checked as far as what we know allows."""
    meta = entry.meta or {}
    leaf = found.leaf
    cert = leaf.cert if leaf else found.cert
    fields: dict[str, Any] = {
        "key": entry.key,
        "cert_sha1": entry.cert_id,
        "cert": found.path,
        "subject": cert.subject.rfc4514_string() if cert else meta.get("subject"),
        "serial": serial_text(cert.serial_number) if cert else meta.get("serial"),
        "cert_note": found.note,
        "entry_flag": entry.flag,
        "junk": entry.problem,
        "expires_at": entry.expires_at,
        "meta": entry.meta,
        "state": state,
    }
    flags: list[str] = ["junk"] if entry.problem else []
    if entry.flag == FLAG_ERROR:
        flags.append("error-entry")
    if not entry.der:
        return _row(fields, flags + (["metadata-only"] if entry.meta is not None else []), valid=False)
    try:
        response = parse_response(entry.der, "cached staple")
    except MalformedResponseError as error:
        return _row(fields, flags + ["invalid: malformed"], valid=False, problem=str(error))
    status = RESPONSE_STATUS_NAMES.get(response.response_status, str(response.response_status))
    fields["response_status"] = status
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        if entry.flag != FLAG_ERROR:
            flags.append("try-later")
        return _row(fields, flags, valid=False, status=status, problem=f"responseStatus is {status}, not successful")
    problem = None
    staple = None
    if leaf is not None:
        try:
            staple = validate(entry.der, leaf, now, check_time=False, options=options, source="cached staple")
        except ValidationError as error:
            flags.append(f"invalid: {error.reason}")
            problem = str(error)
    else:
        flags.append("unverified")
    if staple is None:
        try:
            with reading("cached staple"):  # unverified: its fields may not even parse
                staple = _first_single(entry.der, response, cert)
        except MalformedResponseError as error:
            malformed = [] if "invalid: malformed" in flags else ["invalid: malformed"]
            return _row(fields, flags + malformed, valid=False, problem=problem or str(error))
        if staple is None:
            return _row(fields, flags + ["invalid: malformed"], valid=False, problem="no single responses")
    fields.update(
        status=staple.status,
        revocation_time=staple.revocation_time,
        revocation_reason=staple.revocation_reason,
        serial=fields["serial"] or serial_text(staple.serial_number),
        this_update=staple.this_update,
        next_update=staple.next_update,
        produced_at=staple.produced_at,
        time_left=expires_at(staple.this_update, staple.next_update, policy) - now,
        age=now - staple.this_update,
    )
    if staple.this_update > now + policy.skew:
        flags.append("not-yet-valid")
    elif not is_usable(staple.this_update, staple.next_update, now, policy):
        flags.append("expired")
    valid = not any(f in ("error-entry", "not-yet-valid", "expired") or f.startswith("invalid") for f in flags)
    if valid and now >= renewal_point_for(staple.status, staple.this_update, staple.next_update, policy):
        flags.append("due")
    if staple.weak:
        flags.append("weak")
    return _row(fields, flags, valid=valid, problem=problem, weak=staple.weak)


def _first_single(der: bytes, response: ocsp.OCSPResponse, cert: x509.Certificate | None) -> Staple | None:
    """The single response to show when none was verified: the certificate's serial's, else the first."""
    singles = list(response.responses)
    if not singles:
        return None
    chosen = next((s for s in singles if cert is not None and s.serial_number == cert.serial_number), singles[0])
    return Staple.from_single(der, response, chosen)


def _row(fields: dict[str, Any], flags: list[str], *, valid: bool, **more: Any) -> Inspection:
    values = {
        "cert": None, "subject": None, "serial": None, "status": None, "response_status": None,
        "this_update": None, "next_update": None, "produced_at": None, "time_left": None, "age": None,
    }  # fmt: skip
    values.update(fields)
    values.update(more)
    return Inspection(valid=valid, flags=tuple(flags), **values)
