"""The three CAs' OCSP responders, in a child process of their own.

Why a child process: the driver (monitor, readers, fault thread) is
Python too, and a responder that answers late because the driver holds
the GIL looks to the service exactly like a responder fault. The child is
started with the "spawn" method, so it inherits no thread and no lock of
the driver, whatever ran before (pytest may have started threads).

The child runs one tests.responder.ScriptedResponder per CA, each with a
stand-in for its PKI (the intermediate, the rogue and one leaf, sent as
PEM through the Pipe: the child never needs the PKI's files). Commands go
through a multiprocessing Pipe, one (command, args) tuple at a time, and
each gets an answer:

    ("ports",)                        -> [port, port, port]   (bound at start)
    ("pki", ca, material)             -> "ok"   (material: PEM bytes, see material())
    ("good", ca, validity)            -> "ok"   (the default: issuer-signed, `validity` s)
    ("behave", ca, kwargs)            -> "ok"   (Behaviour(**kwargs) for every request)
    ("flap", ca, period, kwargs)      -> "ok"   (good and Behaviour(**kwargs) alternate)
    ("spread", ca, validity, offsets) -> "ok"   (per serial: thisUpdate `offset` s ago, same validity)
    ("unspread", ca)                  -> "ok"   (every serial back to the default)
    ("counts",)                       -> [requests, requests, requests]
    ("stop",)                         -> "ok", then the child exits
"""

from __future__ import annotations

import multiprocessing
import threading
from types import SimpleNamespace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

CAS = 3


def material(pki: Any) -> dict[str, bytes]:
    """What the child needs of one PKI to sign: the issuer and the rogue, with keys."""

    def pem(issued: Any) -> tuple[bytes, bytes]:
        return (
            issued.cert.public_bytes(serialization.Encoding.PEM),
            issued.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )

    return {"intermediate": pem(pki.intermediate), "rogue": pem(pki.rogue), "good": pem(pki.good)}


def _stand_in(data: dict[str, tuple[bytes, bytes]]) -> SimpleNamespace:
    def load(pair: tuple[bytes, bytes]) -> SimpleNamespace:
        cert_pem, key_pem = pair
        return SimpleNamespace(
            cert=x509.load_pem_x509_certificate(cert_pem),
            key=serialization.load_pem_private_key(key_pem, password=None),
        )

    return SimpleNamespace(**{name: load(pair) for name, pair in data.items()})


class _Flapper:
    """Switches one responder between good and bad every `period` seconds."""

    def __init__(self, responder: Any, good: Any, bad: Any, period: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(responder, good, bad, period), daemon=True)
        self._thread.start()

    def _run(self, responder: Any, good: Any, bad: Any, period: float) -> None:
        healthy = False
        while not self._stop.is_set():
            healthy = not healthy
            responder.default = good if healthy else bad
            self._stop.wait(period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _child(conn: Any, log_path: str | None) -> None:  # runs in the spawned process
    import os

    from tests.responder import Behaviour, ScriptedResponder

    if log_path:
        # A held ("hanging") answer is written after its client gave up:
        # http.server prints each BrokenPipeError. Kept in a file, not on
        # the run's terminal.
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)

    responders = [ScriptedResponder() for _ in range(CAS)]
    good: list[Any] = [Behaviour() for _ in range(CAS)]
    flappers: list[_Flapper | None] = [None] * CAS
    spread: list[list[int]] = [[] for _ in range(CAS)]

    def unflap(ca: int) -> None:
        if flappers[ca] is not None:
            flappers[ca].stop()
            flappers[ca] = None

    while True:
        command, *args = conn.recv()
        try:
            if command == "ports":
                conn.send([r.port for r in responders])
            elif command == "pki":
                ca, data = args
                responders[ca].pki = _stand_in(data)
                responders[ca].start()
                conn.send("ok")
            elif command == "good":
                ca, validity = args
                unflap(ca)
                good[ca] = Behaviour(this_update_offset=-1, next_update_offset=validity)
                responders[ca].default = good[ca]
                conn.send("ok")
            elif command == "behave":
                ca, kwargs = args
                unflap(ca)
                responders[ca].default = Behaviour(**kwargs)
                conn.send("ok")
            elif command == "flap":
                ca, period, kwargs = args
                unflap(ca)
                flappers[ca] = _Flapper(responders[ca], good[ca], Behaviour(**kwargs), period)
                conn.send("ok")
            elif command == "spread":
                ca, validity, offsets = args
                for serial, offset in offsets.items():
                    responders[ca].script(serial, Behaviour(this_update_offset=offset, next_update_offset=validity + offset))
                spread[ca] = list(offsets)
                conn.send("ok")
            elif command == "unspread":
                (ca,) = args
                for serial in spread[ca]:
                    responders[ca].script(serial, None)
                spread[ca] = []
                conn.send("ok")
            elif command == "counts":
                conn.send([r.request_count for r in responders])
            elif command == "stop":
                for ca in range(CAS):
                    unflap(ca)
                for responder in responders:
                    if responder.pki is not None:
                        responder.stop()
                conn.send("ok")
                return
            else:
                conn.send(f"error: unknown command {command!r}")
        except Exception as exc:  # answer, so the driver never waits for ever
            conn.send(f"error: {type(exc).__name__}: {exc}")


class ResponderFarm:
    """The driver's side: start the child, then script its responders."""

    def __init__(self, log_path: str | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._lock = threading.Lock()  # one exchange at a time on the Pipe
        self.process = ctx.Process(target=_child, args=(child_conn, log_path), name="soak-responders", daemon=True)
        self.process.start()
        child_conn.close()
        self.ports: list[int] = self._ask("ports")

    def url(self, ca: int) -> str:
        return f"http://127.0.0.1:{self.ports[ca]}/"

    def _ask(self, *message: Any) -> Any:
        with self._lock:
            self._conn.send(message)
            if not self._conn.poll(30):
                raise RuntimeError(f"the responder process did not answer {message[0]!r} within 30 s")
            answer = self._conn.recv()
        if isinstance(answer, str) and answer.startswith("error"):
            raise RuntimeError(f"responder process: {answer}")
        return answer

    def start_ca(self, ca: int, pki: Any, validity: int) -> None:
        self._ask("pki", ca, material(pki))
        self.good(ca, validity)

    def good(self, ca: int, validity: int) -> None:
        self._ask("good", ca, validity)

    def behave(self, ca: int, **kwargs: Any) -> None:
        self._ask("behave", ca, kwargs)

    def flap(self, ca: int, period: float, **kwargs: Any) -> None:
        self._ask("flap", ca, period, kwargs)

    def spread(self, ca: int, validity: int, offsets: dict[int, float]) -> None:
        self._ask("spread", ca, validity, offsets)

    def unspread(self, ca: int) -> None:
        self._ask("unspread", ca)

    def counts(self) -> list[int]:
        return self._ask("counts")

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self._ask("stop")
            except (RuntimeError, OSError, EOFError):
                pass
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
