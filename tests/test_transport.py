"""The HTTP transport: deadline, size cap, Content-Type, redirects, schemes.

A raw socket server stands in for a misbehaving responder, so each test
controls every byte (and every pause) on the wire. HTTPS is tested in
tests/test_transport_https.py.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from engine.errors import (
    ContentTypeError,
    RedirectRefusedError,
    ResponderHTTPError,
    ResponderTimeoutError,
    ResponderUnreachableError,
    ResponderURLError,
    ResponseTooLargeError,
)
from engine.responders import transport
from engine.responders.exchange import Exchange
from engine.responders.transport import TransportOptions, check_url, resolve
from tests.loopback import local
from tests.servers import free_port


def post(url: str, der: bytes, options: TransportOptions = TransportOptions()) -> bytes:
    return transport.post(url, der, local(options))


def plan(url: str, der: bytes, options: TransportOptions = TransportOptions()) -> transport.Plan:
    return transport.plan(url, der, local(options))


def post_through_selector(url: str, der: bytes, options: TransportOptions = TransportOptions()) -> bytes:
    """transport.post's exchange, driven the way engine.refresh.fanout drives it."""
    exchange_plan = plan(url, der, options)
    with selectors.DefaultSelector() as selector:
        exchange = Exchange(exchange_plan, resolve(exchange_plan), time.monotonic() + options.timeout, selector)
        while not exchange.done:
            left = exchange.deadline - time.monotonic()
            if left <= 0:
                exchange.expire()
                break
            for key, events in selector.select(left):
                key.data.step(events)
        return exchange.body()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every plain-HTTP test runs twice: through transport.post, and through
    # engine.responders.exchange, which must answer every byte on the wire the same.
    # (HTTPS goes through transport.post alone: tests/test_transport_https.py.)
    if "way" in metafunc.fixturenames:
        metafunc.parametrize("way", ["post", "exchange"], indirect=True)


@pytest.fixture(autouse=True)
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "exchange":
        monkeypatch.setitem(globals(), "post", post_through_selector)
    return request.param


class RawServer:
    """Accepts connections on loopback and hands each to ``handler``."""

    def __init__(self, handler: Callable[[socket.socket, threading.Event], None]) -> None:
        self.handler = handler
        self.stop_event = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(body) < length:
                    body += conn.recv(4096)
                self.requests.append(head + b"\r\n\r\n" + body)
                self.handler(conn, self.stop_event)
            except OSError:
                pass

    def close(self) -> None:
        self.stop_event.set()
        self.sock.close()
        self.thread.join(2)


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler):
        server = RawServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def reply(body: bytes, *, status: str = "200 OK", content_type: str = "application/ocsp-response", extra: str = ""):
    def handler(conn, _stop):
        head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        conn.sendall(head.encode() + body)

    return handler


def test_post_sends_ocsp_request_and_returns_body(serve):
    server = serve(reply(b"\x30\x03\x0a\x01\x00"))
    assert post(server.url, b"REQUEST") == b"\x30\x03\x0a\x01\x00"
    request = server.requests[0]
    assert request.startswith(b"POST / HTTP/1.1")
    assert b"Content-Type: application/ocsp-request" in request
    assert request.endswith(b"REQUEST")


def test_get_encodes_the_request_in_the_path(serve):
    server = serve(reply(b"ok"))
    post(server.url, b"\xfb\xff\xbf\x30", TransportOptions(use_get=True))
    # base64 "+/+/MA==" with '+', '/' and '=' percent-encoded (RFC 5019 2.1.1)
    assert server.requests[0].startswith(b"GET /%2B%2F%2B%2FMA%3D%3D HTTP/1.1")


def test_wrong_content_type_is_refused(serve):
    server = serve(reply(b"<html>", content_type="text/html"))
    with pytest.raises(ContentTypeError, match="text/html"):
        post(server.url, b"x")


def test_redirect_is_not_followed(serve):
    target = serve(reply(b"never"))
    server = serve(reply(b"", status="302 Found", extra=f"Location: {target.url}\r\n"))
    with pytest.raises(RedirectRefusedError, match="302"):
        post(server.url, b"x")
    assert target.requests == []


def test_http_error_status(serve):
    server = serve(reply(b"oops", status="500 Internal Server Error", content_type="text/plain"))
    with pytest.raises(ResponderHTTPError, match="HTTP 500") as info:
        post(server.url, b"x")
    assert info.value.temporary


def test_declared_oversize_is_refused_before_reading(serve):
    server = serve(reply(b"x" * 70_000))
    with pytest.raises(ResponseTooLargeError, match="70000 bytes"):
        post(server.url, b"x")


def test_undeclared_oversize_is_cut_at_the_cap(serve):
    def handler(conn, _stop):
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\n\r\n" + b"x" * 5000)

    server = serve(handler)
    with pytest.raises(ResponseTooLargeError, match="cap of 1024 bytes"):
        post(server.url, b"x", TransportOptions(max_size=1024))


