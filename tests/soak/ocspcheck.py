"""Is this DER a valid staple for that leaf? Decided without the engine.

The soak's invariants must not trust the code they test, so nothing from
engine/ or staplectl/ is used here: cryptography parses the response and
verifies its signature. The rules are the README's, for what the soak
responders send (signed by the issuer itself):

- responseStatus successful, and a SingleResponse whose serial is the
  leaf's and whose issuerKeyHash and issuerNameHash are the issuer's (as
  cryptography's own request builder computes them);
- the signature verifies with the issuer's public key;
- times, judged at the moment asked: thisUpdate <= now + 300 s and
  now < nextUpdate.

The first part does not change with time, so it is remembered per DER
(`Judge`): the monitor sees the same staple hundreds of times.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

SKEW = 300.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a DER is, apart from the clock: genuine or why not, and its times."""

    genuine: bool
    #: why not genuine: malformed, response_status, certid, signature, status
    problem: str | None
    this_update: float | None = None
    next_update: float | None = None
    status: str | None = None

    def valid_at(self, now: float) -> bool:
        return (
            self.genuine
            and self.this_update is not None
            and self.next_update is not None
            and self.this_update <= now + SKEW
            and now < self.next_update
        )

    def why_not_at(self, now: float) -> str | None:
        if not self.genuine:
            return self.problem
        if self.this_update is not None and self.this_update > now + SKEW:
            return "not_yet_valid"
        if self.next_update is None or now >= self.next_update:
            return "expired"
        return None


class IssuerIds:
    """The CertID hashes of one issuer, per hash algorithm, as cryptography builds them."""

    def __init__(self, issuer: x509.Certificate, any_leaf: x509.Certificate) -> None:
        self.issuer = issuer
        self._by_hash: dict[str, tuple[bytes, bytes]] = {}
        self._leaf = any_leaf

    def hashes_for(self, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
        found = self._by_hash.get(algorithm.name)
        if found is None:
            request = ocsp.OCSPRequestBuilder().add_certificate(self._leaf, self.issuer, algorithm).build()
            found = (request.issuer_name_hash, request.issuer_key_hash)
            self._by_hash[algorithm.name] = found
        return found


def judge(der: bytes, leaf: x509.Certificate, issuer: IssuerIds) -> Verdict:
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError:
        return Verdict(False, "malformed")
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return Verdict(False, f"response_status:{response.response_status.name.lower()}")
    single = None
    try:
        for candidate in response.responses:
            name_hash, key_hash = issuer.hashes_for(candidate.hash_algorithm)
            if (
                candidate.serial_number == leaf.serial_number
                and candidate.issuer_key_hash == key_hash
                and candidate.issuer_name_hash == name_hash
            ):
                single = candidate
                break
    except (ValueError, NotImplementedError):
        return Verdict(False, "malformed")
    if single is None:
        return Verdict(False, "certid")
    key = issuer.issuer.public_key()
    try:
        algorithm = response.signature_hash_algorithm
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm)
        else:
            return Verdict(False, "signature:key_type")
    except (InvalidSignature, ValueError, TypeError):
        return Verdict(False, "signature")
    this_update = single.this_update_utc.timestamp()
    next_update = single.next_update_utc.timestamp() if single.next_update_utc else None
    status = single.certificate_status.name.lower()
    if status != "good":
        # the soak responders only ever say good: anything else stored is wrong
        return Verdict(False, f"status:{status}", this_update, next_update, status)
    return Verdict(True, None, this_update, next_update, status)


class Judge:
    """judge() remembered per (certificate id, DER digest)."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, bytes], Verdict] = {}

    def __call__(self, cert_id: str, der: bytes, leaf: x509.Certificate, issuer: IssuerIds) -> Verdict:
        key = (cert_id, hashlib.sha256(der).digest())
        verdict = self._memo.get(key)
        if verdict is None:
            verdict = judge(der, leaf, issuer)
            self._memo[key] = verdict
        return verdict
