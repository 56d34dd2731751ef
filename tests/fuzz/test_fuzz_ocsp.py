"""Fuzzing what reads an OCSP response: whatever the bytes, only the
engine's own errors (StapleError) come out, or a clean result.

A response comes from a responder anyone on the path can impersonate
(OCSP is plain HTTP) and from a shared cache anyone with access can write;
an exception of another kind is a traceback for ``fetch`` and, on the
reading side, one entry that takes down a whole ``warm`` or ``check``.
"""

from __future__ import annotations

import json
import time

from hypothesis import given
from hypothesis import strategies as st

from engine.errors import StapleError
from engine.inspection import Found, inspect_entry
from engine.ocsp.response_text import describe, render
from engine.ocsp.staple import Staple, parse_response
from engine.ocsp.validate import ValidationOptions, validate
from engine.refresh.reader import StapleReader
from engine.store.providers.base import Entry
from tests.fuzz.profiles import budget


def _only_engine_errors(call):
    """What ``call()`` returns, or None after a StapleError; anything else fails the test."""
    try:
        return call()
    except StapleError as error:
        assert str(error)  # the message is built, and says something
        return None


@budget(1500)
@given(data=st.data())
def test_parse_response(seeds, data):
    der = data.draw(seeds.any_response())
    response = _only_engine_errors(lambda: parse_response(der, "fuzzed response"))
    if response is not None:
        response.response_status  # noqa: B018 - read eagerly, as every caller does


@budget(2000)
@given(data=st.data(), check_time=st.booleans(), not_after=st.booleans(), asked=st.sampled_from([None, 0, 1]))
def test_validate(seeds, data, check_time, not_after, asked):
    der = data.draw(seeds.any_response())
    query = None if asked is None else seeds.queries[asked]
    staple = _only_engine_errors(lambda: validate(
        der, seeds.leaf, time.time(), cert_id=query.cert_id if query else None,
        nonce=query.nonce if query else None, options=ValidationOptions(check_not_after=not_after),
        source="fuzzed response", check_time=check_time,
    ))  # fmt: skip
    assert staple is None or isinstance(staple, Staple)


@budget(1500)
@given(data=st.data())
def test_describe_and_render(seeds, data):
    """inspect --json and --text: the decoded response must also print as JSON."""
    der = data.draw(seeds.any_response())
    described = _only_engine_errors(lambda: describe(der, "fuzzed response"))
    if described is not None:
        json.dumps(described)
    text = _only_engine_errors(lambda: render(der, "fuzzed response"))
    assert text is None or isinstance(text, str)


@budget(1200)
@given(data=st.data(), flag=st.sampled_from([0, 1]), known=st.booleans())
def test_inspect_entry_never_raises(seeds, data, flag, known):
    """One row of ``inspect`` (and the dashboard): any entry becomes a row."""
    der = data.draw(seeds.any_response())
    entry = Entry(seeds.leaf.cert_id, f"mod_ssl-staple:{seeds.leaf.cert_id}", der, flag)
    found = Found(leaf=seeds.leaf, path="leaf.pem") if known else Found()
    row = inspect_entry(entry, time.time(), found=found)
    json.dumps(row.to_dict())


class _Planted:
    """A cache whose get_many answers the planted entries."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries

    def get_many(self, cert_ids):
        return {c: self.entries[c] for c in cert_ids if c in self.entries}


@budget(800)
@given(data=st.data())
def test_cached_staples_are_read_one_entry_at_a_time(seeds, data):
    """What warm, check and export read first: a bad entry is no staple, for its certificate alone."""
    der = data.draw(seeds.any_response())
    leaf = seeds.leaf
    reader = StapleReader(_Planted({leaf.cert_id: Entry(leaf.cert_id, "k", der)}))  # type: ignore[arg-type]
    found = reader.cached_many([leaf])
    assert set(found) == {leaf.cert_id}
