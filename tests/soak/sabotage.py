"""Violations on purpose, to prove the harness reports them.

A soak that always passes proves nothing. `bench/soak.py --sabotage
KIND[,KIND]` (and the self-check in tests/test_soak.py) run these as extra
"faults" that excuse nothing, and expect the matching invariant to fail:

    corrupt     the stored staple of one certificate gets a flipped
                signature byte (written straight into the store)   -> invalid_stored, lapsed
    delete      one certificate's staple deleted from the store     -> vanished, lapsed
    rollback    an older (still current) genuine staple written
                over a certificate's newer one                     -> rollbacks
    expired     a genuine staple already past its nextUpdate
                written into the store                             -> expired_stored, lapsed
    sigstop     the service frozen (SIGSTOP) for most of CA A's
                validity, then SIGCONT: renewals stop               -> lapsed (healthy)

The writes go to the store the way the monitor reads it (sqlite, the
memcached/redis layout), with the CA's own key where a genuine staple is
needed: no staplectl code is involved.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import threading
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.soak.store import NAMESPACE
from tests.soak.world import CertInfo, World

KINDS = ("corrupt", "delete", "rollback", "expired", "sigstop")


def genuine_response(world: World, cert: CertInfo, this_update: float, next_update: float) -> bytes:
    intermediate = world.pkis[cert.ca].intermediate
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=cert.cert, issuer=intermediate.cert, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=dt.datetime.fromtimestamp(this_update, dt.UTC),
            next_update=dt.datetime.fromtimestamp(next_update, dt.UTC),
            revocation_time=None, revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, intermediate.cert)
        .sign(intermediate.key, hashes.SHA256())
    )  # fmt: skip
    return response.public_bytes(serialization.Encoding.DER)


class Saboteur:
    def __init__(self, world: World, reader: object, service: object) -> None:
        self.world = world
        self.reader = reader
        self.service = service

    def _write(self, cert: CertInfo, der: bytes | None) -> None:
        """Store DER (flag 0x01) for the certificate, or delete it (None)."""
        provider = self.world.settings.provider
        if provider == "local":
            conn = sqlite3.connect(self.world.store_path, timeout=10, isolation_level=None)
            try:
                if der is None:
                    conn.execute("DELETE FROM staples WHERE cert_id = ?", (cert.sha1,))
                else:
                    conn.execute("UPDATE staples SET der = ?, flag = 1 WHERE cert_id = ?", (der, cert.sha1))
            finally:
                conn.close()
            return
        key = f"{NAMESPACE}:{cert.sha1}"
        port = self.world.cache.port  # type: ignore[union-attr]
        if provider == "memcache":
            from pymemcache.client.base import Client

            client = Client(("127.0.0.1", port), timeout=2)
            client.delete(key) if der is None else client.set(key, b"\x01" + der, expire=600)
            client.close()
        else:
            import redis

            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
            client.delete(key) if der is None else client.set(key, b"\x01" + der, ex=600)
            client.close()

    def do(self, kind: str, stop: threading.Event, details: dict) -> None:
        # CA C (its staples live longest), and a certificate of its own for
        # each kind, so one sabotage never undoes or masks another
        certs = [c for c in self.world.certs.active() if c.ca == 2]
        cert = certs[(7 + 13 * KINDS.index(kind)) % len(certs)]
        details["sha1"] = cert.sha1
        now = time.time()
        if kind == "corrupt":
            stored = self.reader.read([cert.sha1]).get(cert.sha1)  # type: ignore[attr-defined]
            if stored is None:
                raise RuntimeError("sabotage corrupt: nothing stored to corrupt")
            der = bytearray(stored[1])
            der[-1] ^= 0x01  # the signature BIT STRING ends the response (no certificates follow)
            self._write(cert, bytes(der))
        elif kind == "delete":
            self._write(cert, None)
        elif kind == "rollback":
            stored = self.reader.read([cert.sha1]).get(cert.sha1)  # type: ignore[attr-defined]
            validity = self.world.settings.validity[2]
            # older than anything the responder gave, yet still current
            self._write(cert, genuine_response(self.world, cert, now - validity + 20, now + 20))
            details["had_staple"] = stored is not None
        elif kind == "expired":
            self._write(cert, genuine_response(self.world, cert, now - 200, now - 20))
        elif kind == "sigstop":
            pid = self.service.pid  # type: ignore[attr-defined]
            seconds = 0.8 * self.world.settings.validity[0]
            os.kill(pid, signal.SIGSTOP)
            try:
                stop.wait(seconds)
            finally:
                os.kill(pid, signal.SIGCONT)
            details["stopped_s"] = seconds
        else:
            raise ValueError(f"unknown sabotage {kind!r} (known: {', '.join(KINDS)})")
