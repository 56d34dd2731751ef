"""Reaching responders through an outbound HTTP proxy.

Where a host may reach the Internet only through a forward proxy, as
HAProxy's ``ocsp-update.httpproxy`` and ``openssl ocsp -proxy`` allow:

- a plain ``http`` responder is asked through the proxy with the request
  line in absolute form (``POST http://ocsp.example/ HTTP/1.1``, RFC 9112
  3.2.2): the proxy connects and forwards;
- an ``https`` responder through a ``CONNECT host:port`` tunnel, then TLS
  to the responder itself, end to end.

The proxy is the operator's, so its own address is not held to the
responder address policy (engine.responders.addresses); a responder named
by an IP literal still is. A responder named by a host name is resolved by
the proxy, out of our sight: the proxy's own rules decide where it may
connect. ``no_proxy`` names the hosts asked directly.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from engine.errors import ResponderURLError
from engine.redact import redact


@dataclass(frozen=True)
class Proxy:
    """A forward proxy: where to connect, and the Proxy-Authorization to send."""

    #: the proxy's URL with its password hidden, for messages
    shown: str
    host: str
    port: int
    #: the Proxy-Authorization field's value (Basic), or None
    authorization: str | None = None


def parse_proxy(url: str, what: str = "proxy") -> Proxy:
    """``http://[user:password@]host[:port]`` (port 80 by default, as a URL's),
    or the ResponderURLError naming ``what`` and what is wrong."""
    shown = redact(url)
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port
    except ValueError as exc:
        raise ResponderURLError(f"{what} {shown!r}: {exc}") from None
    if parts.scheme != "http":
        raise ResponderURLError(
            f"{what} {shown!r}: scheme {parts.scheme!r} is not supported (an http:// proxy, which tunnels https)"
        )
    if not parts.hostname or (parts.path not in ("", "/")) or parts.query:
        raise ResponderURLError(f"{what} {shown!r}: expected http://[user:password@]host[:port]")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return Proxy(redact(f"http://{parts.netloc}"), parts.hostname, port or 80, authorization)


@dataclass(frozen=True)
class ProxySettings:
    """Which proxy each responder scheme goes through, and the hosts that go direct."""

    #: scheme ("http", "https") -> proxy
    proxies: tuple[tuple[str, Proxy], ...] = ()
    #: host names (a leading dot or none: the domain and every name under it),
    #: IP addresses or networks, or "*" (every host)
    no_proxy: tuple[str, ...] = ()

    def for_url(self, scheme: str, host: str) -> Proxy | None:
        proxy = dict(self.proxies).get(scheme)
        if proxy is None or bypassed(host, self.no_proxy):
            return None
        return proxy


def bypassed(host: str, no_proxy: tuple[str, ...]) -> bool:
    """Does ``host`` go direct, as curl and Python read NO_PROXY?"""
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in no_proxy:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = entry.lstrip(".").rsplit(":", 1)[0] if entry.count(":") == 1 else entry.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def parse_no_proxy(value: str) -> tuple[str, ...]:
    """NO_PROXY's comma-separated list."""
    return tuple(entry.strip() for entry in value.split(",") if entry.strip())


def connect_request(host: str, port: int, proxy: Proxy) -> bytes:
    """The CONNECT that opens a tunnel to an https responder."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
