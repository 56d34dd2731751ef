"""One provider's soak run, from an empty directory to its report.

1. The world: three CAs and their responders (a child process), >= 300
   chain files, the cache server, the configuration file.
2. `staplectl warm` of every certificate, as an operator's
   staplectl-warm.service does before the TLS servers start.
3. The monitor starts reading the store; then the service starts
   (`staplectl prefetch ... --log-format json`). The measurement begins
   when every certificate has a valid staple (or 30 s after the start,
   whichever comes first: then what is missing already counts).
4. For `seconds`: the readers run one-shot commands, the faults come one
   at a time, a thread samples the service's RSS and descriptors every 2 s
   and restarts it if it exited on its own.
5. The end: one more sample for the writes still pending, SIGTERM (it must
   exit 0 within seconds), then the service log is gone through:
   tracebacks, store errors outside planned cache faults, outage lines
   outside them, unplanned exits, RSS and descriptor growth.

`run_provider` returns a SoakResult; `result.violations` must be all zero.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers import free_port
from tests.soak.faults import Faults
from tests.soak.monitor import Monitor
from tests.soak.readers import Readers
from tests.soak.report import Tally, as_json, examples_text, summary_lines, table
from tests.soak.sabotage import Saboteur
from tests.soak.service import Service
from tests.soak.settings import CACHE_FAULTS, RESPONDER_FAULTS, SoakSettings
from tests.soak.store import open_reader
from tests.soak.timeline import Timeline
from tests.soak.world import World, staplectl_program

#: how long the first fill may take before missing staples count
STARTUP_BOUND = 30.0
RESOURCE_INTERVAL = 2.0


@dataclass
class SoakResult:
    provider: str
    tally: Tally
    summary: dict[str, Any]
    faults: list[dict[str, Any]]
    settings: dict[str, Any]
    workdir: Path
    commands: list[dict[str, Any]]

    @property
    def violations(self) -> dict[str, float]:
        return self.tally.violations()

    @property
    def failed(self) -> bool:
        return any(self.violations.values())

    def text(self, examples: bool = True) -> str:
        parts = [
            f"== soak: {self.provider} ==",
            table(self.tally),
            "",
            summary_lines(self.summary),
        ]
        if examples and self.failed:
            parts += ["", "violations, with examples:", examples_text(self.tally)]
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {**as_json(self.tally, self.summary, self.faults, self.settings), "commands": self.commands}


def run_provider(settings: SoakSettings, say: Callable[[str], None] = lambda text: None) -> SoakResult:
    if settings.workdir:
        base = Path(settings.workdir)
        base.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"{settings.provider}-", dir=base))
    else:
        workdir = Path(tempfile.mkdtemp(prefix=f"staplectl-soak-{settings.provider}-"))
    tally, timeline = Tally(), Timeline(settings)
    began = time.time()
    product_at_start = product_version()
    world = service = reader = None
    stop = threading.Event()
    threads: list[threading.Thread] = []
    result: SoakResult | None = None
    try:
        say(f"[{settings.provider}] building the world in {workdir}")
        world = World(settings, workdir)
        warm = _warm_all(world)
        world.unspread()
        say(f"[{settings.provider}] warm: {warm}")
        reader = open_reader(settings.provider, store_path=world.store_path,
                             port=world.cache.port if world.cache else None)  # fmt: skip
        monitor = Monitor(settings, world, reader, timeline, tally)
        service = Service(world, free_port())
        service.listeners.append(monitor.on_log)
        threads.append(_thread("monitor", monitor.run, stop))
        service.start()
        deadline = time.time() + STARTUP_BOUND
        while monitor.all_valid_at is None and time.time() < deadline:
            time.sleep(0.2)
        timeline.measure_from = time.time()
        setup_s = timeline.measure_from - began
        end_at = timeline.measure_from + settings.seconds
        say(f"[{settings.provider}] measuring for {settings.seconds:.0f} s (setup took {setup_s:.1f} s)")

        readers = Readers(settings, world, monitor, timeline, tally)
        faults = Faults(settings, world, service, timeline, tally, Saboteur(world, reader, service), monitor)
        threads.append(_thread("resources", _watch_service, service, stop))
        threads.append(_thread("readers", readers.run, stop))
        fault_thread = _thread("faults", faults.run, stop, end_at)
        threads.append(fault_thread)
        while time.time() < end_at and faults.error is None:
            time.sleep(min(1.0, max(0.0, end_at - time.time())))
        if faults.error is not None:
            raise RuntimeError(f"the fault thread failed: {faults.error!r}") from faults.error

        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        # the writes logged in the last second get their sample
        time.sleep(settings.write_visible_within + 0.2)
        monitor.sample()
        measured = time.time() - timeline.measure_from
        final_metrics = service.metrics()
        stopped = service.stop()
        # the writes the service logged up to its stop get their sample
        time.sleep(settings.write_visible_within + 0.2)
        monitor.sample()
        monitor.finish()
        _go_through_log(service, timeline, tally, settings, world)
        _check_resources(service, tally, settings, timeline)
        if stopped.get("exit_code") != 0 or stopped.get("seconds", 0) > 10:
            tally.add("healthy", "service_problems", 1, {"what": "SIGTERM at the end", **stopped})
        summary = {"product": {"start": product_at_start, "end": product_version()}}
        summary |= _summary(settings, world, service, monitor, readers, timeline, tally,
                           warm=warm, setup_s=setup_s, measured=measured, metrics=final_metrics)  # fmt: skip
        result = SoakResult(
            settings.provider, tally, summary, [e.to_dict() for e in timeline.snapshot()],
            settings.to_dict(), workdir, readers.log(timeline.measure_from),
        )
        say(result.text())
        return result
    finally:
        stop.set()
        if service is not None:
            service.close()
        if reader is not None:
            reader.close()
        if world is not None:
            world.close()
        keep = settings.keep or result is None or result.failed
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"[{settings.provider}] files kept in {workdir}")


def product_version() -> str:
    """The commit the product runs from, and how many of its files differ from it.

    The install is editable: a process the run starts (a one-shot, the
    service after a kill) runs whatever engine/ and staplectl/ hold at
    that moment. A run during which this changed tested several versions.
    """
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "engine", "staplectl"],
                               capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} ({len(dirty)} changed files in engine/ and staplectl/)" if dirty else head


def _thread(name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=f"soak-{name}", daemon=True)
    thread.start()
    return thread


def _warm_all(world: World) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run(
        [staplectl_program(), "warm", "--config", str(world.config_path), "--json"],
        capture_output=True, text=True, env=world.env(), cwd=world.workdir, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the first warm failed (exit {done.returncode}): {done.stderr[-2000:]}")
    results = Counter(row.get("result") for row in json.loads(done.stdout)["certificates"])
    return {"exit": done.returncode, "seconds": round(time.monotonic() - started, 1), **results}


def _watch_service(service: Service, stop: threading.Event) -> None:
    while not stop.wait(RESOURCE_INTERVAL):
        service.check_alive()
        service.sample_resources()


# -- after the run: the service's log and resources -------------------------------------


def _go_through_log(service: Service, timeline: Timeline, tally: Tally, settings: SoakSettings, world: World) -> None:
    events = timeline.snapshot()
    for line in service.snapshot():
        row = timeline.phase_at(line.t)
        if line.data is None:
            what = "traceback" if "Traceback" in line.raw or line.raw.startswith("  File ") else "a log line that is not JSON"
            tally.add(row, "service_problems", 1, {"what": what, "t": round(line.t, 3), "line": line.raw[:300]})
            continue
        action = line.event
        if action == "failed":
            hit = _responder_fault_hit(events, line, world, settings)
            if hit is not None:
                tally.add(hit.kind, "fault_hits")
                hit.details["hits"] = hit.details.get("hits", 0) + 1
        in_cache_fault = _cache_event_of(events, line.t, settings) is not None
        if action in ("cache_down", "cache_up") and not in_cache_fault:
            tally.add(row, "service_problems", 1, {
                "what": f"{action} outside any planned cache fault", "t": round(line.t, 3), "line": line.raw[:400],
            })  # fmt: skip
        if line.store_error() and not in_cache_fault:
            tally.add(row, "store_errors", 1, {"t": round(line.t, 3), "pid": line.pid, "line": line.raw[:400]})
    for incarnation in service.unplanned_exits:
        tally.add(timeline.phase_at(incarnation.ended or 0), "service_problems", 1, {
            "what": "the service exited on its own", "pid": incarnation.pid, "exit_code": incarnation.exit_code,
        })  # fmt: skip


def _responder_fault_hit(events: list, line: Any, world: World, settings: SoakSettings):
    """The responder fault this failure met: its CA's certificate, during it (plus one timeout)."""
    cert = world.certs.get(line.data.get("cert_sha1") or "")
    if cert is None:
        return None
    for event in events:
        if (
            event.kind in RESPONDER_FAULTS and event.ca == cert.ca
            and event.start <= line.t <= (event.end or float("inf")) + settings.timeout_s + 1
        ):  # fmt: skip
            return event
    return None