def test_hanging_responder_hits_the_deadline(serve):
    server = serve(lambda conn, stop: stop.wait(30))
    started = time.monotonic()
    with pytest.raises(ResponderTimeoutError, match="0.5 s"):
        post(server.url, b"x", TransportOptions(timeout=0.5))
    assert time.monotonic() - started < 5


def test_dribbling_responder_hits_the_total_deadline(serve):
    # One byte every 0.1 s: each read is quick, the whole is not. A per-read
    # timeout would wait for ever; the total deadline must not.
    def handler(conn, stop):
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
            if stop.wait(0.1):
                return
            conn.sendall(bytes([byte]))

    server = serve(handler)
    started = time.monotonic()
    with pytest.raises(ResponderTimeoutError):
        post(server.url, b"x", TransportOptions(timeout=0.8))
    assert time.monotonic() - started < 5


def test_connection_refused():
    port = free_port()
    with pytest.raises(ResponderUnreachableError, match="refused"):
        post(f"http://127.0.0.1:{port}/", b"x")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/", "scheme 'ftp' is not allowed"),
        ("ldap://ca.example/", "scheme 'ldap' is not allowed"),
        ("127.0.0.1:8080", "is not allowed"),
        ("http:///path", "no host"),
        ("http://127.0.0.1:99999/", "out of range"),
    ],
)
def test_only_http_and_https_urls(url, message):
    with pytest.raises(ResponderURLError, match=message):
        check_url(url)


# -- the HTTP/1.1 exchange itself (engine/responders/transport.py reads the response on its own) --


def raw(answer: bytes):
    def handler(conn, _stop):
        conn.sendall(answer)

    return handler


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\n"


def test_the_request_is_what_http_client_sent(serve):
    server = serve(reply(b"ok"))
    post(server.url, b"REQUEST")
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST / HTTP/1.1"
    assert set(lines[1:]) == {
        f"Host: 127.0.0.1:{server.port}".encode(),
        b"Accept-Encoding: identity",
        b"User-Agent: staplectl/0.1",
        b"Accept: application/ocsp-response",
        b"Connection: close",
        b"Content-Type: application/ocsp-request",
        b"Content-Length: 7",
    }
    assert body == b"REQUEST"


def test_get_sends_no_body(serve):
    server = serve(reply(b"ok"))
    post(server.url, b"\x30\x03", TransportOptions(use_get=True))
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"GET /MAM%3D HTTP/1.1") and b"Content-Length" not in head and body == b""


