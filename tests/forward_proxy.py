"""A real forward proxy for the tests: tinyproxy, started on a loopback port.

tinyproxy is small, packaged (apt-get install tinyproxy) and speaks both
what staplectl needs: absolute-form requests for http responders and
CONNECT tunnels for https ones. Each start gets its own stats host name, a
token only this instance knows, so a proxy of someone else's that holds
the port is never taken for ours.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers import START_ATTEMPTS, START_TIMEOUT, ServerProcess, find_binary, free_port


class ForwardProxy(ServerProcess):
    """tests.servers' ServerProcess (its stop() too), with the proxy's URL and log."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return (self.workdir / "log").read_text(errors="replace")


def start_tinyproxy(*, basic_auth: tuple[str, str] | None = None) -> ForwardProxy:
    """tinyproxy on 127.0.0.1, for loopback clients, asking for ``basic_auth``
    (user, password) if given: without it, 407."""
    binary = find_binary("tinyproxy", "tinyproxy")
    failures = []
    for _ in range(START_ATTEMPTS):
        port = free_port()
        token = f"staplectl-{secrets.token_hex(6)}.stats"
        workdir = Path(tempfile.mkdtemp(prefix="staplectl-tinyproxy-"))
        lines = [
            f"Port {port}", "Listen 127.0.0.1", "Timeout 30", "Allow 127.0.0.1", f'StatHost "{token}"',
            "LogLevel Info", "MaxClients 64", "DisableViaHeader Yes",
        ]  # fmt: skip
        if os.geteuid() == 0:
            lines += ["User nobody", "Group nogroup"]  # it will not run as root
        if basic_auth:
            lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
        (workdir / "tinyproxy.conf").write_text("\n".join(lines) + "\n")
        with open(workdir / "log", "wb") as log:
            proc = subprocess.Popen([binary, "-d", "-c", str(workdir / "tinyproxy.conf")], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)  # fmt: skip
        proxy = ForwardProxy("tinyproxy", "127.0.0.1", port, proc, workdir)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(port, token, basic_auth):
                return proxy
            time.sleep(0.05)
        failures.append(f"port {port}: {proxy.log()[-300:]}")
        proxy.stop()
    raise RuntimeError("tinyproxy did not start: " + " | ".join(failures))


def _answers(port: int, token: str, basic_auth: tuple[str, str] | None) -> bool:
    head = f"GET http://{token}/ HTTP/1.0\r\n"
    if basic_auth:
        head += "Proxy-Authorization: Basic " + base64.b64encode(":".join(basic_auth).encode()).decode() + "\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(f"{head}\r\n".encode())
            return sock.recv(64).startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))
    except OSError:
        return False
