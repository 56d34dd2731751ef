"""The HTTP transport: deadline, size cap, Content-Type, redirects, schemes.

A raw socket server stands in for a misbehaving responder, so each test
controls every byte (and every pause) on the wire.
"""

from __future__ import annotations

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
from engine.transport import TransportOptions, check_url, post


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
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
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