def _cache_event_of(events: list, t: float, settings: SoakSettings):
    """The cache fault whose window (stop .. back + refill_bound) holds t."""
    for event in events:
        if event.kind in CACHE_FAULTS:
            down = event.details.get("down_at", event.start)
            up = event.details.get("up_at")
            if down - 0.5 <= t <= (up if up is not None else float("inf")) + settings.refill_bound:
                return event
    return None


def _check_resources(service: Service, tally: Tally, settings: SoakSettings, timeline: Timeline) -> None:
    for incarnation in service.incarnations:
        samples = [s for s in incarnation.resources if s[0] >= incarnation.started + settings.rss_warmup]
        if len(samples) < 2:
            continue
        (t0, rss0, fds0), (t1, rss1, fds1) = samples[0], samples[-1]
        grew_mib, grew_fds = (rss1 - rss0) / 1024, fds1 - fds0
        if grew_mib > settings.rss_growth_mib or grew_fds > settings.fd_growth:
            tally.add(timeline.phase_at(t1), "service_problems", 1, {
                "what": "RSS or descriptors grew past the bound", "pid": incarnation.pid,
                "rss_mib": [round(rss0 / 1024, 1), round(rss1 / 1024, 1)], "fds": [fds0, fds1],
                "over_s": round(t1 - t0), "bound": [settings.rss_growth_mib, settings.fd_growth],
            })  # fmt: skip


