"""The prefetch service as an operator runs it: the installed command, a subprocess.

    .venv/bin/staplectl prefetch --config CONFIG --metrics 127.0.0.1:PORT --log-format json

Its stderr is its log, one JSON object per line; a thread reads it, stamps
each line with the time it arrived (the write it reports is done by
then), appends it to work/service.log, and hands it to whoever listens
(the monitor takes the "updated" lines). A line that is not JSON (a
traceback) is kept as it is and counted.

The service is restarted after a planned SIGKILL; an exit nobody planned
is recorded (an invariant: it never exits on its own) and it is started
again so that the run goes on. RSS and descriptors are read from /proc.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.soak.world import World, staplectl_program

#: what a store error looks like in a log line (reason or SQLite's words)
STORE_REASONS = ("cache_unavailable", "cache_unwritable", "cache_damaged", "cache", "state_store")
STORE_WORDS = ("disk I/O error", "database disk image is malformed", "database is locked", "malformed")


@dataclass
class LogLine:
    t: float
    pid: int
    raw: str
    data: dict[str, Any] | None

    @property
    def event(self) -> str | None:
        return self.data.get("event") if self.data else None

    def store_error(self) -> bool:
        if self.data is None:
            return any(word in self.raw for word in STORE_WORDS[:3])
        reason = self.data.get("reason") or ""
        if reason in STORE_REASONS:
            return True
        message = self.data.get("message") or ""
        # "malformed" alone is also a responder's answer that does not parse
        # (reason malformed); a store's is worded otherwise
        return any(word in message for word in STORE_WORDS[:3]) or (
            "malformed" in message and reason != "malformed"
        )


@dataclass
class Incarnation:
    """One service process, from start to exit."""

    pid: int
    started: float
    #: (time, RSS KiB, open descriptors)
    resources: list[tuple[float, int, int]] = field(default_factory=list)
    ended: float | None = None
    exit_code: int | None = None
    planned_exit: bool = False


class Service:
    def __init__(self, world: World, metrics_port: int) -> None:
        self.world = world
        self.metrics_port = metrics_port
        self.log_path = world.workdir / "service.log"
        self._log_file = open(self.log_path, "a", buffering=1)
        self._cv = threading.Condition()
        self.lines: list[LogLine] = []
        self.listeners: list[Callable[[LogLine], None]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.incarnations: list[Incarnation] = []
        self._readers: list[threading.Thread] = []
        self.unplanned_exits: list[Incarnation] = []
        self.stop_result: dict[str, Any] | None = None
        # start, kill, stop and the watch for unplanned exits come from
        # different threads (faults, resources, the run): one at a time
        self._life = threading.RLock()

    # -- running ----------------------------------------------------------------

    def argv(self) -> list[str]:
        return [
            staplectl_program(), "prefetch", "--config", str(self.world.config_path),
            "--metrics", f"127.0.0.1:{self.metrics_port}", "--log-format", "json",
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> Incarnation:
        with self._life:
            return self._start(timeout)

    def _start(self, timeout: float) -> Incarnation:
        mark = self.mark()
        self.proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=self.world.env(), cwd=self.world.workdir,
        )  # fmt: skip
        incarnation = Incarnation(self.proc.pid, time.time())
        self.incarnations.append(incarnation)
        reader = threading.Thread(target=self._read, args=(self.proc,), name=f"service-log-{self.proc.pid}", daemon=True)
        reader.start()
        self._readers.append(reader)
        line = self.wait_for(lambda l: l.event == "started" and l.pid == incarnation.pid, timeout, since=mark)
        if line is None:
            raise RuntimeError(f"the prefetch service (pid {incarnation.pid}) did not log 'started' within {timeout} s")
        return incarnation

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def current(self) -> Incarnation | None:
        return self.incarnations[-1] if self.incarnations else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL, as the OOM killer or a power cut would; returns when it is gone."""
        with self._life:
            assert self.proc is not None and self.current is not None
            self.current.planned_exit = True
            os.kill(self.proc.pid, signal.SIGKILL)
            killed = time.time()
            self._reap()
            return killed

    def sighup(self) -> float:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        return time.time()

    def check_alive(self) -> Incarnation | None:
        """If the service exited without being told to, record it and start it again."""
        with self._life:
            if self.proc is None or self.proc.poll() is None:
                return None
            incarnation = self.current
            assert incarnation is not None
            if incarnation.planned_exit:
                return None
            self._reap()
            self.unplanned_exits.append(incarnation)
            self._start(30.0)
            return incarnation

    def _reap(self) -> None:
        assert self.proc is not None and self.current is not None
        code = self.proc.wait()
        self.current.ended, self.current.exit_code = time.time(), code
        # the reader thread ends at EOF; wait for it so no line is lost
        self._readers[-1].join(timeout=5)

    def stop(self) -> dict[str, Any]:
        """SIGTERM, as systemd stops it: it must exit 0 within a few seconds (docs/prefetch.md)."""
        with self._life:
            return self._stop()

    def _stop(self) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.stop_result = {"sent": False, "exit_code": self.proc.returncode if self.proc else None}
            return self.stop_result
        self.current.planned_exit = True  # type: ignore[union-attr]
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = None
        took = time.monotonic() - started
        self._reap()
        self.stop_result = {"sent": True, "exit_code": code, "seconds": round(took, 2)}
        return self.stop_result

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()

    # -- the log ------------------------------------------------------------------

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw_bytes in proc.stderr:
            t = time.time()
            raw = raw_bytes.decode(errors="replace").rstrip("\n")
            try:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    data = None
            except ValueError:
                data = None
            line = LogLine(t, proc.pid, raw, data)
            self._log_file.write(f"{t:.3f} {proc.pid} {raw}\n")
            for listener in self.listeners:
                listener(line)
            with self._cv:
                self.lines.append(line)
                self._cv.notify_all()

    def mark(self) -> int:
        with self._cv:
            return len(self.lines)

    def wait_for(self, predicate: Callable[[LogLine], bool], timeout: float, since: int) -> LogLine | None:
        """The first line from index ``since`` on that matches, waiting up to ``timeout``."""
        end = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self.lines[since:]:
                    if predicate(line):
                        return line
                since = len(self.lines)
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)

    def snapshot(self) -> list[LogLine]:
        with self._cv:
            return list(self.lines)

    # -- outside views: metrics and /proc ------------------------------------------

    def metrics(self) -> dict[str, float] | None:
        """Each metric of /metrics summed over its labels (None when it does not answer).

        staplectl_cache_outages_total is one sample per reason: what the
        soak compares is their sum, the outages of every kind.
        """
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=3) as answer:
                body = answer.read().decode()
        except OSError:
            return None
        values: dict[str, float] = {}
        for line in body.splitlines():
            match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+|NaN|[+-]Inf)$", line)
            if match:
                values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(3))
        return values

    def sample_resources(self) -> tuple[int, int] | None:
        incarnation = self.current
        if incarnation is None or not self.alive():
            return None
        try:
            rss = _vm_rss_kib(incarnation.pid)
            fds = len(os.listdir(f"/proc/{incarnation.pid}/fd"))
        except (OSError, ValueError):
            return None
        incarnation.resources.append((time.time(), rss, fds))
        return rss, fds


def _vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS")
