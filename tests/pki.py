"""A throwaway PKI for tests: root, intermediate, OCSP delegates and leaves.

Everything is generated with cryptography at construction (EC P-256 keys,
a few milliseconds each) and written as PEM/DER files into one directory, so
the same material serves the engine (Python objects) and `openssl` (files).

    pki = PKI(tmp_path, "http://127.0.0.1:8080/")
    pki.good.cert, pki.good.chain_path, pki.good.key_path
    leaf = pki.leaf("api", must_staple=True)        # leaf.name == "api"
    assert leaf.issuer is pki.intermediate

Files in the directory: `<name>.pem` (certificate), `<name>-chain.pem`
(certificate then its issuers up to, not including, the root),
`<name>.der`, `<name>.key` (mode 0o600), for every certificate below, and
`ca-bundle.pem` (intermediate then root).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names the PKI writes for itself; a leaf of the same name would overwrite them.
_RESERVED = frozenset(
    {"root", "intermediate", "delegate", "delegate_no_eku", "delegate_expired",
     "delegate_other_ca", "rogue", "ca-bundle", "index"}
)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(eq=False)
class Issued:
    """One certificate, its key and the files written for it.

    `issuer` is None only for self-signed certificates (root, rogue).
    """

    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    cert_path: Path
    chain_path: Path
    der_path: Path
    key_path: Path
    issuer: Issued | None = field(default=None, repr=False)

    @property
    def serial(self) -> int:
        return self.cert.serial_number


def _now() -> dt.datetime:
    # Whole seconds: certificates and OCSP times are encoded to the second,
    # so tests comparing datetimes never trip over microseconds.
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _new_key(key_type: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa1024":  # weak, as some CAs' responders still were
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    raise ValueError(f"key_type must be 'ec', 'rsa' or 'rsa1024', not {key_type!r}")


def _write_private(path: Path, data: bytes) -> None:
    # Create with 0o600 from the start (no window where the key is readable),
    # and fix the mode too when the file already existed.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


class PKI:
    """Root -> intermediate -> leaves, plus every kind of OCSP signer a test needs.

    Attributes (all `Issued`):
      root, intermediate       the chain; leaves are issued by the intermediate
      delegate                 OCSPSigning EKU + id-pkix-ocsp-nocheck, by the intermediate
      delegate_no_eku          by the intermediate, without the OCSPSigning EKU
      delegate_expired         by the intermediate, with the EKU, notAfter in the past
      delegate_other_ca        with the EKU, but issued by the root (not the leaf's issuer)
      rogue                    self-signed, unrelated to the chain
      good, other              ordinary leaves
      must_staple              leaf with the TLS Feature status_request extension
      expired                  leaf whose notAfter is in the past
      no_aia                   leaf without an AuthorityInformationAccess extension
      rsa                      leaf with an RSA-2048 key (the intermediate stays EC)
    `leaves` maps every leaf name (pre-made and later `leaf()` calls) to its
    `Issued`, in creation order; `by_serial(serial)` finds one by serial.
    `bundle_path` is ca-bundle.pem (intermediate then root).
    """

    def __init__(self, directory: Path, ocsp_url: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ocsp_url = ocsp_url
        self.leaves: dict[str, Issued] = {}
        now = _now()

        self.root = self._issue(
            "root", issuer=None, ca=True, path_length=None,
            not_before=now - dt.timedelta(days=30), not_after=now + dt.timedelta(days=3650),
        )
        self.intermediate = self._issue(
            "intermediate", issuer=self.root, ca=True, path_length=0,
            not_before=now - dt.timedelta(days=30), not_after=now + dt.timedelta(days=1825),
        )
        self.bundle_path = self.directory / "ca-bundle.pem"
        self.bundle_path.write_bytes(_pem(self.intermediate.cert) + _pem(self.root.cert))

        ocsp_eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING])
        self.delegate = self._issue("delegate", issuer=self.intermediate, eku=ocsp_eku, nocheck=True)
        self.delegate_no_eku = self._issue("delegate_no_eku", issuer=self.intermediate)
        self.delegate_expired = self._issue(
            "delegate_expired", issuer=self.intermediate, eku=ocsp_eku, nocheck=True,
            not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1),
        )
        self.delegate_other_ca = self._issue("delegate_other_ca", issuer=self.root, eku=ocsp_eku, nocheck=True)
        # An RSA-1024 delegate, for responses signed weakly (with sign_hash="sha1" too)
        self.delegate_weak = self._issue("delegate_weak", issuer=self.intermediate, eku=ocsp_eku, nocheck=True,
                                         key_type="rsa1024")  # fmt: skip
        # The rogue carries the EKU so that the only thing wrong with it is who it is.
        self.rogue = self._issue("rogue", issuer=None, eku=ocsp_eku)

        self.good = self.leaf("good")
        self.other = self.leaf("other")
        self.must_staple = self.leaf("must_staple", must_staple=True)
        self.expired = self.leaf(
            "expired", not_before=now - dt.timedelta(days=100), not_after=now - dt.timedelta(days=1)
        )
        self.no_aia = self.leaf("no_aia", aia=False)
        self.rsa = self.leaf("rsa", key_type="rsa")

    def leaf(
        self,
        name: str,
        *,
        must_staple: bool = False,
        aia: bool = True,
        ocsp_url: str | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        key_type: str = "ec",
    ) -> Issued:
        """Issue a TLS server leaf from the intermediate: CN=name, SAN DNS name.test.

        The AIA OCSP URL is `ocsp_url` if given, else the PKI's; `aia=False`
        leaves the extension out. Default validity: an hour ago to 90 days on.
        """
        if name in self.leaves or name in _RESERVED or not _SAFE_NAME.match(name):
            raise ValueError(f"leaf name {name!r} is taken, reserved or not a safe file name")
        now = _now()
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.SubjectAlternativeName([x509.DNSName(f"{name}.test")]), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ]
        if aia:
            url = ocsp_url if ocsp_url is not None else self.ocsp_url
            extensions.append((
                x509.AuthorityInformationAccess(
                    [x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP,
                                            x509.UniformResourceIdentifier(url))]
                ),
                False,
            ))
        if must_staple:
            extensions.append((x509.TLSFeature([x509.TLSFeatureType.status_request]), False))
        issued = self._issue(
            name, issuer=self.intermediate, key_type=key_type, extra=extensions,
            not_before=not_before or now - dt.timedelta(hours=1),
            not_after=not_after or now + dt.timedelta(days=90),
        )
        self.leaves[name] = issued
        return issued

    def by_serial(self, serial: int) -> Issued | None:
        return next((i for i in self.leaves.values() if i.cert.serial_number == serial), None)

    def _issue(
        self,
        name: str,
        *,
        issuer: Issued | None,
        ca: bool = False,
        path_length: int | None = None,
        eku: x509.ExtendedKeyUsage | None = None,
        nocheck: bool = False,
        key_type: str = "ec",
        extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Issued:
        now = _now()
        key = _new_key(key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        if issuer is None:
            issuer_name, signing_key, issuer_public = subject, key, key.public_key()
        else:
            issuer_name, signing_key = issuer.cert.subject, issuer.key
            issuer_public = issuer.key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(days=1))
            .not_valid_after(not_after or now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
            .add_extension(
                x509.KeyUsage(
                    # CAs sign OCSP responses directly too (signer="issuer"),
                    # hence digitalSignature alongside keyCertSign.
                    digital_signature=True, content_commitment=False,
                    key_encipherment=key_type == "rsa" and not ca, data_encipherment=False,
                    key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            # Key identifiers let `openssl verify` and `openssl ocsp` build chains
            # without guessing by name.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
        )
        if eku is not None:
            builder = builder.add_extension(eku, critical=False)
        if nocheck:
            builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
        for extension, critical in extra:
            builder = builder.add_extension(extension, critical=critical)
        cert = builder.sign(signing_key, hashes.SHA256())

        issued = Issued(
            name=name,
            cert=cert,
            key=key,
            cert_path=self.directory / f"{name}.pem",
            chain_path=self.directory / f"{name}-chain.pem",
            der_path=self.directory / f"{name}.der",
            key_path=self.directory / f"{name}.key",
            issuer=issuer,
        )
        issued.cert_path.write_bytes(_pem(cert))
        issued.der_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        # What a server would send: the certificate and its issuers, never the root.
        chain = _pem(cert)
        up = issuer
        while up is not None and up.issuer is not None:
            chain += _pem(up.cert)
            up = up.issuer
        issued.chain_path.write_bytes(chain)
        _write_private(
            issued.key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return issued


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
