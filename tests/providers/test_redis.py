"""redis: the contract on a real server, plus httpd's layout on the wire."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from engine.errors import CacheUnavailableError
from engine.store.providers import open_provider
from engine.store.providers.base import StapleWrite
from engine.store.providers.layout import DEFAULT_NAMESPACE, FLAG_ERROR, apr_server_index, meta_key, staple_key
from engine.store.providers.redis import RedisProvider
from tests.providers.contract import ProviderContract, cert_id, der_for
from tests.servers import ServerProcess, free_port

#: the contract runs in a database other than 0, so that db selection counts
DB = 3


def _raw(server: ServerProcess, db: int = DB) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, db=db)


@pytest.fixture
def server(redis_server: ServerProcess) -> ServerProcess:
    with _raw(redis_server) as client:
        client.flushall()
    return redis_server


class TestRedisProvider(ProviderContract):
    @pytest.fixture
    def uri(self, server: ServerProcess) -> str:
        return f"redis://{server.host}:{server.port}/{DB}"

    @pytest.fixture
    def provider(self, uri: str) -> Iterator[RedisProvider]:
        provider = open_provider(uri)
        assert isinstance(provider, RedisProvider) and provider.db == DB
        yield provider
        provider.close()

    def age(self, provider: RedisProvider, seconds: float) -> None:
        # redis has no clock to move: shorten every key's remaining life.
        for client in provider._clients:
            for key in client.scan_iter():
                left = client.pttl(key) - seconds * 1000
                if left > 0:
                    client.pexpire(key, int(left))
                else:
                    client.delete(key)


def test_the_layout_on_the_wire(server: ServerProcess) -> None:
    provider = RedisProvider([server.address], db=DB)
    cid = cert_id("wire")
    provider.set(cid, der_for("wire"), 600, flag=FLAG_ERROR, meta={"m": 1})
    with _raw(server) as raw:
        assert raw.get(f"mod_ssl-staple:{cid}") == b"\x00" + der_for("wire")
        assert raw.get(f"staplectl-meta:mod_ssl-staple:{cid}") == b'{"m":1}'
        assert 595 <= raw.ttl(f"mod_ssl-staple:{cid}") <= 600


def test_scan_lists_what_httpd_wrote_and_ignores_the_rest(server: ServerProcess) -> None:
    cid = cert_id("httpd")
    with _raw(server) as raw:
        raw.set(f"mod_ssl-staple:{cid}", b"\x01" + der_for("httpd"), ex=300)
        raw.set("mod_ssl-staple:not-a-cert-id", b"\x01x", ex=300)
        raw.set("session:abc", b"other program", ex=300)
    provider = RedisProvider([server.address], db=DB)
    [entry] = provider.entries()
    assert (entry.cert_id, entry.der, entry.meta) == (cid, der_for("httpd"), None)
    assert entry.expires_at == pytest.approx(time.time() + 300, abs=2)


def test_scan_covers_more_keys_than_one_scan_step(server: ServerProcess) -> None:
    provider = RedisProvider([server.address], db=DB)
    with _raw(server) as raw:
        pipe = raw.pipeline(transaction=False)
        for n in range(2500):
            pipe.set(f"mod_ssl-staple:{cert_id(n)}", b"\x01" + der_for(str(n)), ex=600)
        pipe.execute()
    assert len(list(provider.entries())) == 2500


def test_the_database_is_selected(server: ServerProcess) -> None:
    provider = open_provider(f"redis://{server.host}:{server.port}/5")
    provider.set(cert_id(1), der_for("one"), 600)
    with _raw(server, db=5) as in_five, _raw(server, db=0) as in_zero:
        assert in_five.get(f"mod_ssl-staple:{cert_id(1)}") is not None
        assert in_zero.get(f"mod_ssl-staple:{cert_id(1)}") is None
    assert not RedisProvider([server.address], db=0).get(cert_id(1))


def test_a_namespace_with_glob_characters(server: ServerProcess) -> None:
    odd = RedisProvider([server.address], db=DB, namespace="ns[1]*")
    plain = RedisProvider([server.address], db=DB, namespace="ns1x")
    odd.set(cert_id(1), der_for("odd"), 600)
    plain.set(cert_id(2), der_for("plain"), 600)
    assert [e.cert_id for e in odd.entries()] == [cert_id(1)]


def test_each_key_lands_on_the_server_apr_util_picks(redis_pair: list[ServerProcess]) -> None:
    raws = [_raw(s) for s in redis_pair]
    for raw in raws:
        raw.flushall()
    provider = RedisProvider([s.address for s in redis_pair], db=DB)
    cert_ids = [cert_id(n) for n in range(20)]
    for cid in cert_ids:
        provider.set(cid, der_for(cid), 600, meta={"id": cid})
    homes = set()
    for cid in cert_ids:
        for key in (staple_key(DEFAULT_NAMESPACE, cid), meta_key(DEFAULT_NAMESPACE, cid)):
            home = apr_server_index(key, 2)
            homes.add(home)
            assert raws[home].exists(key) and not raws[1 - home].exists(key), (key, home)
    assert homes == {0, 1}
    assert {e.cert_id for e in provider.entries()} == set(cert_ids)
    for raw in raws:
        raw.close()


def test_an_unreachable_server_is_named() -> None:
    port = free_port()
    provider = RedisProvider([("127.0.0.1", port)], timeout=0.5)
    with pytest.raises(CacheUnavailableError, match=f"127.0.0.1:{port}"):
        provider.get(cert_id(1))
    with pytest.raises(CacheUnavailableError, match=f"127.0.0.1:{port}"):
        list(provider.entries())
    with pytest.raises(CacheUnavailableError, match=f"127.0.0.1:{port}"):
        provider.set(cert_id(1), b"x", 60)
    with pytest.raises(CacheUnavailableError, match=f"127.0.0.1:{port}"):
        provider.set_many([StapleWrite(cert_id(1), b"x", 60)])


def test_a_dead_server_is_retried_once_not_ten_times() -> None:
    # redis-py's default (ten retries with backoff) would hold the request
    # path for seconds when the cache is down.
    provider = RedisProvider([("127.0.0.1", free_port())])
    assert [client.get_retry().get_retries() for client in provider._clients] == [1]
