"""The material the fuzz targets start from: one PKI, its responses, its leaf."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from hypothesis import strategies as st
from cryptography.x509 import ocsp

from engine.ocsp.certs import Leaf, load_leaf
from engine.ocsp.request import OCSPQuery, build_request
from tests.fuzz import profiles  # noqa: F401  (loads the Hypothesis profile)
from tests.fuzz.responses import rsa_delegate, signed_response, unsuccessful
from tests.fuzz.strategies import responses
from tests.pki import PKI


@dataclass(frozen=True, repr=False)  # a failing example prints its arguments: not all of these
class Seeds:
    pki: PKI
    leaf: Leaf
    #: valid responses about the leaf, each down another path of the validator
    responses_der: list[bytes]
    #: what a fetch asked: SHA-1 and SHA-256 CertIDs, one with a nonce
    queries: list[OCSPQuery]
    #: DER certificates: the leaf, its issuer, a delegate, the RSA delegate
    certificates: list[bytes]
    #: responses with what signs them again after a mutation
    signed: list[tuple[bytes, Callable[[bytes], bytes]]]
    #: signs as the leaf's issuer (the intermediate) does
    sign_as_issuer: Callable[[bytes], bytes]

    def any_response(self) -> st.SearchStrategy[bytes]:
        return responses(self.responses_der, self.signed)

    def __repr__(self) -> str:
        return "seeds"


@pytest.fixture(scope="session")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    pki = PKI(tmp_path_factory.mktemp("fuzz-pki"), "http://127.0.0.1:9/ocsp")
    rsa = rsa_delegate(pki)
    good = pki.good
    responses = [
        signed_response(pki, good),
        signed_response(pki, good, by_name=True),
        signed_response(pki, good, signer=pki.delegate),
        signed_response(pki, good, signer=rsa),
        signed_response(pki, good, cert_status="revoked"),
        signed_response(pki, good, cert_status="unknown", next_update=None),
        signed_response(pki, good, algorithm=hashes.SHA256(), nonce=b"n" * 16),
        signed_response(pki, pki.other),
        unsuccessful(),
        unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED),
    ]
    leaf = load_leaf(good.chain_path)
    queries = [build_request(leaf), build_request(leaf, hash_name="sha256", nonce=True)]
    certificates = [p.read_bytes() for p in (good.der_path, pki.intermediate.der_path, pki.delegate.der_path, rsa.der_path)]
    by_issuer = lambda tbs: pki.intermediate.key.sign(tbs, ec.ECDSA(hashes.SHA256()))  # noqa: E731
    by_rsa = lambda tbs: rsa.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())  # noqa: E731
    signed = [(responses[0], by_issuer), (responses[4], by_issuer), (responses[6], by_issuer), (responses[3], by_rsa)]
    return Seeds(pki, leaf, responses, queries, certificates, signed, by_issuer)
