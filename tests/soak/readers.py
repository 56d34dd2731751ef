"""The other processes: one-shot staplectl commands, round-robin, beside the service.

Every reader_interval seconds the next of

    check --json --warn W --crit C        inspect --json
    export --nginx DIR --json             export --haproxy <one CA's directory> --json
    fetch <one certificate> --json        warm <one CA's directory> --json
    dashboard snapshot (tests/soak/dashboard_snapshot.py: the real app, headless)

runs as a real subprocess with the run's STAPLECTL_HOME and configuration.
Each run is recorded (exit code, duration, traceback or not), and what it
says is set against the monitor's view of the store:

- check: a certificate reported OK must have had a valid, unexpired
  staple in the store while check ran (check_false_ok);
- inspect: an entry reported valid likewise, and unexpired at inspect's
  own checked_at (invalid_inspected);
- export: every file it says it wrote (or left unchanged) is read back
  and validated here, unexpired at the export's start; a file it says it
  removed, or that is missing, must not hold a staple (invalid_exported);
- fetch and warm: what they say they stored must be readable within 1 s
  (the monitor's lost-write check, as for the service's own writes);
- the dashboard: a row shown good, due or stale (servable) is a claim
  like inspect's (dashboard_false_valid).

A command fails (command_failures) when it prints a traceback, hangs past
its timeout, or meets a store error outside a planned cache fault. Other
non-zero exits are expected at times (a fetch from a faulted responder, a
check while a staple is missing, any command while the configuration file
is broken) and are only counted.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.soak.monitor import Monitor, parse_iso
from tests.soak.ocspcheck import judge
from tests.soak.records import Claim
from tests.soak.report import Tally
from tests.soak.service import STORE_REASONS
from tests.soak.settings import SoakSettings
from tests.soak.timeline import Timeline
from tests.soak.world import World, staplectl_program

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("check", "inspect", "export_nginx", "fetch", "dashboard", "export_haproxy", "warm")
TIMEOUT = 90.0
TRACEBACK = "Traceback (most recent call last)"
STORE_ERROR_TEXT = re.compile(
    r"local cache \S+: [^\n]*(failed|cannot open)|memcached at \S+: [^\n]*failed|"
    r"redis at \S+: [^\n]*failed|did not store|disk I/O error|database is locked|"
    r"database disk image is malformed|worker state [^\n]*failed"
)
SERVABLE = ("good", "due", "stale")


@dataclass
class CommandRun:
    kind: str
    argv: list[str]
    start: float
    end: float = 0.0
    exit_code: int | None = None
    timed_out: bool = False
    traceback: bool = False
    store_error: bool = False
    excused: bool = False
    row: str = "healthy"
    problems: list[str] = field(default_factory=list)
    stderr_tail: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Readers:
    def __init__(
        self, settings: SoakSettings, world: World, monitor: Monitor, timeline: Timeline, tally: Tally
    ) -> None:
        self.settings = settings
        self.world = world
        self.monitor = monitor
        self.timeline = timeline
        self.tally = tally
        self.runs: list[CommandRun] = []
        self._kinds = itertools.cycle(COMMANDS)
        self._fetch_ca = itertools.cycle(range(3))
        self._warm_ca = itertools.cycle((1, 2, 0))
        self._haproxy_ca = itertools.cycle((2, 0, 1))
        self._rand = random.Random(99)
        self.nginx_dir = world.workdir / "export" / "nginx"
        self.nginx_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir = world.workdir / "commands"
        self.output_dir.mkdir(exist_ok=True)

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.reader_interval):
            self.run_one(next(self._kinds))

    # -- one command ----------------------------------------------------------------

    def _argv(self, kind: str) -> tuple[list[str], Path]:
        program, config = staplectl_program(), str(self.world.config_path)
        common = ["--config", config]
        if kind == "check":
            s = self.settings
            return [program, "check", "--json", "--warn", s.check_warn, "--crit", s.check_crit, *common], self.world.workdir
        if kind == "inspect":
            return [program, "inspect", "--json", *common], self.world.workdir
        if kind == "export_nginx":
            return [program, "export", "--nginx", str(self.nginx_dir), "--json", *common], self.world.workdir
        if kind == "export_haproxy":
            directory = self.world.ca_dir(next(self._haproxy_ca))
            return [program, "export", "--haproxy", str(directory), "--json", *common], self.world.workdir
        if kind == "fetch":
            ca = next(self._fetch_ca)
            cert = self._rand.choice([c for c in self.world.certs.active() if c.ca == ca])
            return [program, "fetch", str(cert.path), "--json", *common], self.world.workdir
        if kind == "warm":
            directory = self.world.ca_dir(next(self._warm_ca))
            return [program, "warm", str(directory), "--json", *common], self.world.workdir
        if kind == "dashboard":
            python = str(Path(program).with_name("python"))
            return [python, "-m", "tests.soak.dashboard_snapshot", "--config", config], REPO
        raise ValueError(kind)

    def run_one(self, kind: str) -> CommandRun:
        argv, cwd = self._argv(kind)
        run = CommandRun(kind, argv, time.time())
        run.row = self.timeline.phase_at(run.start)
        stdout = stderr = ""
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=TIMEOUT, env=self.world.env(), cwd=cwd,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            run.exit_code, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            run.timed_out = True
            stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        run.end = time.time()
        run.stderr_tail = stderr[-2000:]
        run.traceback = TRACEBACK in stderr or TRACEBACK in stdout
        data = _json(stdout)
        run.store_error = bool(STORE_ERROR_TEXT.search(stderr)) or bool(_store_reasons(kind, data))
        run.excused = self.timeline.cache_touched(run.start, run.end) is not None
        self.tally.add(run.row, "commands")
        if run.traceback or run.timed_out or (run.store_error and not run.excused):
            what = "traceback" if run.traceback else "timed out" if run.timed_out else "store error"
            self.tally.add(run.row, "command_failures", 1, {
                "command": kind, "what": what, "start": round(run.start, 3), "exit": run.exit_code,
                "argv": " ".join(argv[1:]), "stderr": run.stderr_tail,
            })  # fmt: skip
        if data is not None and not run.timed_out:
            try:
                getattr(self, f"_verify_{kind}")(run, data)
            except Exception as exc:  # a harness bug must show, not pass silently
                run.problems.append(f"harness: verifying {kind} failed: {type(exc).__name__}: {exc}")
                self.tally.add(run.row, "command_failures", 1, {
                    "command": kind, "what": "harness could not verify the output", "error": repr(exc),
                })  # fmt: skip
        if run.traceback or run.timed_out or run.store_error or run.problems:
            # the whole output, for the diagnosis (the report keeps only a tail)
            base = self.output_dir / f"{len(self.runs):05d}-{kind}"
            base.with_suffix(".argv").write_text(" ".join(argv) + f"\nexit {run.exit_code}, start {run.start:.3f}\n")
            base.with_suffix(".stdout").write_text(stdout)
            base.with_suffix(".stderr").write_text(stderr)
        self.runs.append(run)
        return run

    # -- what each command's output must agree with -----------------------------------

    def _claim(self, run: CommandRun, key: str, sha1: str, this_update: float | None,
               next_update: float | None, claimed_at: float, what: dict[str, Any]) -> None:  # fmt: skip
        """Hand a "this staple is valid" to the monitor, judged once it has sampled past the command."""
        self.monitor.add_claim(Claim(
            key, run.row, sha1, this_update, next_update, run.start, run.end, claimed_at,
            {"command": run.kind, **what}, run.problems,
        ))  # fmt: skip

    def _verify_check(self, run: CommandRun, data: Any) -> None:
        for row in _rows(data):
            if row.get("state") == "OK" and row.get("cert_sha1"):
                self._claim(run, "check_false_ok", row["cert_sha1"], None, parse_iso(row.get("next_update")),
                            run.start, {"cert": row.get("cert")})  # fmt: skip

    def _verify_inspect(self, run: CommandRun, data: Any) -> None:
        if data.get("error"):
            return
        checked_at = parse_iso(data.get("checked_at")) or run.start
        for entry in data["entries"]:
            if entry.get("valid"):
                self._claim(run, "invalid_inspected", entry.get("cert_sha1") or "", parse_iso(entry.get("this_update")),
                            parse_iso(entry.get("next_update")), checked_at,
                            {"cert": entry.get("cert"), "flags": entry.get("flags")})  # fmt: skip

    def _verify_dashboard(self, run: CommandRun, data: Any) -> None:
        if not isinstance(data, dict) or "items" not in data:
            return
        if (data.get("cache_error") or data.get("state_error")) and not run.excused:
            run.store_error = True
            self.tally.add(run.row, "command_failures", 1, {
                "command": "dashboard", "what": "store error shown", "cache_error": data.get("cache_error"),
                "state_error": data.get("state_error"),
            })  # fmt: skip
        for item in data["items"]:
            if item.get("state") in SERVABLE:
                self._claim(run, "dashboard_false_valid", item["cert_id"], item.get("this_update"),
                            item.get("next_update"), data["taken_at"], {"shown": item.get("state")})  # fmt: skip

    def _verify_export_nginx(self, run: CommandRun, data: Any) -> None:
        self._verify_export(run, data, nginx=True)

    def _verify_export_haproxy(self, run: CommandRun, data: Any) -> None:
        self._verify_export(run, data, nginx=False)

    def _verify_export(self, run: CommandRun, data: Any, *, nginx: bool) -> None:
        for row in _rows(data):
            action, file = row.get("result"), row.get("file")
            if not file:
                continue
            path = Path(file)
            content = path.read_bytes() if path.exists() else None
            if action in ("written", "unchanged"):
                problem = self._exported_problem(row.get("cert") or "", content, run)
                if problem is None and nginx and not path.with_suffix(".stapling").exists():
                    problem = "the .stapling snippet beside a written staple is missing"
            elif action in ("removed", "missing"):
                problem = None
                if content:  # nginx: no file at all; HAProxy: an empty one
                    problem = f"{action}, yet the file still holds {len(content)} bytes"
                elif nginx and path.with_suffix(".stapling").exists():
                    problem = f"{action}, yet the .stapling snippet still names the file"
            else:
                continue
            if problem is not None:
                run.problems.append(problem)
                self.tally.add(run.row, "invalid_exported", 1, {
                    "command": run.kind, "start": round(run.start, 3), "cert": row.get("cert"),
                    "file": file, "action": action, "problem": problem,
                })  # fmt: skip

    def _exported_problem(self, cert_path: str, content: bytes | None, run: CommandRun) -> str | None:
        if not content:
            return "said written/unchanged, but the file is missing or empty"
        candidates = self.world.certs.by_path(cert_path)
        if not candidates:
            return f"exported for a certificate file the run does not know: {cert_path}"
        reasons = []
        for cert in candidates:
            verdict = judge(content, cert.cert, cert.issuer)
            if not verdict.genuine:
                reasons.append(verdict.problem or "invalid")
                continue
            # usable when export judged it: nextUpdate after the export began
            if verdict.next_update is None or verdict.next_update <= run.start:
                reasons.append(f"expired when exported (nextUpdate {verdict.next_update})")
                continue
            if verdict.this_update is not None and verdict.this_update > run.end + 300:
                reasons.append("not yet valid")
                continue
            return None
        return "exported staple not valid: " + "; ".join(reasons)

    def _verify_fetch(self, run: CommandRun, data: Any) -> None:
        for row in _rows(data) if run.exit_code == 0 else []:
            this_update = parse_iso(row.get("this_update"))
            if row.get("stored") and this_update is not None and row.get("cert_sha1"):
                self.monitor.expect_write(row["cert_sha1"], this_update, run.end, "fetch")

    def _verify_warm(self, run: CommandRun, data: Any) -> None:
        for row in _rows(data):
            if row.get("result") == "updated" and row.get("cert_sha1"):
                this_update = parse_iso(row.get("this_update"))
                if this_update is not None:
                    self.monitor.expect_write(row["cert_sha1"], this_update, run.end, "warm")

    # -- figures -------------------------------------------------------------------------

    def log(self, since: float) -> list[dict[str, Any]]:
        """Every invocation: what, when (seconds into the run), how long, how it ended."""
        return [
            {
                "command": r.kind, "at_s": round(r.start - since, 2), "seconds": round(r.seconds, 2),
                "exit": "timeout" if r.timed_out else r.exit_code, "row": r.row, "traceback": r.traceback,
                "store_error": r.store_error, "excused": r.excused, "problems": r.problems[:5],
            }  # fmt: skip
            for r in self.runs
        ]

    def figures(self) -> dict[str, Any]:
        by_kind: dict[str, dict[str, Any]] = {}
        exits: dict[str, Counter] = defaultdict(Counter)
        for run in self.runs:
            exits[run.kind][str(run.exit_code if not run.timed_out else "timeout")] += 1
        for kind in COMMANDS:
            runs = [r for r in self.runs if r.kind == kind]
            if not runs:
                continue
            seconds = sorted(r.seconds for r in runs)
            by_kind[kind] = {
                "runs": len(runs),
                "exit_codes": dict(exits[kind]),
                "seconds_median": round(seconds[len(seconds) // 2], 2),
                "seconds_max": round(seconds[-1], 2),
                "tracebacks": sum(r.traceback for r in runs),
                "store_errors": sum(r.store_error for r in runs),
                "store_errors_excused": sum(r.store_error and r.excused for r in runs),
            }
        return by_kind


def _json(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _rows(data: Any) -> list[dict[str, Any]]:
    """The certificates of a command's --json (docs/json.md); an output of
    another shape raises, so that the harness never verifies nothing."""
    if not isinstance(data, dict) or data.get("schema") != 1:
        raise ValueError(f"not a staplectl --json envelope: {str(data)[:200]}")
    return [] if data.get("error") else data["certificates"]


def _store_reasons(kind: str, data: Any) -> list[str]:
    """Store-error reasons in a command's JSON: its top-level error, or a row's (warm, export)."""
    found = []
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("reason") in STORE_REASONS:
            found.append(error["reason"])
        for row in data.get("certificates") or []:
            error = row.get("error") if isinstance(row, dict) else None
            if isinstance(error, dict) and error.get("reason") in STORE_REASONS:
                found.append(error["reason"])
    return found


