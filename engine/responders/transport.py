"""Talking to an OCSP responder over HTTP.

One POST (or an RFC 5019 GET) with a total deadline: connect, send and read
together, however the responder dribbles its bytes. A slow responder must
never hold a caller longer than the deadline, since the caller may be a
request path with a handshake waiting. The body is capped, the Content-Type
checked, and redirects are not followed (a responder that redirects is
misconfigured, and following one would let it send us anywhere).

The exchange is one request on one connection (``Connection: close``), so
the HTTP/1.1 it needs is small and written here over the socket: a status
line, header fields, and a body framed by Content-Length, chunked coding or
the end of the connection (RFC 9112 6.3). http.client did the same with
more than twice the CPU per request (a file object over the socket, the
email package to parse header fields), and a warm of 10,000 certificates
felt it.
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from engine.errors import (
    ContentTypeError,
    FetchError,
    RedirectRefusedError,
    ResponderAddressError,
    ResponderHTTPError,
    ResponderTimeoutError,
    ResponderUnreachableError,
    ResponseTooLargeError,
)
from engine.responders.addresses import refusal
from engine.responders.http_request import (  # the request side, re-exported for the callers of post
    DEFAULT_MAX_SIZE, DEFAULT_TIMEOUT, OCSP_RESPONSE_TYPE, Plan, TransportOptions, check_url, plan,
)
from engine.responders.proxy import connect_request

__all__ = [
    "DEFAULT_MAX_SIZE", "DEFAULT_TIMEOUT", "Plan", "TransportOptions", "check_url", "plan", "post", "resolve",
    "fetch_error", "read_answer", "BufferReader", "NeedMore",
]  # fmt: skip

#: limits on what precedes the body (http.client's own)
MAX_LINE = 65536
MAX_HEADERS = 100

_RECV = 65536


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline reached")
        return left


class _ProtocolError(Exception):
    """The responder's bytes are not an HTTP/1.x response."""


_tls_context: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def _tls() -> ssl.SSLContext:
    # One context for every request: building one loads the system's CA
    # store, which costs more than the whole exchange. Contexts are safe to
    # share between threads.
    global _tls_context
    with _tls_lock:
        if _tls_context is None:
            _tls_context = ssl.create_default_context()
        return _tls_context


def _connect(exchange: Plan, deadline: _Deadline) -> socket.socket:
    """A socket connected to the first address of the host that answers (as
    socket.create_connection does), only ever to an address the policy allows."""
    last: OSError | None = None
    for family, address in resolve(exchange):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(deadline.remaining())
            sock.connect(address)
            break
        except OSError as exc:
            sock.close()
            last = exc
    else:
        raise last or OSError(errno.EHOSTUNREACH, "no address to connect to")
    if not exchange.tls:
        return sock
    try:
        if exchange.proxy is not None:
            _tunnel(sock, exchange, deadline)
        # the handshake as a whole is bounded by this timeout
        sock.settimeout(deadline.remaining())
        return _tls().wrap_socket(sock, server_hostname=exchange.host)
    except BaseException:
        sock.close()
        raise


def _tunnel(sock: socket.socket, exchange: Plan, deadline: _Deadline) -> None:
    """CONNECT through the proxy to the https responder; raise unless it says 200."""
    assert exchange.proxy is not None
    sock.settimeout(deadline.remaining())
    sock.sendall(connect_request(exchange.host, exchange.port, exchange.proxy))
    reader = _Reader(sock, deadline)
    response = _read_head(reader)
    if response.status != 200:
        raise ResponderHTTPError(
            f"responder {exchange.label}: the proxy answered HTTP {response.status} {response.reason} "
            "to CONNECT".replace("  ", " "),
            response.status,
        )
    if reader.pos < len(reader.buf):
        raise _ProtocolError("the proxy sent bytes after its answer to CONNECT")


def resolve(exchange: Plan) -> list[tuple[int, Any]]:
    """The (family, sockaddr) pairs to try for what the plan connects to (its
    host, or its proxy), those the address policy refuses left out
    (engine.responders.addresses); the FetchError saying why when none is left.
    The operator's proxy is not held to the policy."""
    try:
        infos = socket.getaddrinfo(exchange.connect_host, exchange.connect_port, type=socket.SOCK_STREAM)
    except OSError as exc:
        error = fetch_error(exc, exchange)
        raise (error or ResponderUnreachableError(f"responder {exchange.label}: {exc}")) from None
    if exchange.proxy is not None:
        return [(family, address) for family, _, _, _, address in infos]
    usable, refused = [], []
    for family, _, _, _, address in infos:
        why = refusal(address[0], exchange.allow)
        if why is None:
            usable.append((family, address))
        else:
            refused.append(f"{address[0]} is {why}")
    if not usable:
        raise ResponderAddressError(
            f"responder {exchange.url}: refused: {'; '.join(dict.fromkeys(refused))} "
            "(allow it in responder.allow if it really is your responder)"
        )
    return usable


