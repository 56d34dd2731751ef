"""Certificates for the benches, many and cheaply: N leaves of a test PKI's
intermediate, each in its own chain file, as N sites' certificates would be
(bench/warm.py, bench/outage.py).

Imported as bench.leaves, once a bench has put the repository on sys.path.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.pki import PKI, Issued


def issue_leaves(pki: PKI, count: int, directory: Path) -> list[Issued]:
    """N leaves of pki's intermediate, each in its own chain file (leaf + intermediate).

    One key for all of them: key generation is not what is measured, and
    OCSP never looks at the leaf's key. Like every publicly trusted
    certificate (CA/Browser Forum Baseline Requirements 7.1.2.3), they
    carry an authorityKeyIdentifier, which is how staplectl finds the
    issuer in the chain.
    """
    directory.mkdir(parents=True)
    bare = directory.parent / "bare"  # the leaf alone, for openssl ocsp -cert
    bare.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = directory.parent / "leaves.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    intermediate_pem = pki.intermediate.cert.public_bytes(serialization.Encoding.PEM)
    aia = x509.AuthorityInformationAccess(
        [x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(pki.ocsp_url))]
    )
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(pki.intermediate.cert.public_key())
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    leaves = []
    for n in range(count):
        name = f"site{n:05d}"
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.test")]))
            .issuer_name(pki.intermediate.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{name}.test")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(aia, critical=False)
            .add_extension(aki, critical=False)
            .sign(pki.intermediate.key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        cert_path, chain_path = bare / f"{name}.pem", directory / f"{name}.pem"
        cert_path.write_bytes(pem)
        chain_path.write_bytes(pem + intermediate_pem)
        leaves.append(Issued(name, cert, key, cert_path, chain_path, cert_path, key_path, pki.intermediate))
    return leaves
