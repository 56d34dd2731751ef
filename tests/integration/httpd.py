"""Apache httpd (Debian's apache2) with mod_ssl stapling, in a directory of its own.

Its own ServerRoot, PidFile, ErrorLog and DefaultRuntimeDir, run with
-DFOREGROUND; only the modules the test needs, from Debian's module
directory. As root, the workers run as `nobody` (httpd refuses to serve as
root); certificates and keys are read by the parent before it drops them.

The event MPM with one child of many threads: concurrent first handshakes
really are concurrent, so httpd's own serialisation is what shows.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.launch import Running, accepts, launch, pid_in

MODULES_DIR = Path("/usr/lib/apache2/modules")

#: stapling defaults for the tests: a responder that hangs costs 5 s, never
#: the default 10 s; FakeTryLater off unless a test asks for httpd's fake
#: tryLater entries (docs/design.md, "Where the cache meets real servers")
STAPLING_DEFAULTS = {
    "SSLStaplingResponderTimeout": "5",
    "SSLStaplingFakeTryLater": "off",
}


@dataclass
class Vhost:
    name: str  # ServerName, and the SNI a client sends
    chain: Path  # leaf, then its issuer: mod_ssl finds the issuer there
    key: Path


@dataclass
class Httpd:
    binary: str
    workdir: Path
    vhosts: list[Vhost]
    #: the SSLStaplingCache value: "memcache:127.0.0.1:11211", "redis:...", ...
    cache: str
    stapling: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    server: Running | None = None

    @property
    def port(self) -> int:
        assert self.server is not None, "start() first"
        return self.server.port

    @property
    def error_log(self) -> Path:
        return self.workdir / "error.log"

    def start(self) -> Httpd:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "httpd.conf"
        pid_file = self.workdir / "httpd.pid"

        def argv(port: int) -> list[str]:
            conf.write_text(self.config(port))
            pid_file.unlink(missing_ok=True)
            return [self.binary, "-DFOREGROUND", "-d", str(self.workdir), "-f", str(conf)]

        def ready(server: Running) -> bool:
            return pid_in(pid_file) == server.proc.pid and accepts(server.port)

        self.server = launch("httpd", self.workdir, argv, ready, errors=self.log_text)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def restart(self) -> Httpd:
        """Stop, then start anew (on a new port): what a service restart does."""
        self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def queried_responder(self) -> bool:
        """Whether httpd ever asked a responder itself (AH01938, logged at ssl:debug)."""
        return "AH01938" in self.log_text()

    def config(self, port: int) -> str:
        root = self.workdir
        cache_module = self.cache.split(":", 1)[0]
        modules = ["mpm_event", "ssl", f"socache_{cache_module}", *self.modules]
        lines = [
            f"ServerRoot {root}",
            f"PidFile {root}/httpd.pid",
            f"DefaultRuntimeDir {root}",
            f"ErrorLog {root}/error.log",
            # ssl:debug logs each stapling step (cache hit, miss, querying the responder)
            "LogLevel info ssl:debug",
            "ServerName localhost",
            f"Listen 127.0.0.1:{port}",
            *(f"LoadModule {m}_module {MODULES_DIR}/mod_{m}.so" for m in dict.fromkeys(modules)),
            *_user_lines(),
            "StartServers 1", "ServerLimit 1", "ThreadLimit 64", "ThreadsPerChild 64",
            "MaxRequestWorkers 64", "MinSpareThreads 1", "MaxSpareThreads 64",
            "SSLSessionCache none",
            "SSLUseStapling on",
            f"SSLStaplingCache {self.cache}",
            *(f"{k} {v}" for k, v in {**STAPLING_DEFAULTS, **self.stapling}.items()),
            *self.extra,
        ]
        for vhost in self.vhosts:
            lines += [
                f"<VirtualHost 127.0.0.1:{port}>",
                f"  ServerName {vhost.name}",
                "  SSLEngine on",
                f"  SSLCertificateFile {vhost.chain}",
                f"  SSLCertificateKeyFile {vhost.key}",
                "</VirtualHost>",
            ]
        return "\n".join(lines) + "\n"


def _user_lines() -> Iterable[str]:
    if os.geteuid() != 0:
        return []  # httpd ignores User/Group unless started as root
    nobody = pwd.getpwnam("nobody")
    return [f"User {nobody.pw_name}", f"Group {grp.getgrgid(nobody.pw_gid).gr_name}"]
