"""Real TLS servers stapling what staplectl prepared.

Every test gets its own responder and PKI (so it can make the responder
hang, fail or answer short-lived responses without disturbing others), its
own cache servers (so `inspect` lists only its entries), and servers that
are stopped by the fixture's finalizer whatever the test did.

A missing server binary skips, or fails with CI=true, as tests/servers.py
does for memcached and redis.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.loopback import CONFIG_ALLOW
from tests.cli.conftest import Ran, staplectl_path
from tests.integration.haproxy import HAProxy
from tests.integration.httpd import Httpd, Vhost
from tests.integration.nginx import Nginx, Site
from tests.pki import PKI, Issued
from tests.responder import ScriptedResponder
from tests.servers import ServerProcess, start_memcached, start_redis


def require(name: str, package: str) -> str:
    for path in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if path and os.access(path, os.X_OK):
            return path
    message = f"{name} is not installed: install the {package!r} package (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def ocsp(tmp_path: Path) -> Iterator[ScriptedResponder]:
    """A responder of this test's own, with a PKI whose leaves point at it."""
    responder = ScriptedResponder()
    responder.pki = PKI(tmp_path / "pki", responder.url)
    responder.start()
    yield responder
    responder.stop()  # also ends requests scripted to hang


@pytest.fixture
def leaves(ocsp: ScriptedResponder) -> Callable[..., list[Issued]]:
    """leaves("www", "api") -> new leaf certificates of the test's PKI."""
    assert ocsp.pki is not None
    pki: PKI = ocsp.pki
    return lambda *names: [pki.leaf(name) for name in names]


@pytest.fixture
def staplectl_env(tmp_path: Path) -> dict[str, str]:
    """The environment staplectl runs in: the test's own $STAPLECTL_HOME, and a
    configuration in the default place that allows the responders on loopback."""
    config_home = tmp_path / "xdg-config"
    (config_home / "staplectl").mkdir(parents=True)
    (config_home / "staplectl" / "config.toml").write_text(CONFIG_ALLOW)
    env = dict(
        os.environ, NO_COLOR="1", COLUMNS="200", TERM="dumb", STAPLECTL_HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(config_home),
    )  # fmt: skip
    for name in ("STAPLECTL_CACHE", "STAPLECTL_CONFIG"):
        env.pop(name, None)
    return env


@pytest.fixture
def run(staplectl_env: dict[str, str]) -> Callable[..., Ran]:
    """Run the installed staplectl: run("warm", ..., check=True) -> Ran."""
    program = staplectl_path()

    def staplectl(*args: object, check: bool = False, timeout: float = 60) -> Ran:
        done = subprocess.run(
            [program, *map(str, args)], capture_output=True, text=True, env=staplectl_env, timeout=timeout
        )
        ran = Ran(done.returncode, done.stdout, done.stderr)
        if check:
            assert ran.exit_code == 0, f"staplectl {' '.join(map(str, args))}: {ran.exit_code}\n{ran.stdout}{ran.stderr}"
        return ran

    return staplectl


# -- cache servers of the test's own ------------------------------------------


@pytest.fixture
def memcache() -> Iterator[ServerProcess]:
    server = start_memcached()
    yield server
    server.stop()


@pytest.fixture
def memcache_two() -> Iterator[list[ServerProcess]]:
    servers = [start_memcached()]
    try:
        servers.append(start_memcached())
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def redis() -> Iterator[ServerProcess]:
    server = start_redis()
    yield server
    server.stop()


# -- the TLS servers ------------------------------------------------------------


def vhosts(issued: list[Issued]) -> list[Vhost]:
    return [Vhost(f"{leaf.name}.test", leaf.chain_path, leaf.key_path) for leaf in issued]


@pytest.fixture
def httpd(tmp_path: Path) -> Iterator[Callable[..., Httpd]]:
    """httpd(issued, cache="memcache:127.0.0.1:PORT", stapling={...}) -> a started Httpd."""
    binary = require("apache2", "apache2-bin")
    started: list[Httpd] = []

    def start(issued: list[Issued], cache: str, **options: object) -> Httpd:
        server = Httpd(binary, tmp_path / f"httpd-{len(started)}", vhosts(issued), cache, **options)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[list[Site]], Nginx]]:
    binary = require("nginx", "nginx")
    started: list[Nginx] = []

    def start(sites: list[Site], *, run: bool = True) -> Nginx:
        server = Nginx(binary, tmp_path / f"nginx-{len(started)}", sites)
        started.append(server)
        return server.start() if run else server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[list[Path]], HAProxy]]:
    binary = require("haproxy", "haproxy")
    started: list[HAProxy] = []

    def start(bundles: list[Path], *, run: bool = True) -> HAProxy:
        server = HAProxy(binary, tmp_path / f"haproxy-{len(started)}", bundles)
        started.append(server)
        return server.start() if run else server

    yield start
    for server in started:
        server.stop()
