"""nginx with ssl_stapling, run with its own prefix (-p) and configuration (-c).

`daemon off` keeps the master in the foreground (our child); its pid file,
error log and temp paths live in the test's directory, because Debian's
build points them under /var. `reload_command()` is what an operator's
--reload-cmd would be: `nginx -s reload` with the same -p/-c/-e, which
parses the configuration first and fails (exit 1) when it is broken, so
the running nginx keeps its old configuration.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.launch import Running, accepts, launch, pid_in
from tests.integration.tlsclient import Handshake, handshake


@dataclass
class Site:
    name: str
    chain: Path
    key: Path
    #: stapling directives inside the server block, after `ssl_stapling on;`
    stapling: list[str] = field(default_factory=list)


@dataclass
class Nginx:
    binary: str
    workdir: Path
    sites: list[Site]
    server: Running | None = None

    @property
    def port(self) -> int:
        assert self.server is not None, "start() first"
        return self.server.port

    @property
    def conf(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.workdir / "error.log"

    def _args(self) -> list[str]:
        return ["-p", f"{self.workdir}/", "-c", str(self.conf), "-e", str(self.error_log)]

    def start(self) -> Nginx:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        pid_file = self.workdir / "nginx.pid"

        def argv(port: int) -> list[str]:
            self.conf.write_text(self.config(port))
            pid_file.unlink(missing_ok=True)
            return [self.binary, *self._args()]

        def ready(server: Running) -> bool:
            return pid_in(pid_file) == server.proc.pid and accepts(server.port)

        self.server = launch("nginx", self.workdir, argv, ready, errors=self.log_text)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def reload_command(self) -> str:
        return shlex.join([self.binary, "-s", "reload", *self._args()])

    def test_command(self) -> list[str]:
        return [self.binary, "-t", "-q", *self._args()]

    def log_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, name: str, wanted: Callable[[Handshake], bool], timeout: float = 10.0) -> Handshake:
        """Handshake until `wanted` holds: a reload replaces workers asynchronously."""
        deadline = time.monotonic() + timeout
        while True:
            shake = handshake(self.port, name)
            if wanted(shake) or time.monotonic() > deadline:
                return shake
            time.sleep(0.1)

    def config(self, port: int) -> str:
        root = self.workdir
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {root}/tmp/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        servers = []
        for site in self.sites:
            stapling = "".join(f"        {line}\n" for line in site.stapling)
            servers.append(
                f"    server {{\n"
                f"        listen 127.0.0.1:{port} ssl;\n"
                f"        server_name {site.name};\n"
                f"        ssl_certificate {site.chain};\n"
                f"        ssl_certificate_key {site.key};\n"
                f"        ssl_stapling on;\n"
                f"{stapling}"
                f"    }}\n"
            )
        return (
            f"daemon off;\nmaster_process on;\nworker_processes 1;\n{user}\n"
            f"pid {root}/nginx.pid;\nerror_log {root}/error.log info;\n"
            f"events {{ worker_connections 64; }}\n"
            f"http {{\n    access_log off;\n{temp}\n{''.join(servers)}}}\n"
        )
