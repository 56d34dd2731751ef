"""What a TLS server really staples: one handshake asking for a staple.

The cache may be fresh while a server goes on stapling something else: an
nginx that was not reloaded, a HAProxy that loaded its ``.ocsp`` file at
start, an httpd reading another cache. Only a handshake tells, as a client
would see it: with SNI and the status_request extension (RFC 6066 8), in
TLS 1.2 or 1.3. Python's ssl module can neither ask for a staple nor read
one; pyOpenSSL's client OCSP callback hands over the stapled DER as sent.

The staple is then judged as a client would: against the certificate the
server presented and its issuer from the chain it served.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL

from engine.clock import iso
from engine.errors import InputError, StapleError, ValidationError
from engine.ocsp.certs import Leaf
from engine.ocsp.issuers import find_issuer
from engine.ocsp.staple import Staple
from engine.ocsp.validate import ValidationOptions, validate
from engine.refresh.freshness import FreshnessPolicy, expires_at, is_usable

DEFAULT_PORT = 443


class ProbeError(StapleError):
    """The handshake did not happen: nothing to say about the staple."""

    reason = "probe_failed"


class ProbeTimeoutError(ProbeError):
    reason = "timeout"


@dataclass(frozen=True)
class Stapled:
    """What one handshake brought back."""

    #: host:port, as asked
    server: str
    servername: str
    #: the stapled OCSPResponse as sent, or None when the server stapled nothing
    der: bytes | None
    #: the certificates as served, the server's own first
    chain: tuple[x509.Certificate, ...]
    seconds: float

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]


def split_server(text: str) -> tuple[str, int]:
    """HOST[:PORT] or [IPv6]:PORT, or the InputError saying what is wrong."""
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(text, rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        port = _port(text, number)
    if not host or any(c.isspace() or not c.isprintable() for c in host):
        raise InputError(f"{text!r}: expected HOST[:PORT]")
    return host, port


def _port(text: str, number: str) -> int:
    if not number.isdigit() or not 0 < int(number) < 65536:
        raise InputError(f"{text!r}: the port must be a number from 1 to 65535")
    return int(number)


def handshake(host: str, port: int, servername: str, timeout: float) -> Stapled:
    """One TLS handshake with SNI ``servername`` asking for a staple; no
    certificate verification (the staple is judged, not the server)."""
    stapled: list[bytes] = []

    def on_staple(conn: SSL.Connection, der: bytes, data: object) -> bool:
        stapled.append(der)
        return True  # judged afterwards, not by the handshake

    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
    context.set_ocsp_client_callback(on_staple)
    server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    started = time.monotonic()
    deadline = started + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except (socket.timeout, TimeoutError):
        raise ProbeTimeoutError(f"{server}: no connection within {timeout:g} s") from None
    except OSError as exc:
        raise ProbeError(f"{server}: cannot connect: {exc.strerror or exc}") from None
    try:
        sock.setblocking(False)  # pyOpenSSL with a socket timeout raises WantRead: drive it here
        conn = SSL.Connection(context, sock)
        conn.set_tlsext_host_name(servername.encode("idna"))
        conn.request_ocsp()
        conn.set_connect_state()
        _drive(conn, sock, deadline, server, timeout)
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
    except SSL.Error as exc:
        raise ProbeError(f"{server}: TLS handshake failed: {_ssl_reason(exc)}") from None
    except OSError as exc:
        raise ProbeError(f"{server}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not chain:
        raise ProbeError(f"{server}: the server presented no certificate")
    der = stapled[0] if stapled and stapled[0] else None  # an empty status: nothing stapled
    return Stapled(server, servername, der, tuple(chain), time.monotonic() - started)


def _drive(conn: SSL.Connection, sock: socket.socket, deadline: float, server: str, timeout: float) -> None:
    while True:
        try:
            conn.do_handshake()
            return
        except SSL.WantReadError:
            readable, writable = [sock], []
        except SSL.WantWriteError:
            readable, writable = [], [sock]
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProbeTimeoutError(f"{server}: no TLS handshake within {timeout:g} s")
        select.select(readable, writable, [], left)


def _ssl_reason(exc: SSL.Error) -> str:
    details = [part for item in exc.args for part in (item if isinstance(item, list) else [item])]
    texts = [entry[2] if isinstance(entry, tuple) and len(entry) == 3 else str(entry) for entry in details]
    return "; ".join(text for text in texts if text) or type(exc).__name__


@dataclass(frozen=True)
class Judgement:
    """The staple a server sent, as a client would judge it."""

    #: the certificate it answers for, with its issuer from the served chain
    #: (None: the chain lacks the issuer, so the staple cannot be checked)
    leaf: Leaf | None
    #: what the staple says (None: nothing stapled, or not even parsable)
    staple: Staple | None
    #: why a client would refuse it, or None when it would accept it
    problem: str | None
    reason: str | None

    @property
    def acceptable(self) -> bool:
        return self.staple is not None and self.problem is None


def judge(stapled: Stapled, now: float, options: ValidationOptions = ValidationOptions()) -> Judgement:
    """Validate the staple against the served certificate and chain, times included."""
    cert = stapled.certificate
    issuer = find_issuer(cert, list(stapled.chain[1:]))
    leaf = Leaf(cert=cert, issuer=issuer) if issuer is not None else None
    if stapled.der is None:
        return Judgement(leaf, None, "the server stapled nothing", "not_stapled")
    if leaf is None:
        subject = cert.subject.rfc4514_string()
        return Judgement(None, None, f"the served chain lacks the issuer of {subject}: cannot check the staple",
                         "issuer_not_served")  # fmt: skip
    try:
        staple = validate(stapled.der, leaf, now, options=options, source="stapled response", check_time=False)
    except ValidationError as error:
        return Judgement(leaf, None, str(error), error.reason)
    policy = FreshnessPolicy(skew=options.skew, max_age=options.max_age)
    if not is_usable(staple.this_update, staple.next_update, now, policy):
        end = expires_at(staple.this_update, staple.next_update, policy)
        if now >= end:  # no grace: a client whose clock is right refuses it now
            return Judgement(leaf, staple, f"the stapled response expired at {iso(end)}", "expired")
        return Judgement(leaf, staple, f"the stapled response's thisUpdate {iso(staple.this_update)} is in the "
                         "future", "not_yet_valid")  # fmt: skip
    return Judgement(leaf, staple, None, None)

