"""Fuzzing certificate files: whatever a file holds, a Leaf whose every
property the engine reads can be read, or a StapleError naming the file.

Certificate files come from the operator, but from a directory of
100,000 of them (warm's loader) one damaged file must cost its own row,
not the run; and a certificate is read lazily, its names and extensions
only when first asked for, long after load_leaf returned.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import StapleError
from engine.ocsp.certs import load_leaf, read_certificates
from engine.ocsp.request import build_request
from tests.fuzz.profiles import budget
from tests.fuzz.strategies import CERTIFICATE, byte_mutated, mutated, resigned


def pem(der: bytes) -> bytes:
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"


@st.composite
def certificate_files(draw, seeds) -> tuple[bytes, bytes | None]:
    """(the leaf's file, an --issuer file or None)."""
    leaf, issuer = seeds.certificates[0], seeds.certificates[1]
    shape = draw(st.sampled_from(["resigned"] * 4 + ["chain", "issuer", "der", "text", "random"]))
    if shape == "resigned":  # signed by the issuer again: find_issuer takes it, the Leaf gets made
        changed = draw(resigned(leaf, seeds.sign_as_issuer, CERTIFICATE))
        return draw(st.sampled_from([(pem(changed) + pem(issuer), None), (changed, pem(issuer))]))
    if shape == "chain":
        return pem(draw(mutated([leaf]))) + pem(issuer), None
    if shape == "issuer":
        return pem(leaf), pem(draw(mutated([issuer])))
    if shape == "der":
        return draw(mutated([leaf])), pem(issuer)
    if shape == "text":
        text = pem(leaf) + pem(issuer)
        for _ in range(draw(st.integers(1, 4))):
            text = draw(byte_mutated(text))
        return text, None
    return draw(st.binary(max_size=200).map(lambda b: draw(st.sampled_from([b"", b"-----BEGIN CERTIFICATE-----\n"])) + b)), None


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-certs")


@budget(1500)
@given(data=st.data())
def test_load_leaf_and_read_it(seeds, files, data):
    leaf_bytes, issuer_bytes = data.draw(certificate_files(seeds))
    path, issuer_path = files / "leaf.pem", files / "issuer.pem"
    path.write_bytes(leaf_bytes)
    if issuer_bytes is not None:
        issuer_path.write_bytes(issuer_bytes)
    try:
        read_certificates(path)
        leaf = load_leaf(path, issuer_path=issuer_path if issuer_bytes is not None else None)
        # everything warm, fetch, check and inspect read of a certificate
        leaf.der, leaf.cert_id, leaf.subject, leaf.serial_hex, leaf.not_after, leaf.name  # noqa: B018
        leaf.must_staple, leaf.aia_urls  # noqa: B018
        build_request(leaf), build_request(leaf, hash_name="sha256", nonce=True)
        leaf.responder_url()
    except StapleError as error:
        assert str(error)