def test_chunked_body(serve):
    server = serve(raw(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n"))
    assert post(server.url, b"x") == b"abcde"


def test_chunked_body_over_the_cap(serve):
    server = serve(raw(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n400\r\n" + b"x" * 1024 + b"\r\n400\r\n" + b"y" * 1024 + b"\r\n0\r\n\r\n"))
    with pytest.raises(ResponseTooLargeError, match="cap of 1500 bytes"):
        post(server.url, b"x", TransportOptions(max_size=1500))


def test_chunked_body_cut_short(serve):
    server = serve(raw(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n10\r\nabc"))
    with pytest.raises(ResponderUnreachableError, match="in the middle of a chunked body"):
        post(server.url, b"x")


def test_bad_chunk_size(serve):
    server = serve(raw(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"))
    with pytest.raises(ResponderUnreachableError, match="bad chunk size"):
        post(server.url, b"x")


def test_body_until_the_connection_closes(serve):
    server = serve(raw(b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\n\r\nall of it"))
    assert post(server.url, b"x") == b"all of it"


def test_content_length_frames_the_body(serve):
    # bytes after the declared length are not part of the body
    server = serve(raw(OK_HEAD + b"Content-Length: 4\r\n\r\nbodyEXTRA"))
    assert post(server.url, b"x") == b"body"


def test_a_body_cut_short_is_returned_as_it_is(serve):
    # as http.client did: validation then finds it malformed
    server = serve(raw(OK_HEAD + b"Content-Length: 100\r\n\r\nshort"))
    assert post(server.url, b"x") == b"short"


def test_interim_responses_are_skipped(serve):
    server = serve(raw(b"HTTP/1.1 100 Continue\r\n\r\n" + OK_HEAD + b"Content-Length: 2\r\n\r\nok"))
    assert post(server.url, b"x") == b"ok"


def test_header_field_names_are_case_insensitive_and_values_trimmed(serve):
    server = serve(raw(b"HTTP/1.1 200 OK\r\ncontent-TYPE:  Application/OCSP-Response ; x=y \r\nCONTENT-LENGTH: 2\r\n\r\nok"))
    assert post(server.url, b"x") == b"ok"


def test_two_content_types_are_refused(serve):
    server = serve(raw(OK_HEAD + b"Content-Type: text/html\r\nContent-Length: 2\r\n\r\nok"))
    with pytest.raises(ContentTypeError):
        post(server.url, b"x")


def test_lf_only_line_ends(serve):
    server = serve(raw(b"HTTP/1.1 200 OK\nContent-Type: application/ocsp-response\nContent-Length: 2\n\nok"))
    assert post(server.url, b"x") == b"ok"


def test_status_without_reason(serve):
    server = serve(raw(b"HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n"))
    with pytest.raises(ResponderHTTPError, match=r"HTTP 503$"):
        post(server.url, b"x")


@pytest.mark.parametrize("line", [b"garbage\r\n", b"HTTP/1.1 2000 OK\r\n", b"HTTP/1.1 OK\r\n", b"ICY 200 OK\r\n"])
def test_not_a_status_line(serve, line):
    server = serve(raw(line + b"Content-Length: 0\r\n\r\n"))
    with pytest.raises(ResponderUnreachableError, match="not an HTTP status line"):
        post(server.url, b"x")


def test_closed_without_an_answer(serve):
    server = serve(lambda conn, stop: None)
    with pytest.raises(ResponderUnreachableError, match="closed connection without response"):
        post(server.url, b"x")


def test_endless_header_section(serve):
    server = serve(raw(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: y\r\n" * 200 + b"\r\n"))
    with pytest.raises(ResponderUnreachableError, match="more than 100 headers"):
        post(server.url, b"x")


def test_endless_line(serve):
    server = serve(raw(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"y" * 70_000 + b"\r\n\r\n"))
    with pytest.raises(ResponderUnreachableError, match="longer than 65536 bytes"):
        post(server.url, b"x")


def test_dribbled_chunks_hit_the_total_deadline(serve):
    def handler(conn, stop):
        conn.sendall(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        while not stop.wait(0.1):
            conn.sendall(b"1\r\nx\r\n")

    server = serve(handler)
    started = time.monotonic()
    with pytest.raises(ResponderTimeoutError):
        post(server.url, b"x", TransportOptions(timeout=0.8))
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/a b", "http://127.0.0.1:1/\u00e9"])
def test_a_url_that_cannot_be_sent(url):
    with pytest.raises(ResponderURLError, match="space, a control or a non-ASCII character"):
        post(url, b"x")


def test_default_port_is_not_in_the_host_field():
    from engine.responders.http_request import _request_head

    assert b"\r\nHost: ocsp.example\r\n" in _request_head("POST", "ocsp.example", 80, False, "/", 1)
    assert b"\r\nHost: ocsp.example\r\n" in _request_head("POST", "ocsp.example", 443, True, "/", 1)
    assert b"\r\nHost: ocsp.example:8080\r\n" in _request_head("POST", "ocsp.example", 8080, False, "/", 1)
    assert b"\r\nHost: [::1]:8080\r\n" in _request_head("POST", "::1", 8080, False, "/", 1)


# -- what only the non-blocking exchange does --------------------------------------


def test_exchange_ends_when_the_body_is_complete_though_the_connection_stays_open(serve):
    # A responder that ignores "Connection: close": Content-Length says when
    # the answer is whole, as transport.post's reader knows.
    def handler(conn, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 3\r\n\r\nabc")
        stop.wait(30)

    server = serve(handler)
    started = time.monotonic()
    assert post_through_selector(server.url, b"x", TransportOptions(timeout=5)) == b"abc"
    assert time.monotonic() - started < 2


def test_exchange_tries_the_next_address_when_one_refuses(serve):
    server = serve(reply(b"answer"))
    refused = ("127.0.0.1", free_port())
    exchange_plan = plan(server.url, b"x")
    addresses = [(socket.AF_INET, refused), (socket.AF_INET, ("127.0.0.1", server.port))]
    with selectors.DefaultSelector() as selector:
        exchange = Exchange(exchange_plan, addresses, time.monotonic() + 5, selector)
        while not exchange.done:
            for key, events in selector.select(1):
                key.data.step(events)
        assert exchange.body() == b"answer"
        assert selector.get_map() == {}  # nothing left registered


def test_exchange_refuses_https():
    with pytest.raises(ValueError, match="plain HTTP"):
        Exchange(plan("https://127.0.0.1:1/", b"x"), [], time.monotonic() + 1, selectors.DefaultSelector())


def test_a_bug_in_reading_the_answer_costs_that_exchange_alone(serve, monkeypatch):
    import engine.responders.exchange
    from engine.errors import UnexpectedError

    def broken(*args):
        raise KeyError("parser bug")

    monkeypatch.setattr(engine.responders.exchange, "read_answer", broken)
    server = serve(reply(b"abc"))
    with pytest.raises(UnexpectedError, match="KeyError"):
        post_through_selector(server.url, b"x", TransportOptions(timeout=5))
