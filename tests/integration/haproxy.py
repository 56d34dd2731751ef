"""HAProxy with TLS bundles and an admin stats socket, in the foreground (-db).

HAProxy 2.6 loads `<bundle>.ocsp` next to each `crt` at start; the bundle
holds the leaf, its key and the issuer (HAProxy needs the issuer to compute
the CertID: without it in the bundle or a `<bundle>.issuer` file, a present
.ocsp file is a fatal configuration error).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from staplectl.haproxy_api import HAProxyAPIError, command
from tests.integration.launch import Running, accepts, launch
from tests.pki import Issued


def bundle(issued: Issued, directory: Path, *, issuer: bool = True) -> Path:
    """`<name>.pem` as HAProxy takes it: leaf, key, and (normally) the issuer."""
    assert issued.issuer is not None
    path = directory / f"{issued.name}.pem"
    parts = [issued.cert_path.read_bytes(), issued.key_path.read_bytes()]
    if issuer:
        parts.append(issued.issuer.cert_path.read_bytes())
    path.write_bytes(b"".join(parts))
    return path


@dataclass
class HAProxy:
    binary: str
    workdir: Path
    bundles: list[Path]
    server: Running | None = None
    #: unix socket paths are limited to 108 bytes: a short directory of its own
    socket_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="staplectl-haproxy-")))

    @property
    def port(self) -> int:
        assert self.server is not None, "start() first"
        return self.server.port

    @property
    def socket(self) -> Path:
        return self.socket_dir / "admin.sock"

    @property
    def conf(self) -> Path:
        return self.workdir / "haproxy.cfg"

    def start(self) -> HAProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)

        def argv(port: int) -> list[str]:
            self.conf.write_text(self.config(port))
            self.socket.unlink(missing_ok=True)
            return [self.binary, "-db", "-f", str(self.conf)]

        def ready(server: Running) -> bool:
            return self.pid() == server.proc.pid and accepts(server.port)

        self.server = launch("haproxy", self.workdir, argv, ready)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def pid(self) -> int | None:
        """The pid HAProxy reports on its socket (None while it does not answer)."""
        try:
            info = command(self.socket, "show info", timeout=1)
        except HAProxyAPIError:
            return None
        found = re.search(r"^Pid: (\d+)$", info, re.MULTILINE)
        return int(found.group(1)) if found else None

    def check(self) -> tuple[int, str]:
        """`haproxy -c` on the configuration as it would be written now: exit code and output."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config(1))
        done = subprocess.run([self.binary, "-c", "-f", str(self.conf)], capture_output=True, text=True, timeout=30)
        return done.returncode, done.stdout + done.stderr

    def config(self, port: int) -> str:
        crts = " ".join(f"crt {path}" for path in self.bundles)
        return (
            "global\n"
            f"    stats socket {self.socket} level admin\n"
            "defaults\n"
            "    mode http\n"
            "    timeout connect 5s\n    timeout client 5s\n    timeout server 5s\n"
            "frontend tls\n"
            f"    bind 127.0.0.1:{port} ssl {crts}\n"
            "    http-request return status 200 content-type text/plain string ok\n"
        )
