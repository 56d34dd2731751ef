"""The HTTP transport over TLS: a responder whose certificate verifies is
answered, one whose certificate does not fails in the handshake.

A one-connection-at-a-time TLS server on loopback, with a certificate made
here. Through transport.post alone: the non-blocking exchange
(engine.responders.exchange) speaks plain HTTP only, and refuses https
(tests/test_transport.py).
"""

from __future__ import annotations

import socket
import threading

import pytest

from engine.errors import ResponderUnreachableError
from tests.test_transport import post


@pytest.fixture
def tls_server(tmp_path):
    """start(answer) -> URL of a one-connection-at-a-time TLS server on 127.0.0.1
    that reads a request and sends ``answer``; and the CA file that trusts it."""
    import datetime as dt
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "tls.pem", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    listeners = []

    def start(answer: bytes) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(5)
        listeners.append(listener)

        def serve_one() -> None:
            try:
                conn, _ = listener.accept()
                with context.wrap_socket(conn, server_side=True) as tls:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += tls.recv(4096)
                    tls.sendall(answer)
            except (OSError, ssl.SSLError):
                pass  # the untrusted case: the client gives up in the handshake

        threading.Thread(target=serve_one, daemon=True).start()
        return f"https://127.0.0.1:{listener.getsockname()[1]}/"

    yield start, cert_path
    for listener in listeners:
        listener.close()


TLS_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 8\r\n\r\nover tls"


def test_https_through_a_trusted_certificate(tls_server, monkeypatch):
    import ssl

    from engine.responders import transport

    start, ca = tls_server
    monkeypatch.setattr(transport, "_tls_context", ssl.create_default_context(cafile=str(ca)))
    assert post(start(TLS_ANSWER), b"x") == b"over tls"


def test_https_with_an_untrusted_certificate(tls_server):
    start, _ = tls_server
    with pytest.raises(ResponderUnreachableError, match="TLS failed: CERTIFICATE_VERIFY_FAILED"):
        post(start(TLS_ANSWER), b"x")
