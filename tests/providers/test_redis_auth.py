"""redis credentials and TLS, on real servers: an ACL user, a password from a
file or the environment (never needed in the URI), rediss:// with the
server's certificate verified, and the password never printed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.errors import CacheUnavailableError, CacheURIError
from engine.store.providers import PASSWORD_ENV, open_provider
from tests.conftest import SECRET
from tests.providers.contract import cert_id, der_for
from tests.servers import find_binary, free_port


def roundtrip(uri: str) -> None:
    provider = open_provider(uri)
    try:
        provider.set(cert_id("auth"), der_for("auth"), 600)
        assert provider.get(cert_id("auth")).der == der_for("auth")
    finally:
        provider.close()


def test_an_acl_user_and_password_in_the_uri(redis_server, acl_user):
    roundtrip(f"redis://{acl_user}:{SECRET}@{redis_server.host}:{redis_server.port}/0")


def test_a_wrong_password_fails_without_showing_it(redis_server, acl_user):
    provider = open_provider(f"redis://{acl_user}:wrong-{SECRET}@{redis_server.host}:{redis_server.port}/0")
    with pytest.raises(CacheUnavailableError) as info:
        provider.get(cert_id("auth"))
    assert SECRET not in str(info.value) and "wrong-" not in provider.uri
    assert provider.uri == f"redis://{acl_user}:***@{redis_server.host}:{redis_server.port}/0"


def test_the_password_from_a_file(redis_server, acl_user, tmp_path):
    secret = tmp_path / "redis.pass"
    secret.write_text(SECRET + "\n")
    roundtrip(f"redis://{acl_user}@{redis_server.host}:{redis_server.port}/0?password_file={secret}")


def test_a_password_file_that_cannot_be_read_is_bad_input(redis_server, tmp_path):
    with pytest.raises(CacheURIError, match="password_file .*missing: No such file or directory"):
        open_provider(f"redis://{redis_server.host}:{redis_server.port}/0?password_file={tmp_path / 'missing'}")


def test_the_password_from_the_environment(redis_server, acl_user, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    roundtrip(f"redis://{acl_user}@{redis_server.host}:{redis_server.port}/0")


# -- TLS -----------------------------------------------------------------------


def _tls_material(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(server.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_redis(tmp_path) -> Iterator[tuple[int, Path]]:
    binary = find_binary("redis-server", "redis-server")
    ca, cert, key = _tls_material(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", tempfile.mkdtemp()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca)).ping()
            break
        except redis.RedisError:
            assert time.monotonic() < deadline and proc.poll() is None, "redis with TLS did not start"
            time.sleep(0.05)
    yield port, ca
    proc.terminate()
    proc.wait(10)


def test_rediss_verifies_the_server_and_works(tls_redis):
    port, ca = tls_redis
    roundtrip(f"rediss://127.0.0.1:{port}/0?ca_file={ca}")


def test_rediss_refuses_a_server_it_cannot_verify(tls_redis):
    port, _ = tls_redis
    provider = open_provider(f"rediss://127.0.0.1:{port}/0")  # the system's CAs do not know the test CA
    with pytest.raises(CacheUnavailableError, match="certificate verify failed"):
        provider.get(cert_id("tls"))


def test_plain_redis_to_a_tls_port_fails_clearly(tls_redis):
    port, _ = tls_redis
    provider = open_provider(f"redis://127.0.0.1:{port}/0?timeout=2")
    with pytest.raises(CacheUnavailableError, match=f"redis at 127.0.0.1:{port}"):
        provider.get(cert_id("plain"))


def test_ca_file_is_for_rediss_only(redis_server):
    with pytest.raises(CacheURIError, match="unknown option 'ca_file'"):
        open_provider(f"redis://{redis_server.host}:{redis_server.port}/0?ca_file=/etc/ssl/ca.pem")

