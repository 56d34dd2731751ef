#!/usr/bin/env python3
"""One CA's outage and another CA's certificates: does the one touch the other?

CA X has --x certificates (200) whose responder accepts and never answers;
CA Y has --y certificates (50) whose responder answers at once. On each
provider in --providers (local, memcache, redis: real servers, started
here on loopback), three scenarios:

warm      the installed `staplectl warm`, --timeout --timeout (10 s), on an
          empty cache each time:
            Y alone               warm Y/
            Y while X warms       warm X/ in one process, then warm Y/ in
                                  another while the first is still out
            X and Y in one warm   warm X/ Y/
            X alone               warm X/
          invariants: Y while X warms within 1.5x Y alone, no Y failure;
          X alone within 1.5x one timeout.
prefetch  the installed `staplectl prefetch` service over X and Y for
          --minutes (10), responses living --validity seconds (120), X
          down throughout; the store is read from outside every second and
          each Y staple validated with cryptography (tests/soak's reader
          and judge, which share nothing with the engine).
          invariant: 0 staple-seconds lapsed for Y once first filled.
request   the request path (Stapler.staple, in this process) for every Y
          certificate with nothing cached, --rounds times, alone and then
          while 8 threads ask for X certificates without pause.
          invariants: no Y failure; Y's p99 while X hangs under the
          request budget (2 s).

    .venv/bin/python bench/outage.py [--providers local,memcache,redis] [--x 200] [--y 50]
        [--timeout 10] [--minutes 10] [--validity 120] [--rounds 4] [--json out.json]

Prints a table per provider, and whether every invariant held; exit 1 when
one did not. tests/test_outage.py runs the same functions, shortened.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.store.cache import Cache  # noqa: E402
from engine.ocsp.certs import load_leaf  # noqa: E402
from engine.refresh.fetch import FetchOptions  # noqa: E402
from engine.locks.fetchlocks import FetchLocks  # noqa: E402
from engine.responders.health import ResponderHealth  # noqa: E402
from engine.store.providers import open_provider  # noqa: E402
from engine.refresh.stapler import Stapler, StaplerOptions  # noqa: E402
from engine.responders.transport import TransportOptions  # noqa: E402
from bench.leaves import issue_leaves  # noqa: E402
from tests.loopback import CONFIG_ALLOW, LOOPBACK  # noqa: E402
from tests.pki import PKI  # noqa: E402
from tests.responder import Behaviour, ScriptedResponder  # noqa: E402
from tests.servers import ServerProcess, start_memcached, start_redis  # noqa: E402
from tests.soak.ocspcheck import IssuerIds, judge  # noqa: E402
from tests.soak.store import open_reader  # noqa: E402

PROGRAM = str(Path(sys.executable).with_name("staplectl"))
PROVIDERS = ("local", "memcache", "redis")


# -- the world: two CAs, their responders, their certificates ----------------------


@dataclass
class World:
    work: Path
    x_responder: ScriptedResponder
    y_responder: ScriptedResponder
    x_dir: Path
    y_dir: Path
    #: Y's certificates: (sha1, certificate), for judging what is stored
    y_certs: list[tuple[str, Any]]
    y_issuer: IssuerIds

    def stop(self) -> None:
        self.x_responder.stop()
        self.y_responder.stop()


def build_world(work: Path, x: int, y: int, validity: float) -> World:
    """X's responder hangs for good; Y's answers at once, responses living ``validity`` s."""
    x_responder, y_responder = ScriptedResponder(), ScriptedResponder()
    x_responder.pki = PKI(work / "pki-x", x_responder.url)
    y_responder.pki = PKI(work / "pki-y", y_responder.url)
    x_responder.default = Behaviour(hang=True)
    y_responder.default = Behaviour(this_update_offset=-1, next_update_offset=validity - 1)
    x_dir, y_dir = work / "x" / "certs", work / "y" / "certs"
    x_dir.parent.mkdir(parents=True)
    y_dir.parent.mkdir(parents=True)
    issue_leaves(x_responder.pki, x, x_dir)
    issued = issue_leaves(y_responder.pki, y, y_dir)
    y_certs = [(load_leaf(i.chain_path).cert_id, i.cert) for i in issued]
    x_responder.start()
    y_responder.start()
    return World(work, x_responder, y_responder, x_dir, y_dir, y_certs,
                 IssuerIds(y_responder.pki.intermediate.cert, issued[0].cert))  # fmt: skip


@dataclass
class Store:
    """One provider's cache for the scenarios: its URI, emptied between them."""

    provider: str
    server: ServerProcess | None
    work: Path

    @property
    def uri(self) -> str:
        if self.server is None:
            return f"local:{self.work / 'staples.db'}"
        return f"{self.provider}://{self.server.host}:{self.server.port}"

    def empty(self) -> None:
        if self.server is None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.work / 'staples.db'}{suffix}").unlink(missing_ok=True)
            return
        command = b"flush_all\r\n" if self.provider == "memcache" else b"FLUSHALL\r\n"
        with socket.create_connection(self.server.address, timeout=5) as sock:
            sock.sendall(command)
            sock.recv(64)

    def reader(self):
        if self.server is None:
            return open_reader("local", store_path=self.work / "staples.db")
        return open_reader(self.provider, port=self.server.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def open_store(provider: str, work: Path) -> Store:
    server = {"local": lambda: None, "memcache": start_memcached, "redis": start_redis}[provider]()
    return Store(provider, server, work)


def env_for(home: Path, config: Path) -> dict[str, str]:
    env = {**os.environ, "STAPLECTL_HOME": str(home), "NO_COLOR": "1", "STAPLECTL_CONFIG": str(config)}
    env.pop("STAPLECTL_CACHE", None)
    return env


# -- warm ---------------------------------------------------------------------------


def _warm(paths: list[Path], home: Path, store: Store, timeout: float) -> subprocess.Popen:
    config = home.parent / f"{home.name}.toml"
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(CONFIG_ALLOW)
    return subprocess.Popen(
        [PROGRAM, "warm", *map(str, paths), "--json", "--timeout", str(timeout), "--cache", store.uri],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env_for(home, config),
    )  # fmt: skip


def _outcome(proc: subprocess.Popen, started: float) -> dict:
    out, _ = proc.communicate()
    took = time.monotonic() - started
    data = json.loads(out) if out.strip() else []
    rows = data["certificates"] if isinstance(data, dict) else data
    results = [row.get("result") or row.get("action") for row in rows]
    return {"seconds": round(took, 2), "certificates": len(rows), "failed": sum(r == "failed" for r in results)}


def warm_scenarios(world: World, store: Store, timeout: float, slack: float = 0.0) -> dict[str, Any]:
    """The four warms; ``slack`` seconds are allowed on top of 1.5x Y alone (the test
    suite's, on a loaded machine: a warm of 20 certificates is mostly process start-up)."""
    figures: dict[str, Any] = {}
    scenarios = [
        ("Y alone", [world.y_dir], None),
        ("Y while X warms", [world.x_dir], [world.y_dir]),
        ("X and Y in one warm", [world.x_dir, world.y_dir], None),
        ("X alone", [world.x_dir], None),
    ]
    for n, (name, first, second) in enumerate(scenarios):
        store.empty()
        home = world.work / f"home-warm-{store.provider}-{n}"  # a fresh lock directory and responder health
        started = time.monotonic()
        proc = _warm(first, home, store, timeout)
        if second is None:
            figures[name] = _outcome(proc, started)
            continue
        time.sleep(0.5)  # X's first exchanges are out
        y_started = time.monotonic()
        figures[name] = _outcome(_warm(second, home, store, timeout), y_started)
        figures[name]["X warm"] = _outcome(proc, started)
    alone = figures["Y alone"]["seconds"]
    during = figures["Y while X warms"]
    figures["invariants"] = {
        "Y while X warms within 1.5x Y alone": during["seconds"] <= 1.5 * alone + slack,
        "no Y failure while X warms": during["failed"] == 0 and during["certificates"] == len(world.y_certs),
        "X alone within 1.5x one timeout": figures["X alone"]["seconds"] <= 1.5 * timeout,
    }
    return figures


# -- the prefetch service -------------------------------------------------------------


def prefetch_scenario(world: World, store: Store, seconds: float, timeout: float, validity: float) -> dict[str, Any]:
    """The service over X and Y for ``seconds``, X down: Y's staple-seconds lapsed, read from outside."""
    store.empty()
    home = world.work / f"home-prefetch-{store.provider}"
    home.mkdir(parents=True, exist_ok=True)
    config = world.work / f"prefetch-{store.provider}.toml"
    config.write_text(
        f'cache = "{store.uri}"\n'
        f'certificates = ["{world.x_dir}/*.pem", "{world.y_dir}/*.pem"]\n\n'
        "[prefetch]\n"
        f'min_delay = "{max(1, int(validity / 24))}s"   # responses of {validity:g} s\n'
        'backoff_base = "2s"\n'
        f'backoff_cap = "{max(2, int(validity / 8))}s"\n\n'
        f'[responder]\ntimeout = "{timeout:g}s"\nallow = ["loopback"]\n'
    )
    log = (world.work / f"prefetch-{store.provider}.log").open("wb")
    proc = subprocess.Popen([PROGRAM, "prefetch", "--config", str(config), "--log-format", "json"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env_for(home, config))  # fmt: skip
    reader = store.reader()
    x_before = world.x_responder.request_count
    started = time.monotonic()
    filled_at = None
    lapsed = 0.0
    samples = 0
    worst: dict[str, str] = {}
    last = None
    try:
        while True:
            now_mono = time.monotonic()
            if filled_at is not None and now_mono - filled_at >= seconds:
                break
            if filled_at is None and now_mono - started > 60:
                raise RuntimeError(f"Y's staples were not all valid within 60 s of the start ({store.provider})")
            if proc.poll() is not None:
                raise RuntimeError(f"the prefetch service exited with {proc.returncode}; see {log.name}")
            try:
                stored = reader.read([sha1 for sha1, _ in world.y_certs])
            except Exception as exc:  # noqa: BLE001 - a read error counts as nothing valid
                stored, worst["read"] = {}, str(exc)
            now = time.time()
            invalid = []
            for sha1, cert in world.y_certs:
                entry = stored.get(sha1)
                verdict = judge(entry[1], cert, world.y_issuer) if entry else None
                if verdict is None or not verdict.valid_at(now):
                    invalid.append(sha1)
                    worst[sha1] = "missing" if verdict is None else (verdict.why_not_at(now) or "?")
            if filled_at is None:
                if not invalid:
                    filled_at = time.monotonic()
                    first_fill = filled_at - started
            else:
                samples += 1
                lapsed += len(invalid) * (now_mono - last)
            last = now_mono
            time.sleep(1.0)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        reader.close()
    renewals = sum(1 for line in Path(log.name).read_text().splitlines() if '"event": "updated"' in line or '"action": "updated"' in line)
    return {
        "measured_s": round(seconds, 1),
        "first_fill_s": round(first_fill, 2),
        "samples": samples,
        "y_lapsed_staple_s": round(lapsed, 1),
        "renewals_logged": renewals,
        "x_requests": world.x_responder.request_count - x_before,
        "invariants": {"0 staple-seconds lapsed for Y": lapsed == 0},
        **({"lapsed_examples": dict(list(worst.items())[:5])} if lapsed else {}),
    }


# -- the request path ---------------------------------------------------------------------


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def request_scenario(world: World, store: Store, timeout: float, rounds: int, budget: float = 2.0) -> dict[str, Any]:
    """Stapler.staple for every Y certificate with nothing cached, alone and while X is asked without pause."""
    locks_dir = world.work / f"locks-request-{store.provider}"
    stapler = Stapler(
        Cache(open_provider(store.uri)), FetchLocks(locks_dir),
        fetch_options=FetchOptions(transport=TransportOptions(timeout=timeout, allow=LOOPBACK)),
        options=StaplerOptions(request_budget=budget), health=ResponderHealth(locks_dir),
    )  # fmt: skip
    y_leaves = [load_leaf(path) for path in sorted(world.y_dir.glob("*.pem"))]
    x_leaves = [load_leaf(path) for path in sorted(world.x_dir.glob("*.pem"))]

    def measure() -> tuple[list[float], int]:
        times, failed = [], 0
        for _ in range(rounds):
            for leaf in y_leaves:
                stapler.cache.delete(leaf.cert_id)  # through our own connections: nothing cached
            for leaf in y_leaves:
                began = time.perf_counter()
                result = stapler.staple(leaf)
                times.append(time.perf_counter() - began)
                failed += result.staple is None
        return times, failed

    try:
        alone, alone_failed = measure()
        stop = threading.Event()
        x_calls = [0]

        def ask_x(offset: int) -> None:
            n = offset
            while not stop.is_set():
                stapler.staple(x_leaves[n % len(x_leaves)])
                x_calls[0] += 1
                n += 8

        threads = [threading.Thread(target=ask_x, args=(k,), daemon=True) for k in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(0.2)  # X's requests are out
        during, during_failed = measure()
        stop.set()
        for thread in threads:
            thread.join(budget + 5)
    finally:
        stapler.cache.close()
        stapler.locks.close()
    figures = {
        "samples": len(alone),
        "y_alone_p50_ms": round(statistics.median(alone) * 1000, 2),
        "y_alone_p99_ms": round(_p99(alone) * 1000, 2),
        "y_while_x_hangs_p50_ms": round(statistics.median(during) * 1000, 2),
        "y_while_x_hangs_p99_ms": round(_p99(during) * 1000, 2),
        "y_failed_alone": alone_failed,
        "y_failed_while_x_hangs": during_failed,
        "x_requests_made": x_calls[0],
    }
    figures["invariants"] = {
        "no Y failure": alone_failed == 0 and during_failed == 0,
        "Y p99 while X hangs under the request budget": _p99(during) < budget,
    }
    return figures


# -- the whole run -----------------------------------------------------------------------


def held(figures: dict[str, Any]) -> bool:
    return all(all(f.get("invariants", {}).values()) for f in figures.values())


def run_provider(world: World, provider: str, args: argparse.Namespace) -> dict[str, Any]:
    store = open_store(provider, world.work / f"store-{provider}")
    store.work.mkdir(parents=True, exist_ok=True)
    try:
        return {
            "warm": warm_scenarios(world, store, args.timeout),
            "prefetch": prefetch_scenario(world, store, args.minutes * 60, args.timeout, args.validity),
            "request": request_scenario(world, store, args.timeout, args.rounds),
        }
    finally:
        store.stop()


def print_provider(provider: str, figures: dict[str, Any], timeout: float) -> None:
    print(f"== {provider} ==")
    warm = figures["warm"]
    alone = warm["Y alone"]["seconds"]
    print(f"  {'warm scenario':<22} {'seconds':>8} {'certificates':>13} {'failed':>7}")
    for name in ("Y alone", "Y while X warms", "X and Y in one warm", "X alone"):
        f = warm[name]
        ratio = f"{f['seconds'] / alone:.1f}x Y alone" if name.startswith("Y") else f"{f['seconds'] / timeout:.2f}x timeout"
        print(f"  {name:<22} {f['seconds']:>8.2f} {f['certificates']:>13} {f['failed']:>7}  {ratio}")
    p = figures["prefetch"]
    print(f"  prefetch: {p['measured_s']:g} s measured after a first fill of {p['first_fill_s']} s, "
          f"Y lapsed {p['y_lapsed_staple_s']} staple-s, {p['renewals_logged']} renewals, "
          f"{p['x_requests']} requests to X")  # fmt: skip
    r = figures["request"]
    print(f"  request path, {r['samples']} Y staples: p50/p99 alone {r['y_alone_p50_ms']}/{r['y_alone_p99_ms']} ms, "
          f"while X hangs {r['y_while_x_hangs_p50_ms']}/{r['y_while_x_hangs_p99_ms']} ms; "
          f"Y failed {r['y_failed_alone']}/{r['y_failed_while_x_hangs']}; {r['x_requests_made']} X requests")  # fmt: skip
    for part in ("warm", "prefetch", "request"):
        for invariant, ok in figures[part]["invariants"].items():
            print(f"  {'ok  ' if ok else 'FAIL'} {part}: {invariant}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", default=",".join(PROVIDERS), help="comma-separated (local,memcache,redis)")
    parser.add_argument("--x", type=int, default=200, help="certificates of the CA that is down (200)")
    parser.add_argument("--y", type=int, default=50, help="certificates of the healthy CA (50)")
    parser.add_argument("--timeout", type=float, default=10.0, help="responder timeout (10 s)")
    parser.add_argument("--minutes", type=float, default=10.0, help="the prefetch scenario's measured time (10)")
    parser.add_argument("--validity", type=float, default=120.0, help="Y's responses live this long, s (120)")
    parser.add_argument("--rounds", type=int, default=4, help="request-path rounds over Y (4)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    providers = [p for p in args.providers.split(",") if p]
    unknown = set(providers) - set(PROVIDERS)
    if unknown:
        parser.error(f"unknown providers: {', '.join(sorted(unknown))}")
    work = Path(tempfile.mkdtemp(prefix="staplectl-outage-"))
    world = build_world(work, args.x, args.y, args.validity)
    results: dict[str, Any] = {}
    try:
        for provider in providers:
            results[provider] = run_provider(world, provider, args)
            print_provider(provider, results[provider], args.timeout)
    finally:
        world.stop()
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2))
    ok = all(held(figures) for figures in results.values())
    print("every invariant held" if ok else "SOME INVARIANT FAILED")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
