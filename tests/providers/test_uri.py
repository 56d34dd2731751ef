"""open_provider(): cache URIs to providers, and bad URIs to clear errors.

Opening a memcache or redis provider does not connect, so no server is
needed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import CacheURIError
from engine.store.providers import default_cache_uri, open_provider
from engine.store.providers.dbmfile import DbmProvider
from engine.store.providers.layout import DEFAULT_NAMESPACE, LEGACY_NAMESPACE
from engine.store.providers.local import LocalProvider
from engine.store.providers.memcache import MemcacheProvider
from engine.store.providers.redis import RedisProvider


# tests/conftest.py's fresh $STAPLECTL_HOME: no test here touches the real one
pytestmark = pytest.mark.usefixtures("home")


@pytest.mark.parametrize("uri", [None, "", "local:"])
def test_local_by_default_under_staplectl_home(home: Path, uri: str | None) -> None:
    provider = open_provider(uri)
    assert isinstance(provider, LocalProvider)
    assert provider.path == home / "staples.db"
    assert default_cache_uri() == f"local:{home / 'staples.db'}"
    assert provider.uri == (uri or default_cache_uri())  # as the operator wrote it
    assert (home / "staples.db").exists()
    provider.close()


def test_local_path(tmp_path: Path) -> None:
    provider = open_provider(f"local:{tmp_path / 'elsewhere.db'}")
    assert isinstance(provider, LocalProvider) and provider.path == tmp_path / "elsewhere.db"
    provider.close()


def test_local_directory_gets_the_default_file_name(tmp_path: Path) -> None:
    provider = open_provider(f"local:{tmp_path}")
    assert isinstance(provider, LocalProvider) and provider.path == tmp_path / "staples.db"
    provider.close()


def test_dbm_path(tmp_path: Path) -> None:
    uri = f"dbm:{tmp_path / 'stapling'}"
    provider = open_provider(uri)
    assert isinstance(provider, DbmProvider)
    assert provider.path == tmp_path / "stapling"
    assert provider.needs_mutex and provider.mutex_path == f"{tmp_path / 'stapling'}.lock"
    assert provider.uri == uri


def test_memcache_with_several_servers_and_options() -> None:
    uri = f"memcache://cache1:11311,10.0.0.2,[::1]:11411?namespace={LEGACY_NAMESPACE}&timeout=0.5"
    provider = open_provider(uri)
    assert isinstance(provider, MemcacheProvider)
    assert provider.servers == [("cache1", 11311), ("10.0.0.2", 11211), ("::1", 11411)]
    assert provider.namespace == LEGACY_NAMESPACE
    assert provider.timeout == 0.5
    assert provider.uri == uri
    assert (provider.shared, provider.needs_mutex) == (True, False)
    assert provider.max_ttl == 30 * 24 * 3600 - 1


def test_memcache_defaults() -> None:
    provider = open_provider("memcache://localhost")
    assert isinstance(provider, MemcacheProvider)
    assert provider.servers == [("localhost", 11211)]
    assert (provider.namespace, provider.timeout) == (DEFAULT_NAMESPACE, 2.0)


def test_redis_with_database_password_and_namespace() -> None:
    provider = open_provider("redis://:s3cret@r1:6380,r2/4?namespace=ns&timeout=1.5")
    assert isinstance(provider, RedisProvider)
    assert provider.servers == [("r1", 6380), ("r2", 6379)]
    assert (provider.db, provider.namespace) == (4, "ns")
    kwargs = [client.connection_pool.connection_kwargs for client in provider._clients]
    assert {(k["db"], k["password"], k["socket_timeout"]) for k in kwargs} == {(4, "s3cret", 1.5)}
    assert (provider.shared, provider.needs_mutex, provider.max_ttl) == (True, False, None)


def test_redis_defaults() -> None:
    provider = open_provider("redis://localhost")
    assert isinstance(provider, RedisProvider)
    assert provider.servers == [("localhost", 6379)]
    assert (provider.db, provider.namespace) == (0, DEFAULT_NAMESPACE)


def test_a_bad_uri_never_shows_its_password() -> None:
    with pytest.raises(CacheURIError) as info:
        open_provider("redis://user:hunter2@cache?timeout=inf")
    assert "hunter2" not in str(info.value)
    assert "'redis://user:***@cache?timeout=inf': ?timeout= inf is out of bounds" in str(info.value)


@pytest.mark.parametrize(
    ("uri", "named"),
    [
        ("ftp://cache:21", "'ftp'"),
        ("nonsense", "'nonsense'"),
        ("memcache://cache:eleven", "'eleven'"),
        ("memcache://cache:70000", "70000"),
        ("redis://cache:0", "port 0"),
        ("memcache://cache:11211?colour=red", "'colour'"),
        ("redis://cache/0?db=1", "'db'"),
        ("memcache://cache?timeout=soon", "'soon'"),
        ("memcache://cache?timeout=-1", "?timeout= -1 is out of bounds: it must be at least 0.1 and at most 300 s"),
        ("memcache://cache?timeout=nan", "?timeout= nan is out of bounds"),
        ("memcache://", "no server"),
        ("redis://", "no server"),
        ("memcache://a:1,,b:2", "empty server"),
        ("memcache://:11211", "':11211'"),
        ("memcache://cache/prefix", "no path"),
        ("redis://cache/zero", "'zero'"),
        ("dbm:", "dbm:PATH"),
    ],
)
def test_bad_uris_name_what_is_wrong(uri: str, named: str) -> None:
    with pytest.raises(CacheURIError) as info:
        open_provider(uri)
    message = str(info.value)
    assert named in message
    assert repr(uri) in message  # and which URI it was
