"""The test servers' helper: a missing server skips, or fails when CI says it must be there."""

from __future__ import annotations

import pytest

from tests import servers
from tests.servers import find_binary, start_memcached, start_redis

MISSING = "staplectl-no-such-server"


def test_a_missing_server_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install some-package"):
        find_binary(MISSING, "some-package")


def test_a_missing_server_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install some-package"):
        find_binary(MISSING, "some-package")


@pytest.mark.parametrize(
    ("running", "start"), [("memcached", start_memcached), ("redis_server", start_redis)]
)
def test_a_taken_port_is_retried(monkeypatch: pytest.MonkeyPatch, request, running, start) -> None:
    # The first port offered is one a server of the session already listens on.
    taken = request.getfixturevalue(running).port
    ports = iter([taken])
    real_free_port = servers.free_port
    monkeypatch.setattr(servers, "free_port", lambda: next(ports, None) or real_free_port())
    server = start()
    try:
        assert server.port != taken
        assert server.proc.poll() is None
    finally:
        server.stop()
