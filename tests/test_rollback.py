"""A staple is never rolled back to an older one.

OCSP mostly travels over plain HTTP without a nonce, so anyone on the path
can replay an older signed response, and a CDN can serve a stale copy.
Whatever the path (the request path and the worker through Stapler.refresh,
warm through the fanout, the fetch command), a response older than the
stored one is refused, counted and reported, and the stored one stays.
"""

from __future__ import annotations

import itertools

import pytest

from engine.ocsp.certs import load_leaf
from engine.errors import BadValidityError, RollbackError
from engine.ocsp.staple import Staple
from tests.responder import Behaviour
from tests.test_fanout import run
from tests.test_stapler import make_stapler

_names = itertools.count()


def staple(this_update: float, produced_at: float, status: str = "good") -> Staple:
    return Staple(b"", status, 1, this_update, this_update + 3600, produced_at)


class TestMayReplace:
    def test_nothing_stored(self):
        assert staple(100, 100).may_replace(None)

    def test_older_this_update_never(self):
        assert not staple(99, 500).may_replace(staple(100, 100))

    def test_same_this_update_then_produced_at_decides(self):
        assert not staple(100, 99).may_replace(staple(100, 100))
        assert staple(100, 100).may_replace(staple(100, 100))  # the same response again
        assert staple(100, 101).may_replace(staple(100, 100))

    def test_newer_always(self):
        assert staple(101, 101, "revoked").may_replace(staple(100, 100))
        assert staple(101, 101).may_replace(staple(100, 100, "unknown"))

    def test_a_revocation_is_undone_only_by_a_strictly_newer_answer(self):
        revoked = staple(100, 100, "revoked")
        assert not staple(100, 100, "good").may_replace(revoked)
        assert not staple(100, 100, "unknown").may_replace(revoked)
        assert staple(100, 100, "revoked").may_replace(revoked)
        assert staple(100, 101, "good").may_replace(revoked)
        assert staple(101, 101, "good").may_replace(revoked)


@pytest.fixture
def leaf(pki):
    return load_leaf(pki.leaf(f"rollback-{next(_names)}").chain_path)


def test_a_replayed_older_good_never_replaces_a_stored_revoked(tmp_path, responder, leaf):
    stapler = make_stapler(tmp_path)
    responder.script(leaf.serial, Behaviour(cert_status="revoked", this_update_offset=-60))
    assert stapler.refresh(leaf, force=True).staple.status == "revoked"
    # the attacker replays a good response signed before the revocation
    responder.script(leaf.serial, Behaviour(cert_status="good", this_update_offset=-600))
    with pytest.raises(RollbackError, match="older than the stored revoked response"):
        stapler.refresh(leaf, force=True)
    assert stapler.cached(leaf).status == "revoked"
    # the request path too (prefetch off, so a due staple is refreshed there)
    assert stapler.staple(leaf).staple.status == "revoked"


def test_warm_refuses_an_older_response_and_keeps_the_stored_one(tmp_path, responder, leaf):
    stapler = make_stapler(tmp_path)
    responder.script(leaf.serial, Behaviour(this_update_offset=-60))
    assert stapler.refresh(leaf, force=True).action == "updated"
    stored = stapler.cached(leaf)
    responder.script(leaf.serial, Behaviour(this_update_offset=-3000))
    [result] = run(stapler, [leaf], force=True)
    assert isinstance(result, RollbackError) and result.reason == "rollback"
    assert stapler.cached(leaf) == stored


def test_a_newer_response_replaces_the_stored_one(tmp_path, responder, leaf):
    stapler = make_stapler(tmp_path)
    responder.script(leaf.serial, Behaviour(cert_status="revoked", this_update_offset=-600))
    stapler.refresh(leaf, force=True)
    responder.script(leaf.serial, Behaviour(cert_status="good", this_update_offset=-60))
    assert stapler.refresh(leaf, force=True).staple.status == "good"
    assert stapler.cached(leaf).status == "good"


def test_next_update_before_this_update_is_invalid_and_never_stored(tmp_path, responder, leaf):
    stapler = make_stapler(tmp_path)
    responder.script(leaf.serial, Behaviour(this_update_offset=-60, next_update_offset=-120))
    with pytest.raises(BadValidityError, match="is before thisUpdate"):
        stapler.refresh(leaf, force=True)
    assert stapler.cached(leaf) is None
