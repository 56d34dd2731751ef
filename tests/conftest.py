"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.loopback import CONFIG_ALLOW
from tests.servers import ServerProcess, start_memcached, start_redis

#: the environment's outbound proxies, which staplectl honours: a machine
#: that sets them (for apt or pip) must not send the tests' loopback
#: responders through them. Tests that want a proxy set one themselves.
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# -- real cache servers, one set per test session (see tests/servers.py) -----


@pytest.fixture(scope="session")
def memcached() -> Iterator[ServerProcess]:
    server = start_memcached()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def memcached_pair() -> Iterator[list[ServerProcess]]:
    """Two servers, for apr-util's choice of server per key."""
    servers = [start_memcached()]
    try:
        servers.append(start_memcached())
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ServerProcess]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_pair() -> Iterator[list[ServerProcess]]:
    servers = [start_redis()]
    try:
        servers.append(start_redis())
        yield servers
    finally:
        for server in servers:
            server.stop()


#: the password of the redis ACL user "staplectl" (see acl_user)
SECRET = "s3cret-hunter2"


@pytest.fixture
def acl_user(redis_server: ServerProcess) -> Iterator[str]:
    """A redis 6 ACL user "staplectl" with SECRET, on the session's server."""
    admin = redis.Redis(*redis_server.address)
    admin.execute_command("ACL", "SETUSER", "staplectl", "on", f">{SECRET}", "~*", "+@all")
    yield "staplectl"
    admin.execute_command("ACL", "DELUSER", "staplectl")


# -- a test PKI and the scripted responder its certificates point at ----------

from tests.pki import PKI  # noqa: E402
from tests.responder import Behaviour, ScriptedResponder  # noqa: E402


@pytest.fixture(scope="session")
def _responder_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedResponder]:
    responder = ScriptedResponder()
    responder.pki = PKI(tmp_path_factory.mktemp("pki"), responder.url)
    responder.start()
    yield responder
    responder.stop()


@pytest.fixture
def responder(_responder_session: ScriptedResponder) -> Iterator[ScriptedResponder]:
    """The in-process responder, back to answering `good` for everyone."""
    _responder_session.reset()
    yield _responder_session
    _responder_session.reset()


@pytest.fixture
def pki(responder: ScriptedResponder) -> PKI:
    assert responder.pki is not None
    return responder.pki


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh $STAPLECTL_HOME, so the default local store is the test's own,
    and a configuration in the default place ($XDG_CONFIG_HOME) that allows
    the tests' responders on loopback, as an operator's would (a test's own
    --config file says so itself: tests.loopback.CONFIG_ALLOW)."""
    path = tmp_path / "home"
    monkeypatch.setenv("STAPLECTL_HOME", str(path))
    monkeypatch.delenv("STAPLECTL_CACHE", raising=False)
    monkeypatch.delenv("STAPLECTL_CONFIG", raising=False)
    config_home = tmp_path / "xdg-config"
    (config_home / "staplectl").mkdir(parents=True)
    (config_home / "staplectl" / "config.toml").write_text(CONFIG_ALLOW)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    return path


__all__ = ["Behaviour"]