class _Reader:
    """Reads a response from a socket, every wait bounded by the deadline."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.pos = 0
        self.eof = False

    def _fill(self, size: int = _RECV) -> bool:
        """Read more into the buffer; False at the end of the connection."""
        if self.eof:
            return False
        self.sock.settimeout(self.deadline.remaining())
        data = self.sock.recv(size)
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + data
        self.pos = 0
        return True

    def line(self) -> bytes:
        """The next line with its end (as http.client's readline), b"" at the end."""
        while True:
            end = self.buf.find(b"\n", self.pos)
            if end >= 0:
                end += 1
                break
            if len(self.buf) - self.pos > MAX_LINE or not self._fill():
                end = len(self.buf)
                break
        if end - self.pos > MAX_LINE:
            raise _ProtocolError(f"a line of the response is longer than {MAX_LINE} bytes")
        line, self.pos = self.buf[self.pos : end], end
        return line

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes: fewer only when the connection ends first."""
        while len(self.buf) - self.pos < size and self._fill(max(_RECV, size - (len(self.buf) - self.pos))):
            pass
        data = self.buf[self.pos : self.pos + size]
        self.pos += len(data)
        return data


@dataclass
class _Response:
    status: int
    reason: str
    #: field names in lower case; each with every value, in order
    fields: dict[str, list[str]]

    def header(self, name: str, default: str | None = None) -> str | None:
        """All values of a field joined by ", " (http.client's getheader)."""
        values = self.fields.get(name.lower())
        return ", ".join(values) if values else default


def _status_line(reader: _Reader) -> tuple[int, str]:
    raw = reader.line()
    if not raw:
        raise _ProtocolError("Remote end closed connection without response")
    line = raw.decode("iso-8859-1")
    parts = line.split(None, 2)
    if (
        len(parts) < 2 or not parts[0].startswith("HTTP/")
        or not (_decimal(parts[1]) is not None and len(parts[1]) == 3 and parts[1][0] != "0")
    ):
        raise _ProtocolError(f"not an HTTP status line: {line.strip()[:80]!r}")
    return int(parts[1]), parts[2].strip() if len(parts) > 2 else ""


def _decimal(text: str) -> int | None:
    """A status code or Content-Length as a number, None when it is not one.

    ASCII digits only: str.isdigit also takes "²" and "³" (the latin-1
    bytes 0xB2, 0xB3), which int() refuses. Past 4,300 digits int() refuses
    the text too: a length that long only ever means "too large", and is
    read as 10**40, which is.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= 40 else 10**40


def _fields(reader: _Reader) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    last: list[str] | None = None
    for _ in range(MAX_HEADERS + 1):
        line = reader.line().decode("iso-8859-1")
        if line in ("\r\n", "\n", ""):
            return fields
        if line[0] in " \t" and last is not None:  # obsolete line folding
            last[-1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise _ProtocolError(f"not an HTTP header field: {line.strip()[:80]!r}")
        last = fields.setdefault(name.strip().lower(), [])
        last.append(value.strip())
    raise _ProtocolError(f"got more than {MAX_HEADERS} headers")


def _read_head(reader: _Reader) -> _Response:
    while True:
        status, reason = _status_line(reader)
        fields = _fields(reader)
        # interim responses (100 Continue and the like) precede the real one
        if not 100 <= status < 200 or status == 101:
            return _Response(status, reason, fields)


def _read_chunked(reader: _Reader, cap: int) -> bytes:
    """A chunked body (RFC 9112 7.1), or as much as shows it exceeds ``cap``."""
    chunks = []
    total = 0
    while True:
        line = reader.line()
        if not line:
            raise _ProtocolError("connection closed in the middle of a chunked body")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
        if size < 0:
            raise _ProtocolError(f"bad chunk size {size_text[:20]!r}")
        if size == 0:
            return b"".join(chunks)  # trailer fields, if any, are not needed
        take = min(size, cap + 1 - total)
        data = reader.read(take)
        if len(data) < take:
            raise _ProtocolError("connection closed in the middle of a chunked body")
        chunks.append(data)
        total += len(data)
        if total > cap:
            return b"".join(chunks)
        reader.read(size - take)
        if reader.line().strip():
            raise _ProtocolError("a chunk of the body is longer than its size says")


def post(url: str, request_der: bytes, options: TransportOptions = TransportOptions()) -> bytes:
    """Send an OCSP request and return the response body, or raise a FetchError."""
    exchange = plan(url, request_der, options)
    deadline = _Deadline(options.timeout)
    sock = None
    try:
        sock = _connect(exchange, deadline)
        sock.settimeout(deadline.remaining())
        sock.sendall(exchange.payload)
        reader = _Reader(sock, deadline)
        return read_answer(exchange.label, reader, options.max_size)
    except Exception as exc:
        error = fetch_error(exc, exchange)
        if error is None:
            raise
        raise error from None
    finally:
        if sock is not None:
            sock.close()


def fetch_error(exc: BaseException, exchange: Plan) -> FetchError | None:
    """The FetchError that tells an operator what went wrong, for what the
    socket, TLS or the parser raised; None for anything else (a bug)."""
    url = exchange.label
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ResponderTimeoutError(f"responder {url}: no complete answer within {exchange.timeout:g} s")
    if isinstance(exc, ssl.SSLError):
        return ResponderUnreachableError(f"responder {url}: TLS failed: {exc.reason or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return ResponderUnreachableError(f"responder {url}: connection refused")
    if isinstance(exc, socket.gaierror):
        return ResponderUnreachableError(f"responder {url}: cannot resolve {exchange.connect_host!r}: {exc.strerror}")
    if isinstance(exc, (OSError, _ProtocolError)):
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return ResponderUnreachableError(f"responder {url}: {detail}")
    return None


class NeedMore(Exception):
    """The bytes so far end before the answer does (engine.responders.exchange reads on)."""


class BufferReader(_Reader):
    """A _Reader over the bytes received so far, for a non-blocking exchange:
    past their end it raises NeedMore, or, once the connection has ended,
    says so as _Reader does."""

    def __init__(self, data: bytes, eof: bool) -> None:
        self.buf = data
        self.pos = 0
        self.eof = eof

    def _fill(self, size: int = _RECV) -> bool:
        if self.eof:
            return False
        raise NeedMore


def read_answer(url: str, reader: _Reader, max_size: int) -> bytes:
    """The OCSP body of the response ``reader`` holds, or a FetchError."""
    return _read_body(url, _read_head(reader), reader, max_size)


def _read_body(url: str, response: _Response, reader: _Reader, max_size: int) -> bytes:
    if 300 <= response.status < 400:
        location = response.header("Location", "(no Location)")
        raise RedirectRefusedError(
            f"responder {url}: answered HTTP {response.status} redirecting to {location}; "
            "redirects are not followed: point the certificate (or --url) at the final URL"
        )
    if response.status != 200:
        raise ResponderHTTPError(
            f"responder {url}: answered HTTP {response.status} {response.reason}".rstrip(),
            response.status,
        )
    content_type = (response.header("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != OCSP_RESPONSE_TYPE:
        raise ContentTypeError(
            f"responder {url}: Content-Type is {content_type or '(none)'!r}, expected {OCSP_RESPONSE_TYPE!r}"
        )
    length = response.header("Content-Length") or ""
    declared = _decimal(length)
    if declared is not None and declared > max_size:
        size = f"{declared}" if len(length) <= 20 else f"a {len(length)}-digit number of"
        raise ResponseTooLargeError(f"responder {url}: response of {size} bytes exceeds the cap of {max_size} bytes")
    coding = response.header("Transfer-Encoding")
    if coding and coding.lower() == "chunked":
        body = _read_chunked(reader, max_size)
    else:
        # Content-Length frames the body; without one (or with a bad one)
        # the end of the connection does. A body cut short is returned as
        # it is (as http.client did): validation then says it is malformed.
        framed = _decimal((response.fields.get("content-length") or [""])[0])
        body = reader.read(max_size + 1 if framed is None else min(framed, max_size + 1))
    if len(body) > max_size:
        raise ResponseTooLargeError(f"responder {url}: response exceeds the cap of {max_size} bytes")
    return body
