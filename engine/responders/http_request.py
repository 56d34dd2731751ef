"""What one exchange with a responder sends, and where: the request written
once, ready for engine.responders.transport (blocking) or
engine.responders.exchange (many at once on one thread).

The URL is checked here (http and https only, no control characters that
could smuggle a second request), the request line and header fields
written as http.client wrote them, and, through a proxy
(engine.responders.proxy), the target in absolute form.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from engine.errors import ResponderAddressError, ResponderURLError
from engine.responders.addresses import Network, refusal
from engine.bounds import DEFAULT_MAX_SIZE, DEFAULT_TIMEOUT
from engine.responders.proxy import Proxy, ProxySettings

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
USER_AGENT = "staplectl/0.1"

#: RFC 5019 2.1.1: GET only when the encoded request is under 255 bytes
GET_MAX_URL = 255
#: what http.client refuses in a request target or host (request smuggling)
_BAD_URL_CHARS = re.compile("[\x00-\x20\x7f]")



@dataclass(frozen=True)
class TransportOptions:
    timeout: float = DEFAULT_TIMEOUT
    max_size: int = DEFAULT_MAX_SIZE
    use_get: bool = False
    #: networks a responder may resolve to although engine.responders.addresses
    #: refuses them by default (responder.allow)
    allow: tuple[Network, ...] = ()
    #: outbound proxies (engine.responders.proxy)
    proxy: ProxySettings = ProxySettings()


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


def _request_head(
    method: str, host: str, port: int | None, tls: bool, path: str, length: int | None, proxy: Proxy | None = None
) -> bytes:
    """The request line and header fields, as http.client wrote them; through a
    proxy (plain http only: https is tunnelled), the target in absolute form."""
    host_field = f"[{host}]" if ":" in host else host
    if port is not None and port != (443 if tls else 80):
        host_field += f":{port}"
    target = f"http://{host_field}{path}" if proxy is not None and not tls else path
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {host_field}",
        "Accept-Encoding: identity",
        f"User-Agent: {USER_AGENT}",
        f"Accept: {OCSP_RESPONSE_TYPE}",
        "Connection: close",
    ]
    if length is not None:
        lines += [f"Content-Type: {OCSP_REQUEST_TYPE}", f"Content-Length: {length}"]
    if proxy is not None and proxy.authorization and not tls:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@dataclass(frozen=True)
class Plan:
    """What one exchange sends, and where: the bytes of the request, ready."""

    url: str
    host: str
    port: int
    tls: bool
    payload: bytes
    timeout: float
    max_size: int
    allow: tuple[Network, ...] = ()
    #: the proxy it goes through, if any (engine.responders.proxy)
    proxy: Proxy | None = None

    @property
    def connect_host(self) -> str:
        return self.proxy.host if self.proxy is not None else self.host

    @property
    def connect_port(self) -> int:
        return self.proxy.port if self.proxy is not None else self.port

    @property
    def label(self) -> str:
        """The responder's URL for messages, and the proxy when there is one."""
        return self.url if self.proxy is None else f"{self.url} (through proxy {self.proxy.shown})"


def plan(url: str, request_der: bytes, options: TransportOptions = TransportOptions()) -> Plan:
    """Check the URL and write the request (POST, or GET where RFC 5019 allows)."""
    scheme, host, port, path = check_url(url)
    method, body = "POST", request_der
    if options.use_get:
        encoded = quote(base64.b64encode(request_der).decode(), safe="")
        get_path = path.rstrip("/") + "/" + encoded
        if len(get_path) <= GET_MAX_URL:
            method, body, path = "GET", b"", get_path
    tls = scheme == "https"
    proxy = options.proxy.for_url(scheme, host)
    if proxy is not None:
        _check_literal(url, host, options.allow)  # a name, the proxy resolves: out of our sight
    try:
        if _BAD_URL_CHARS.search(path) or _BAD_URL_CHARS.search(host):
            raise UnicodeError
        host_field = host if host.isascii() else host.encode("idna").decode("ascii")
        head = _request_head(method, host_field, port, tls, path, len(body) if method == "POST" else None, proxy)
    except UnicodeError:
        raise ResponderURLError(
            f"responder URL {url!r}: its host or path holds a space, a control or a non-ASCII character"
        ) from None
    port = port or (443 if tls else 80)
    return Plan(url, host, port, tls, head + body, options.timeout, options.max_size, options.allow, proxy)


def _check_literal(url: str, host: str, allow: tuple[Network, ...]) -> None:
    """A responder named by an IP address is held to the address policy, proxy or not."""
    try:
        why = refusal(host, allow)
    except ValueError:
        return  # a name
    if why is not None:
        raise ResponderAddressError(
            f"responder {url}: refused: {host} is {why} (allow it in responder.allow if it really is your responder)"
        )
