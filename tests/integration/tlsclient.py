"""A TLS client that asks for a staple and returns its exact bytes.

Python's ssl module cannot read a stapled OCSP response; pyOpenSSL's
client OCSP callback hands over the raw DER, so tests compare bytes with
what staplectl stored instead of parsing `openssl s_client` text.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL


@dataclass
class Handshake:
    #: the stapled OCSPResponse DER, or None when the server stapled nothing
    staple: bytes | None
    #: from connect() to the end of the handshake
    seconds: float
    certificate: x509.Certificate


def handshake(port: int, server_name: str, *, timeout: float = 15.0, host: str = "127.0.0.1") -> Handshake:
    """One TLS handshake with SNI ``server_name`` and status_request; no verification."""
    stapled: list[bytes] = []

    def on_staple(conn: SSL.Connection, der: bytes, data: object) -> bool:
        stapled.append(der)
        return True  # judging the staple is the test's job, not the handshake's

    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE, lambda *args: True)
    ctx.set_ocsp_client_callback(on_staple)
    started = time.monotonic()
    deadline = started + timeout
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        # pyOpenSSL on a socket with a timeout raises WantRead instead of
        # blocking: drive the handshake ourselves, bounded by the deadline.
        sock.setblocking(False)
        conn = SSL.Connection(ctx, sock)
        conn.set_tlsext_host_name(server_name.encode())
        conn.request_ocsp()
        conn.set_connect_state()
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                readable, writable = [sock], []
            except SSL.WantWriteError:
                readable, writable = [], [sock]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"TLS handshake with {server_name} on port {port}: no end within {timeout} s")
            select.select(readable, writable, [], left)
        seconds = time.monotonic() - started
        peer = conn.get_peer_certificate()
        assert peer is not None
    finally:
        sock.close()
    # An empty status extension (server has none) arrives as b"": no staple.
    return Handshake(stapled[0] if stapled and stapled[0] else None, seconds, peer.to_cryptography())
