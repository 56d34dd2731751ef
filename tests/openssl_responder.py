"""The real `openssl ocsp` responder, run for a test PKI's leaves.

A second opinion next to ScriptedResponder: responses built by OpenSSL, not by
the library the engine parses them with.

    with OpenSSLResponder(pki, tmp_path / "ocsp", revoked=["other"]) as responder:
        leaf = pki.leaf("late", ocsp_url=responder.url)
        responder.add(leaf, revoked=True)     # rewrites index.txt and restarts
        ...  # fetch from responder.url

Facts about OpenSSL 3.0 this relies on, checked on 3.0.19:
- `-port` takes a number only ("127.0.0.1:PORT" is refused), so the responder
  listens on every interface; tests still only ever connect to 127.0.0.1.
- The responder notices a changed index.txt only when it goes back to
  accept(), so the first request after a change is answered from the old
  index (by each -multi process). add() therefore restarts it, on the same port.
- With -multi the parent calls setpgid(0, 0), which fails for a session
  leader; so start it in a new process group (not a new session), and stop
  it by killing that group: SIGTERM would make the parent sleep 1 s first.
- A connection closed before any request byte leaves the responder process
  spinning at 100% CPU, never answering again (openssl/openssl#31129;
  `-timeout` does not help, #23934, and here made it spin too); a request cut
  off midway makes the process exit. Under `-multi` the parent replaces exited
  processes but not spinning ones. So never probe it with a bare connect();
  `-multi 2` is the default so one such accident does not silence it.
"""

from __future__ import annotations

import datetime as dt
import http.client
import os
import signal
import socket
import subprocess
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

if TYPE_CHECKING:
    from tests.pki import PKI, Issued

_START_TIMEOUT = 5.0


