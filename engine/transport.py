"""Talking to an OCSP responder over HTTP.

One POST (or an RFC 5019 GET) with a total deadline: connect, send and read
together, however the responder dribbles its bytes. A slow responder must
never hold a caller longer than the deadline, since the caller may be a
request path with a handshake waiting. The body is capped, the Content-Type
checked, and redirects are not followed (a responder that redirects is
misconfigured, and following one would let it send us anywhere).
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from engine.errors import (
    ContentTypeError,
    RedirectRefusedError,
    ResponderHTTPError,
    ResponderTimeoutError,
    ResponderUnreachableError,
    ResponderURLError,
    ResponseTooLargeError,
)

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
USER_AGENT = "staplectl/0.1"

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_SIZE = 64 * 1024
#: RFC 5019 2.1.1: GET only when the encoded request is under 255 bytes
GET_MAX_URL = 255


@dataclass(frozen=True)
class TransportOptions:
    timeout: float = DEFAULT_TIMEOUT
    max_size: int = DEFAULT_MAX_SIZE
    use_get: bool = False


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline reached")
        return left


class _DeadlineSocket(socket.socket):
    """A socket whose every wait is bounded by what is left of the deadline.

    http.client reads through ``recv_into`` and writes through ``sendall``;
    setting the timeout before each call turns per-call timeouts into one
    total deadline.
    """

    deadline: _Deadline

    def recv_into(self, *args, **kwargs):  # type: ignore[override]
        self.settimeout(self.deadline.remaining())
        return super().recv_into(*args, **kwargs)

    def sendall(self, *args, **kwargs):  # type: ignore[override]
        self.settimeout(self.deadline.remaining())
        return super().sendall(*args, **kwargs)


class _DeadlineSSLSocket(ssl.SSLSocket):
    deadline: _Deadline

    def recv_into(self, *args, **kwargs):  # type: ignore[override]
        self.settimeout(self.deadline.remaining())
        return super().recv_into(*args, **kwargs)

    def sendall(self, *args, **kwargs):  # type: ignore[override]
        self.settimeout(self.deadline.remaining())
        return super().sendall(*args, **kwargs)


class _Connection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, deadline: _Deadline, tls: bool) -> None:
        super().__init__(host, port or (443 if tls else 80))
        self._deadline = deadline
        self._tls = tls

    def connect(self) -> None:
        plain = socket.create_connection((self.host, self.port), timeout=self._deadline.remaining())
        sock = _DeadlineSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.deadline = self._deadline
        if self._tls:
            context = ssl.create_default_context()
            context.sslsocket_class = _DeadlineSSLSocket
            sock.settimeout(self._deadline.remaining())
            tls_sock = context.wrap_socket(sock, server_hostname=self.host)
            tls_sock.deadline = self._deadline  # type: ignore[attr-defined]
            self.sock = tls_sock
        else:
            self.sock = sock


def check_url(url: str) -> tuple[str, str, int | None, str]:
    """Split a responder URL, refusing anything but http and https."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ResponderURLError(f"responder URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ResponderURLError(
            f"responder URL {url!r}: scheme {parts.scheme or '(none)'!r} is not allowed (only http and https)"
        )
    if not parts.hostname:
        raise ResponderURLError(f"responder URL {url!r}: no host")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


def post(url: str, request_der: bytes, options: TransportOptions = TransportOptions()) -> bytes:
    """Send an OCSP request and return the response body, or raise a FetchError."""
    scheme, host, port, path = check_url(url)
    deadline = _Deadline(options.timeout)
    method, body = "POST", request_der
    if options.use_get:
        encoded = quote(base64.b64encode(request_der).decode(), safe="")
        get_path = path.rstrip("/") + "/" + encoded
        if len(get_path) <= GET_MAX_URL:
            method, body, path = "GET", b"", get_path
    conn = _Connection(host, port, deadline, tls=scheme == "https")
    try:
        headers = {"User-Agent": USER_AGENT, "Accept": OCSP_RESPONSE_TYPE, "Connection": "close"}
        if method == "POST":
            headers["Content-Type"] = OCSP_REQUEST_TYPE
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return _read_body(url, response, options.max_size)
    except (socket.timeout, TimeoutError):
        raise ResponderTimeoutError(
            f"responder {url}: no complete answer within {options.timeout:g} s"
        ) from None
    except ssl.SSLError as exc:
        raise ResponderUnreachableError(f"responder {url}: TLS failed: {exc.reason or exc}") from None
    except ConnectionRefusedError:
        raise ResponderUnreachableError(f"responder {url}: connection refused") from None
    except socket.gaierror as exc:
        raise ResponderUnreachableError(f"responder {url}: cannot resolve {host!r}: {exc.strerror}") from None
    except (OSError, http.client.HTTPException) as exc:
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ResponderUnreachableError(f"responder {url}: {detail}") from None
    finally:
        conn.close()


def _read_body(url: str, response: http.client.HTTPResponse, max_size: int) -> bytes:
    if 300 <= response.status < 400:
        location = response.getheader("Location", "(no Location)")
        raise RedirectRefusedError(
            f"responder {url}: answered HTTP {response.status} redirecting to {location}; "
            "redirects are not followed: point the certificate (or --url) at the final URL"
        )
    if response.status != 200:
        raise ResponderHTTPError(
            f"responder {url}: answered HTTP {response.status} {response.reason}".rstrip(),
            response.status,
        )
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != OCSP_RESPONSE_TYPE:
        raise ContentTypeError(
            f"responder {url}: Content-Type is {content_type or '(none)'!r}, expected {OCSP_RESPONSE_TYPE!r}"
        )
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > max_size:
        raise ResponseTooLargeError(
            f"responder {url}: response of {int(length)} bytes exceeds the cap of {max_size} bytes"
        )
    body = response.read(max_size + 1)
    if len(body) > max_size:
        raise ResponseTooLargeError(f"responder {url}: response exceeds the cap of {max_size} bytes")
    return body
