"""A staple this host validated before is not verified again at a restart
(engine.refresh.reader, the worker state's ``validated`` table): only the
very bytes validated, only from our own store, never from a shared cache."""

from __future__ import annotations

import hashlib

import pytest

import engine.ocsp.validate as validate_module
from engine.errors import SignatureError
from engine.ocsp.validate import validate
from engine.refresh.reader import StapleReader
from engine.store.cache import Cache
from engine.store.providers import open_provider
from tests import prefetch_rig
from tests.prefetch_rig import new_leaf

rig = prefetch_rig.rig


def forged(der: bytes) -> bytes:
    """The staple with its signature broken: the issuer signed it, so the
    signature BIT STRING is the last thing in it."""
    return der[:-1] + bytes([der[-1] ^ 0x01])


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@pytest.fixture
def verifications(monkeypatch):
    """How many response signatures were verified (the real check, counted)."""
    calls = []
    real = validate_module._verify_signature

    def counted(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(validate_module, "_verify_signature", counted)
    return calls


def test_verified_before_skips_the_signature_and_nothing_else(rig, pki):
    r = rig()
    leaf = new_leaf(pki)
    r.stapler.refresh(leaf)
    bad = forged(r.stapler.cached(leaf).der)
    now = r.clock.now()
    with pytest.raises(SignatureError):
        validate(bad, leaf, now)
    assert validate(bad, leaf, now, verified_before=True).status == "good"
    other = new_leaf(pki)  # another certificate: the CertID is still checked
    with pytest.raises(Exception, match="different certificate"):
        validate(bad, other, now, verified_before=True)


def test_the_reader_trusts_only_the_digest_it_was_given_and_only_its_own_store(rig, pki, memcached):
    r = rig()
    leaf = new_leaf(pki)
    r.stapler.refresh(leaf)
    bad = forged(r.stapler.cached(leaf).der)
    r.stapler.cache.set(leaf.cert_id, bad, 3600)  # what a restart finds, say
    local = StapleReader(r.stapler.cache, clock=r.clock)
    assert local.cached_many([leaf])[leaf.cert_id] is None
    assert local.cached_many([leaf], validated={leaf.cert_id: sha256(bad[:-1])})[leaf.cert_id] is None
    assert StapleReader(r.stapler.cache, clock=r.clock).cached_many(
        [leaf], validated={leaf.cert_id: sha256(bad)})[leaf.cert_id].der == bad  # fmt: skip
    with Cache(open_provider(f"memcache://127.0.0.1:{memcached.port}")) as shared:
        shared.set(leaf.cert_id, bad, 3600)
        reader = StapleReader(shared, clock=r.clock)
        assert reader.cached_many([leaf], validated={leaf.cert_id: sha256(bad)})[leaf.cert_id] is None


def test_a_restarted_worker_verifies_only_what_it_did_not_validate_before(rig, pki, tmp_path, verifications):
    state_path = tmp_path / "state" / "restart.db"
    first = rig(state_path=state_path)
    leaves = [new_leaf(pki) for _ in range(3)]
    first.worker.load(leaves)
    first.worker.run_due()  # fetched and validated: remembered
    remembered = first.state.validated()
    assert remembered == {leaf.cert_id: sha256(first.stapler.cached(leaf).der) for leaf in leaves}
    # one staple changes behind the worker's back (`warm --force`, say)
    assert first.stapler.refresh(leaves[0], force=True).action == "updated"
    first.close()
    verifications.clear()
    again = rig(state_path=state_path)  # the same store and state: a restart
    again.worker.load(leaves)
    assert verifications == ["cached staple"]  # one signature: the changed staple's
    assert {e.action for e in again.events if e.action != "added"} == {"fresh"}
    assert again.state.validated()[leaves[0].cert_id] == sha256(again.stapler.cached(leaves[0]).der)
    assert again.worker.run_due() == []


def broken_signature(cert):
    """The certificate with the last byte of its signature flipped: same tbs, same names."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = cert.public_bytes(Encoding.DER)
    return x509.load_der_x509_certificate(data[:-1] + bytes([data[-1] ^ 0x01]))


def test_an_issuer_verified_before_is_taken_without_the_signature_and_only_that_one(pki):
    from engine.ocsp.issuers import find_issuer, fingerprint

    issuer = pki.intermediate.cert
    leaf = broken_signature(pki.good.cert)
    assert find_issuer(leaf, [issuer]) is None  # the signature is checked...
    assert find_issuer(leaf, [issuer], fingerprint(issuer)) is issuer  # ...unless verified before
    # an impostor (the issuer's name and key identifier, a key of its own)
    # is not the issuer this host verified: its signature check refuses it
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.test_certs import _cert, _key_id

    key = ec.generate_private_key(ec.SECP256R1())
    impostor = _cert("intermediate", pki.root.cert.subject, key, key, ski=_key_id(issuer), ca=True)
    assert find_issuer(pki.good.cert, [impostor, issuer], fingerprint(issuer)) is issuer
    assert find_issuer(leaf, [impostor], fingerprint(issuer)) is None
    assert find_issuer(pki.good.cert, [impostor], fingerprint(issuer)) is None
    # and a fingerprint is taken only for a certificate named as the issuer
    assert find_issuer(leaf, [pki.root.cert], fingerprint(pki.root.cert)) is None


def test_the_worker_keeps_the_issuer_each_leaf_was_verified_with(rig, pki):
    from cryptography.hazmat.primitives.serialization import Encoding

    from engine.ocsp.certfiles import CertSpec, load_all

    r = rig()
    leaves = [new_leaf(pki) for _ in range(2)]
    r.worker.load(leaves)
    issued = r.state.issued()
    assert issued == {leaf.cert_id: sha256(leaf.issuer.public_bytes(Encoding.DER)) for leaf in leaves}
    again = load_all([CertSpec(str(leaf.path)) for leaf in leaves], verified=issued).leaves
    assert [leaf.cert_id for leaf in again] == [leaf.cert_id for leaf in leaves]


def test_load_all_takes_the_issuers_verified_before(pki, tmp_path):
    import hashlib as _hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    from engine.errors import IssuerNotFoundError
    from engine.ocsp.certfiles import CertSpec, load_all
    from engine.ocsp.issuers import fingerprint

    leaf = broken_signature(pki.good.cert)
    chain = tmp_path / "broken-chain.pem"
    chain.write_bytes(leaf.public_bytes(Encoding.PEM) + pki.intermediate.cert.public_bytes(Encoding.PEM))
    cold = load_all([CertSpec(str(chain))])
    assert cold.leaves == [] and isinstance(cold.problems[0][1], IssuerNotFoundError)
    cert_id = _hashlib.sha1(leaf.public_bytes(Encoding.DER)).hexdigest()
    warm = load_all([CertSpec(str(chain))], verified={cert_id: fingerprint(pki.intermediate.cert)})
    assert [found.cert_id for found in warm.leaves] == [cert_id] and warm.problems == []


def test_a_restart_reads_what_the_previous_run_left_one_batch_at_a_time(
    rig, pki, tmp_path, verifications, monkeypatch
):
    """At 100,000 certificates the previous run's rows, read at once, were
    65 MiB held through the load: each batch reads its own cert_id range."""
    import engine.refresh.prefetch as prefetch
    from dataclasses import replace

    monkeypatch.setattr(prefetch, "LOAD_BATCH", 2)
    state_path = tmp_path / "state" / "batches.db"
    first = rig(state_path=state_path)
    leaves = sorted((new_leaf(pki) for _ in range(5)), key=lambda leaf: leaf.cert_id)
    first.worker.load(leaves)
    first.worker.run_due()
    # what a previous run also left: a failure count (its staple since gone
    # from the store, so it is due now and keeps it), and a certificate since removed
    first.state.put(replace(first.state.get(leaves[3].cert_id), failures=4, last_error="timed out"))
    first.stapler.cache.provider.delete(leaves[3].cert_id)
    gone = new_leaf(pki)
    first.state.put(prefetch.CertState(gone.cert_id, "gone.pem"))
    first.close()
    verifications.clear()
    again = rig(state_path=state_path)
    ranges = []
    for name in ("all", "validated", "issued"):
        real = getattr(again.state, name)

        def spy(between=None, real=real, name=name):
            ranges.append((name, between))
            return real(between)

        monkeypatch.setattr(again.state, name, spy)
    assert again.worker.load(leaves) == (5, 0)
    assert verifications == []  # every staple's digest was found in its batch's range
    assert (again.state.get(leaves[3].cert_id).failures, again.due(leaves[3])) == (4, again.clock.now())
    assert again.state.get(gone.cert_id) is None
    batches = [(leaves[i].cert_id, leaves[min(i + 1, 4)].cert_id) for i in (0, 2, 4)]
    assert sorted(ranges) == sorted((name, b) for name in ("all", "validated", "issued") for b in batches)
