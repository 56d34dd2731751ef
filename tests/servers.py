"""Real memcached and redis servers on loopback, for the test session.

The providers are tested against the real servers, not fakes: httpd shares
its entries with them, and a fake would agree with our own mistakes.

When a server binary is missing the tests that need it are skipped, unless
the environment says it must be there (``CI=true``): then they fail, with
the package to install.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_ATTEMPTS = 5
START_TIMEOUT = 10.0


@dataclass
class ServerProcess:
    name: str
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path = field(repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def find_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    if os.access(f"/usr/bin/{name}", os.X_OK):  # PATH without /usr/bin
        return f"/usr/bin/{name}"
    message = f"{name} is not installed: install the {package!r} package (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    # Another process may take the port between this close and the server's
    # bind: start() notices the server exiting and tries another port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _served_by(host: str, port: int, probe: bytes, marker: bytes) -> int | None:
    """The pid the server on ``port`` reports, or None while nothing answers.

    Accepting a connection is not enough: when another server took the port
    first, ours fails to bind and exits, while theirs answers.
    """
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(probe)
            data = b""
            while not (marker in data and data.split(marker, 1)[1].find(b"\r\n") > 0):
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    return int(data.split(marker, 1)[1].split(b"\r\n", 1)[0])


def _start(
    name: str, package: str, argv_for_port, probe: bytes, marker: bytes, port: int | None = None
) -> ServerProcess:
    """Start the server on a free port, or on ``port`` when given.

    A fixed port is for restarting a server empty where its clients expect
    it (the soak test's cache restarts): every attempt uses that port, a
    moment apart, since the old server may still be releasing it.
    """
    binary = find_binary(name, package)
    failures = []
    fixed = port
    for attempt in range(START_ATTEMPTS):
        if fixed is None:
            port = free_port()
        elif attempt:
            time.sleep(0.2)
        workdir = Path(tempfile.mkdtemp(prefix=f"staplectl-{name}-"))
        log = open(workdir / "log", "wb")
        proc = subprocess.Popen(
            [binary, *argv_for_port(port, workdir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
        )
        log.close()
        server = ServerProcess(name, "127.0.0.1", port, proc, workdir)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            pid = _served_by(server.host, port, probe, marker)
            if pid == proc.pid:
                return server
            if pid is not None:
                break  # someone else's server has this port
            time.sleep(0.05)
        log_text = (workdir / "log").read_text(errors="replace").strip()
        failures.append(f"port {port}: {log_text[-300:] or 'taken by another server'}")
        server.stop()
    raise RuntimeError(f"{name} did not start after {START_ATTEMPTS} attempts: " + " | ".join(failures))


def start_memcached(port: int | None = None) -> ServerProcess:
    def argv(port: int, workdir: Path) -> list[str]:
        args = ["-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64", "-t", "2"]
        if os.geteuid() == 0:
            # memcached refuses to run as root without naming a user.
            args += ["-u", pwd.getpwuid(0).pw_name]
        return args

    return _start("memcached", "memcached", argv, b"stats\r\n", b"STAT pid ", port)


def start_redis(port: int | None = None) -> ServerProcess:
    def argv(port: int, workdir: Path) -> list[str]:
        return [
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(workdir),
        ]  # fmt: skip

    return _start("redis-server", "redis-server", argv, b"INFO server\r\n", b"process_id:", port)