class OpenSSLResponder:
    """`openssl ocsp -index ...` serving pki's leaves on http://127.0.0.1:PORT/.

    revoked  leaf names (or Issued) to list as revoked (an hour ago, keyCompromise)
    ndays    nextUpdate = thisUpdate + ndays days (-ndays)
    nmin     if given, nextUpdate = thisUpdate + nmin minutes instead (-nmin; -ndays not passed)
    signer   the responder certificate (default the intermediate, which issued the leaves)
    multi    responder processes (-multi); 0 for a single process
    """

    def __init__(
        self,
        pki: PKI,
        directory: Path,
        *,
        revoked: Iterable[str | Issued] = (),
        ndays: int = 1,
        nmin: int | None = None,
        signer: Issued | None = None,
        multi: int = 2,
    ) -> None:
        self.pki = pki
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.index_path = self.directory / "index.txt"
        self.log_path = self.directory / "openssl-ocsp.log"
        self.ndays, self.nmin, self.multi = ndays, nmin, multi
        self.signer = signer or pki.intermediate
        revoked_names = {getattr(r, "name", r) for r in revoked}
        unknown = revoked_names - set(pki.leaves)
        if unknown:
            raise ValueError(f"revoked names that are not leaves of the PKI: {sorted(unknown)}")
        # serial -> (leaf, revoked); a dict so add() can also change a status
        self._entries: dict[int, tuple[Issued, bool]] = {
            leaf.cert.serial_number: (leaf, leaf.name in revoked_names) for leaf in pki.leaves.values()
        }
        self._revoked_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self.port = _free_port()
        self._write_index()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int | None:
        """The responder's PID, also its process group ID; None when stopped."""
        return self._process.pid if self._process is not None else None

    def start(self) -> OpenSSLResponder:
        if self._process is not None:
            return self
        # Another process may take the port between _free_port() and openssl's
        # bind; rare, so a few retries (on the same port, keeping the URL) suffice.
        for attempt in range(5):
            try:
                self._spawn()
                return self
            except _BindError:
                time.sleep(0.1 * (attempt + 1))
        raise RuntimeError(f"openssl ocsp could not bind port {self.port}; see {self.log_path}")

    def stop(self) -> None:
        """Kill the responder and every process it forked; returns once they are gone."""
        process, self._process = self._process, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if process is not None:
            _kill_group(process)

    def __enter__(self) -> OpenSSLResponder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, issued: Issued, revoked: bool = False) -> None:
        """List a leaf (or change its status) and make the responder serve it at once."""
        self._entries[issued.cert.serial_number] = (issued, revoked)
        self._write_index()
        if self._process is not None:
            # A restart, not a reread: see the module docstring.
            self.stop()
            self.start()

    def command(self) -> list[str]:
        validity = ["-nmin", str(self.nmin)] if self.nmin is not None else ["-ndays", str(self.ndays)]
        return [
            "openssl", "ocsp",
            "-index", str(self.index_path),
            "-port", str(self.port),
            "-rsigner", str(self.signer.cert_path),
            "-rkey", str(self.signer.key_path),
            "-CA", str(self.pki.intermediate.cert_path),
            *validity,
            *(["-multi", str(self.multi)] if self.multi else []),
        ]

    def _spawn(self) -> None:
        log = open(self.log_path, "ab")
        log_start = log.tell()  # earlier runs' output (a restart appends) must not be read as ours
        try:
            process = subprocess.Popen(
                self.command(), cwd=self.directory, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, process_group=0,
            )
        finally:
            log.close()
        # If a test forgets stop(), still leave nothing running at interpreter exit.
        finalizer = weakref.finalize(self, _kill_group, process)
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if process.poll() is not None:
                finalizer.detach()
                _kill_group(process)
                with open(self.log_path, "rb") as f:
                    f.seek(log_start)
                    tail = f.read().decode(errors="replace")[-2000:]
                if "address already in use" in tail.lower():
                    raise _BindError(tail)
                raise RuntimeError(f"openssl ocsp exited with {process.returncode}:\n{tail}")
            try:
                if self._answers():
                    break
            except (OSError, http.client.HTTPException):
                pass  # not listening yet
            if time.monotonic() > deadline:
                finalizer.detach()
                _kill_group(process)
                raise RuntimeError(
                    f"openssl ocsp did not answer on port {self.port} within {_START_TIMEOUT} s; see {self.log_path}"
                )
            time.sleep(0.02)
        self._process, self._finalizer = process, finalizer

    def _answers(self) -> bool:
        # Readiness is a real OCSP exchange, never a bare connect() (see the module
        # docstring). The parent listens before it forks the -multi children,
        # and the kernel queues this request until one of them accepts.
        der = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(self.pki.good.cert, self.pki.intermediate.cert, hashes.SHA1())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("POST", "/", der, {"Content-Type": "application/ocsp-request"})
            response = connection.getresponse()
            response.read()
            return response.status == 200
        finally:
            connection.close()

    def _write_index(self) -> None:
        # Format of `openssl ca`'s database (one line per certificate, tab-separated):
        # status, expiry, revocation[,reason], serial, file name, subject.
        lines = []
        for leaf, revoked in self._entries.values():
            revocation = f"{_asn1_time(self._revoked_at)},keyCompromise" if revoked else ""
            subject = "/" + "/".join(
                f"{a.rfc4514_attribute_name}={a.value}" for a in leaf.cert.subject
            )
            lines.append("\t".join((
                "R" if revoked else "V",
                _asn1_time(leaf.cert.not_valid_after_utc),
                revocation,
                _index_serial(leaf.cert.serial_number),
                "unknown",
                subject,
            )))
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        os.replace(tmp, self.index_path)
        # Without this, OpenSSL requires unique subjects among valid entries and
        # refuses the whole index when two leaves share a name.
        (self.directory / "index.txt.attr").write_text("unique_subject = no\n")


class _BindError(RuntimeError):
    pass


def _index_serial(serial: int) -> str:
    # OpenSSL looks the serial up as BN_bn2hex() prints it: upper case and an
    # even number of digits ("0A", not "A"); any other spelling never matches.
    digits = f"{serial:X}"
    return digits if len(digits) % 2 == 0 else "0" + digits


def _asn1_time(when: dt.datetime) -> str:
    # UTCTime as the index stores it: YYMMDDHHMMSSZ
    return when.astimezone(dt.timezone.utc).strftime("%y%m%d%H%M%SZ")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # The process leads its own group and every -multi child is in it:
    # one SIGKILL to the group, then reap our direct child.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=5)
    # The -multi children are not ours to reap: orphaned, they wait as zombies
    # until init gets to them (here that took ~1.7 s). A zombie runs nothing
    # and holds no port, so "stopped" means: no live process left in the group.
    deadline = time.monotonic() + 5
    while live_group_members(process.pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"openssl ocsp processes {live_group_members(process.pid)} survived SIGKILL")
        time.sleep(0.005)


def live_group_members(pgid: int) -> list[int]:
    """PIDs of the processes in group `pgid` that are not zombies (Linux /proc)."""
    live = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "stat"), "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        # The command name may hold spaces and parentheses: split after the last ")".
        state, _ppid, pgrp = stat.rsplit(b")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state not in (b"Z", b"X"):
            live.append(int(entry.name))
    return live
