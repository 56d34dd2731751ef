"""Start a real server in the foreground on a free loopback port, and stop it.

Each server runs in its own process group (its workers too), with its
config, pid file and logs in a directory of its own, so that a test that
fails half-way still leaves nothing behind: stop() ends the group.

Readiness is "our pid file names our process and the port accepts", never a
TLS handshake: a handshake would make the server staple (and maybe fetch),
which is what the tests measure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port

START_ATTEMPTS = 5
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: what a server says when another process took the port first
_PORT_TAKEN = ("Address already in use", "could not bind", "Cannot bind")


@dataclass
class Running:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    output: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM: httpd and nginx then stop their workers and wait for them.

        Only if that takes too long, SIGKILL the whole group, while its
        leader (not yet reaped) guarantees the group id is still ours.
        """
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)

    def log_text(self) -> str:
        return self.output.read_text(errors="replace")


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def launch(
    name: str,
    workdir: Path,
    argv_for_port: Callable[[int], list[str]],
    ready: Callable[[Running], bool],
    *,
    errors: Callable[[], str] = lambda: "",
) -> Running:
    """Start the server, on another port when one was taken meanwhile.

    argv_for_port writes the configuration for that port and returns the
    command line; ready(server) says when it serves; errors() returns the
    server's own log, for the failure message.
    """
    failures = []
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        output = workdir / f"{name}-{attempt}.out"
        with open(output, "wb") as out:
            proc = subprocess.Popen(
                argv_for_port(port), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=workdir, start_new_session=True,
            )
        server = Running(name, port, proc, workdir, output)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and server.alive():
            if ready(server):
                return server
            time.sleep(0.05)
        server.stop()
        text = (server.log_text() + "\n" + errors()).strip()
        failures.append(f"port {port}: {text[-600:] or 'no output'}")
        if not any(marker in text for marker in _PORT_TAKEN):
            break  # a configuration error: another port will not help
    raise RuntimeError(f"{name} did not start: " + " | ".join(failures))
