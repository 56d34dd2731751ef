"""The metrics endpoint faces whoever can reach its port: slow clients are
dropped, connections are bounded, IPv6 works, and a failure is a 500."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest

from staplectl import metrics as metrics_module
from staplectl.metrics import MetricsServer


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(metrics_module, "READ_TIMEOUT", 2.0)
    monkeypatch.setattr(metrics_module, "MAX_CONNECTIONS", 4)
    made = []

    def start(render=lambda: "staplectl_up 1\n", host="127.0.0.1") -> MetricsServer:
        made.append(MetricsServer(host, 0, render))
        made[-1].start()
        return made[-1]

    yield start
    for each in made:
        each.stop()


def scrape(host: str, port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_half_sent_requests_are_dropped_and_scrapes_go_on(server):
    metrics = server()
    host, port = metrics.address
    idle = [socket.create_connection((host, port)) for _ in range(20)]
    for sock in idle:
        sock.sendall(b"GET /metr")  # and never more
    # beyond the bound they are refused at once; the others time out
    try:
        seen: list[int] = []
        wait_until(lambda: seen.append(handlers()) or seen[-1] == 4, lambda: f"four handlers (seen {seen[-5:]})")
        assert max(seen) == 4  # never more, though 20 connected: the rest were refused
        wait_until(lambda: handlers() == 0, "the idle connections to time out")
        assert scrape(host, port) == (200, "staplectl_up 1\n")
    finally:
        for sock in idle:
            sock.close()


def handlers() -> int:
    return sum(thread.name == "metrics-scrape" for thread in threading.enumerate())


def wait_until(condition, what) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what() if callable(what) else what}"
        time.sleep(0.01)


def test_ipv6(server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    try:
        metrics = server(host="::1")
    except OSError as exc:
        pytest.skip(f"::1 is not usable here: {exc}")
    assert scrape("[::1]", metrics.address[1]) == (200, "staplectl_up 1\n")


def test_a_failing_render_is_a_500_and_the_server_goes_on(server, capsys):
    calls = []

    def render() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return "staplectl_up 1\n"

    metrics = server(render)
    host, port = metrics.address
    assert scrape(host, port)[0] == 500
    assert scrape(host, port) == (200, "staplectl_up 1\n")
    assert "RuntimeError: a bug" in capsys.readouterr().err
