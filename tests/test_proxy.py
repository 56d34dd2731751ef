"""Responders through an outbound proxy: a real tinyproxy for http (absolute
form) and https (CONNECT), one that asks for credentials, one that refuses
connections and one that hangs."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import replace

import pytest

from engine.errors import (
    ResponderAddressError,
    ResponderHTTPError,
    ResponderTimeoutError,
    ResponderUnreachableError,
    ResponderURLError,
)
from engine.ocsp.certs import load_leaf
from engine.ocsp.request import build_request
from engine.responders import transport
from engine.responders.proxy import ProxySettings, bypassed, parse_proxy
from engine.responders.transport import TransportOptions, plan, post
from tests.forward_proxy import start_tinyproxy
from tests.loopback import LOOPBACK
from tests.servers import free_port
from tests.test_fanout import run
from tests.test_stapler import make_stapler
from tests.test_transport_https import TLS_ANSWER, tls_server  # noqa: F401 - a fixture


def through(proxy_url: str, timeout: float = 5.0, no_proxy: tuple[str, ...] = ()) -> TransportOptions:
    proxy = parse_proxy(proxy_url)
    return TransportOptions(timeout=timeout, allow=LOOPBACK,
                            proxy=ProxySettings((("http", proxy), ("https", proxy)), no_proxy))  # fmt: skip


@pytest.fixture
def tinyproxy():
    proxy = start_tinyproxy()
    yield proxy
    proxy.stop()


# -- what is written ---------------------------------------------------------------


def test_parse_proxy():
    proxy = parse_proxy("http://ops:s3cret@proxy.example:3128")
    assert (proxy.host, proxy.port, proxy.shown) == ("proxy.example", 3128, "http://ops:***@proxy.example:3128")
    assert proxy.authorization == "Basic b3BzOnMzY3JldA=="
    assert parse_proxy("proxy.example").port == 80  # a URL's default, scheme optional
    for bad, message in [("https://p:3128", "scheme 'https' is not supported"), ("socks5://p:1080", "socks5"),
                         ("http://p:3128/path", "expected http://"), ("http://p:99999", "out of range")]:
        with pytest.raises(ResponderURLError, match=message):
            parse_proxy(bad)


@pytest.mark.parametrize("host, no_proxy, direct", [
    ("ocsp.example.com", ("example.com",), True), ("example.com", ("example.com",), True),
    ("ocsp.example.com", (".example.com",), True), ("badexample.com", ("example.com",), False),
    ("ocsp.example.com", ("*",), True), ("10.1.2.3", ("10.0.0.0/8",), True), ("10.1.2.3", ("11.0.0.0/8",), False),
    ("ocsp.example.com", ("example.com:80",), True), ("ocsp.example.com", ("",), False),
])  # fmt: skip
def test_no_proxy(host, no_proxy, direct):
    assert bypassed(host, no_proxy) is direct


def test_plain_http_goes_in_absolute_form_with_credentials():
    written = plan("http://ocsp.example:8080/ca", b"req", through("http://u:p@proxy.example:3128"))
    assert (written.connect_host, written.connect_port) == ("proxy.example", 3128)
    head = written.payload.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("POST http://ocsp.example:8080/ca HTTP/1.1\r\nHost: ocsp.example:8080\r\n")
    assert "Proxy-Authorization: Basic dTpw" in head
    assert "through proxy http://u:***@proxy.example:3128" in written.label


def test_https_is_tunnelled_and_its_request_stays_origin_form():
    written = plan("https://ocsp.example/", b"req", through("http://u:p@proxy.example:3128"))
    assert written.tls and written.proxy is not None
    assert written.payload.startswith(b"POST / HTTP/1.1\r\n") and b"Proxy-Authorization" not in written.payload


def test_no_proxy_hosts_go_direct():
    written = plan("http://ocsp.internal/", b"req", through("http://proxy.example:3128", no_proxy=("internal",)))
    assert written.proxy is None and written.payload.startswith(b"POST / HTTP/1.1")


def test_a_responder_named_by_a_refused_address_is_refused_through_a_proxy_too():
    with pytest.raises(ResponderAddressError, match="169.254.169.254 is a cloud metadata address"):
        plan("http://169.254.169.254/latest", b"req", through("http://proxy.example:3128"))


# -- through a real proxy ----------------------------------------------------------


def test_http_through_tinyproxy(tinyproxy, pki, responder):
    leaf = load_leaf(pki.good.chain_path)
    before = responder.request_count
    body = post(pki.ocsp_url, build_request(leaf).der, through(tinyproxy.url))
    assert body[:1] == b"\x30" and responder.request_count == before + 1
    assert f"POST {pki.ocsp_url}" in tinyproxy.log()  # it went through the proxy


def test_warm_through_tinyproxy(tmp_path, tinyproxy, pki, responder):
    """The fanout's own non-blocking exchanges go through the proxy too."""
    stapler = make_stapler(tmp_path)
    stapler.fetch_options = replace(stapler.fetch_options, transport=through(tinyproxy.url))
    leaves = [load_leaf(pki.leaf(f"proxied-{n}").chain_path) for n in range(4)]
    results = run(stapler, leaves)
    assert [r.action for r in results] == ["updated"] * 4
    assert tinyproxy.log().count(f"POST {pki.ocsp_url}") == 4


def test_https_through_tinyproxy(tinyproxy, tls_server, monkeypatch):  # noqa: F811 - the fixture
    start, ca = tls_server
    monkeypatch.setattr(transport, "_tls_context", ssl.create_default_context(cafile=str(ca)))
    url = start(TLS_ANSWER)
    assert post(url, b"x", through(tinyproxy.url)) == b"over tls"
    assert "CONNECT" in tinyproxy.log()


def test_a_proxy_that_wants_credentials():
    proxy = start_tinyproxy(basic_auth=("ops", "s3cret"))
    try:
        with pytest.raises(ResponderHTTPError, match=r"through proxy http://127.0.0.1:\d+\): answered HTTP 407"):
            post("http://127.0.0.1:9/", b"x", through(proxy.url))
        with pytest.raises(ResponderHTTPError, match="the proxy answered HTTP 407 .*to CONNECT"):
            post("https://127.0.0.1:9/", b"x", through(proxy.url))
        # with them, it forwards (here to nothing: its 5xx, not a 407)
        with pytest.raises(ResponderHTTPError, match="answered HTTP 5") as raised:
            post("http://127.0.0.1:9/", b"x", through(proxy.url.replace("://", "://ops:s3cret@")))
        assert "s3cret" not in str(raised.value) and "ops:***@" in str(raised.value)
    finally:
        proxy.stop()


def test_a_proxy_that_refuses_connections():
    port = free_port()
    with pytest.raises(ResponderUnreachableError, match=f"through proxy http://127.0.0.1:{port}\\): connection refused"):
        post("http://ocsp.example/", b"x", through(f"http://127.0.0.1:{port}"))


def test_a_proxy_that_hangs_costs_one_timeout():
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # and never a byte back
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    try:
        for url in ("http://ocsp.example/", "https://ocsp.example/"):
            started = time.monotonic()
            with pytest.raises(ResponderTimeoutError, match="no complete answer within 0.5 s"):
                post(url, b"x", through(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5))
            assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        listener.close()
        for sock in accepted:
            sock.close()