def _resources(incarnation: Any, warmup: float) -> dict[str, Any]:
    samples = [s for s in incarnation.resources if s[0] >= incarnation.started + warmup] or incarnation.resources
    if not samples:
        return {"pid": incarnation.pid, "samples": 0}
    first, last = samples[0], samples[-1]
    return {
        "pid": incarnation.pid,
        "seconds": round(last[0] - first[0]),
        "rss_mib_start_end": [round(first[1] / 1024, 1), round(last[1] / 1024, 1)],
        "rss_mib_max": round(max(s[1] for s in samples) / 1024, 1),
        "fds_start_end": [first[2], last[2]],
        "fds_max": max(s[2] for s in samples),
        # one figure a minute: flat, a plateau, or a slope
        "rss_mib_per_minute": [
            round(s[1] / 1024, 1) for i, s in enumerate(samples)
            if i == 0 or int((s[0] - first[0]) // 60) != int((samples[i - 1][0] - first[0]) // 60)
        ],
    }


def _summary(
    settings: SoakSettings, world: World, service: Service, monitor: Monitor, readers: Readers,
    timeline: Timeline, tally: Tally, *, warm: dict, setup_s: float, measured: float, metrics: dict | None,
) -> dict[str, Any]:  # fmt: skip
    lines = service.snapshot()
    actions = Counter(line.event for line in lines if line.data)
    failures = Counter(line.data.get("reason") for line in lines if line.data and line.event == "failed")
    events = timeline.snapshot()
    cache_events = [e for e in events if e.kind in CACHE_FAULTS]
    incarnations = service.incarnations
    all_certs = world.certs.all()
    return {
        "provider": settings.provider,
        "cache": world.cache_uri,
        "measured_s": round(measured, 1),
        "setup_s": round(setup_s, 1),
        "first_warm": warm,
        "all_valid_after_start_s": (
            round(monitor.all_valid_at - incarnations[0].started, 1) if monitor.all_valid_at else None
        ),
        "certificates": len([c for c in all_certs if c.expected_from is None]),
        "certificates_replaced": len([c for c in all_certs if c.retired_at is not None]),
        "renewals_logged": actions.get("updated", 0),
        "failures_logged_by_reason": dict(failures),
        "log_actions": dict(actions),
        "faults_run": dict(Counter(e.kind for e in events)),
        "service_processes": len(incarnations),
        "service_kills": sum(e.kind == "kill" for e in events),
        "service_unplanned_exits": len(service.unplanned_exits),
        "service_stop": service.stop_result,
        "resources_first_process": _resources(incarnations[0], settings.rss_warmup),
        "resources_last_process": _resources(incarnations[-1], settings.rss_warmup),
        "resources_every_process": [
            {**_resources(i, settings.rss_warmup), "ended_by": "SIGKILL" if i.exit_code == -9 else i.exit_code}
            for i in incarnations
        ],
        "cache_down_lines": actions.get("cache_down", 0),
        "cache_up_lines": actions.get("cache_up", 0),
        "outages_metric_deltas": [e.details.get("outages_metric_delta") for e in cache_events],
        "refill_s": [e.details.get("refill_s") for e in cache_events],
        "responder_recovery_s": {
            kind: [e.details.get("recovery_s") for e in events if e.kind == kind]
            for kind in dict.fromkeys(e.kind for e in events if "recovery_s" in e.details or e.ca is not None)
            if kind != "cert_replace"
        },
        "responder_faults": [
            f"{e.kind} {'abc'[e.ca]}: {e.details.get('hits', 0)} failures met, "
            f"{e.details.get('requests')} requests, started after {e.details.get('waited_for_renewals_s')} s"
            for e in events if e.kind in RESPONDER_FAULTS
        ],
        "replaced_cert_staple_s": [e.details.get("new_staple_s") for e in events if e.kind == "cert_replace"],
        "responder_requests": world.farm.counts() if world.farm else None,
        "monitor": monitor.figures(),
        "commands": readers.figures(),
        "bounds": {
            "write_visible_s": settings.write_visible_within,
            "refill_s": settings.refill_bound,
            "responder_recovery_s": settings.responder_recovery,
            "replaced_cert_s": settings.replace_bound,
            "rss_growth_mib": settings.rss_growth_mib,
            "fd_growth": settings.fd_growth,
        },
        "final_metrics": {
            k: v for k, v in (metrics or {}).items()
            if k in ("staplectl_cache_up", "staplectl_cache_outages_total", "staplectl_fetch_success_total",
                     "staplectl_fetch_failures_total", "staplectl_certificates", "staplectl_state_up",
                     "staplectl_state_outages_total")
        },
        "violations": tally.violations(),
    }
