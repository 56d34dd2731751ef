"""Fuzzing the cache value decoders: whatever sits under our keys, an entry
(with its junk said in ``problem``), a miss, or a StapleError; never an
exception of another kind.

memcached and redis may be shared with every host that staples, and
anything that can write to them can write our keys. The local SQLite
store and the dbm file are ours, but a file can be damaged or edited, and
SQLite keeps whatever type a value was written with.
"""

from __future__ import annotations

import dbm
import sqlite3
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.clock import FrozenClock
from engine.errors import EntryFormatError, StapleError
from engine.store.providers.base import Entry
from engine.store.providers.dbmfile import DbmProvider
from engine.store.providers.layout import decode_value
from engine.store.providers.local import LocalProvider
from engine.store.providers.meta import load_meta
from engine.store.providers.sharded import Layout
from tests.fuzz.profiles import budget
from tests.fuzz.strategies import cache_values, metadata_values

CERT_ID = "a" * 40
NOW = 1_800_000_000.0


@budget(1000)
@given(value=st.binary(max_size=64) | st.binary(max_size=2).map(lambda b: b + b"\x30\x03\x0a\x01\x00"))
def test_decode_value(value):
    try:
        flag, der = decode_value(value)
    except EntryFormatError:
        return
    assert flag in (0, 1) and isinstance(der, bytes)


@budget(1500)
@given(raw=metadata_values() | st.none())
def test_load_meta(raw):
    """Metadata is read against its schema: what does not fit is said, never raised."""
    meta, problem = load_meta(raw)
    assert meta is None or isinstance(meta, dict)
    assert problem is None or isinstance(problem, str)


@budget(1000)
@given(data=st.data(), meta=metadata_values() | st.none(), expiries=st.tuples(st.none() | st.floats(), st.none() | st.floats()))
def test_memcache_and_redis_entry(seeds, data, meta, expiries):
    """What memcached and redis hand back for a certificate's two keys (a
    WRONGTYPE error from redis included) becomes an Entry or nothing."""
    staple = data.draw(cache_values(seeds.responses_der) | st.none() | st.just(ValueError("WRONGTYPE")))
    entry = Layout("mod_ssl-staple", 2).entry(CERT_ID, staple, meta, *expiries)
    assert entry is None or isinstance(entry, Entry)


#: what SQLite may hand back for a column: it keeps each value's own type (and a NaN as NULL)
_SQLITE_SET = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
_SQLITE_VALUE = st.none() | _SQLITE_SET


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz-local") / "staples.db"
    provider = LocalProvider(path, clock=FrozenClock(NOW))
    provider.get(CERT_ID)  # the schema is made
    yield provider, sqlite3.connect(path, isolation_level=None)
    provider.close()


@budget(800)
@given(data=st.data())
def test_local_store_rows(seeds, local_store, data):
    """A row of the local store with any value of any type in any column."""
    provider, raw = local_store
    values = cache_values(seeds.responses_der)
    row = {
        # key, flag and der are NOT NULL
        "key": data.draw(_SQLITE_SET), "flag": data.draw(st.sampled_from([0, 1]) | _SQLITE_SET),
        "der": data.draw(values | _SQLITE_SET), "expires_at": data.draw(st.just(NOW + 60) | _SQLITE_VALUE),
        "meta": data.draw(metadata_values() | _SQLITE_VALUE),
        "meta_expires_at": data.draw(st.just(NOW + 60) | _SQLITE_VALUE),
    }  # fmt: skip
    raw.execute("DELETE FROM staples")
    raw.execute(
        "INSERT INTO staples (cert_id, key, flag, der, expires_at, meta, meta_expires_at, updated_at) "
        "VALUES (:cert_id, :key, :flag, :der, :expires_at, :meta, :meta_expires_at, 0)",
        {"cert_id": CERT_ID, **row},
    )
    for read in (lambda: provider.get(CERT_ID), lambda: provider.get_many([CERT_ID]), lambda: list(provider.entries())):
        try:
            read()
        except StapleError:
            pass


@pytest.fixture(scope="module")
def dbm_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz-dbm") / "staples"
    provider = DbmProvider(path, clock=FrozenClock(NOW))
    provider.set_meta(CERT_ID, {"status": "good"}, 60)  # the file is made
    return provider, path


@budget(600)
@given(data=st.data())
def test_dbm_values(seeds, dbm_store, data):
    """A dbm value: an 8-byte expiry (any double, NaN too), then flag + DER or metadata."""
    provider, path = dbm_store
    expiry = data.draw(st.floats(allow_nan=True).map(lambda f: struct.pack(">d", f)) | st.binary(max_size=8))
    staple = expiry + data.draw(cache_values(seeds.responses_der))
    meta = expiry + data.draw(metadata_values().map(lambda m: m.encode() if isinstance(m, str) else m))
    with dbm.open(str(path), "c") as db:
        db[f"mod_ssl-staple:{CERT_ID}".encode()] = staple
        db[f"staplectl-meta:mod_ssl-staple:{CERT_ID}".encode()] = meta
    for read in (lambda: provider.get(CERT_ID), lambda: list(provider.entries())):
        try:
            read()
        except StapleError:
            pass
