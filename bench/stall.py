#!/usr/bin/env python3
"""What the design is for: lookups of cached staples while responders hang.

N threads make request-path lookups for cached certificates while K other
certificates' responders accept and never answer. Four designs, on the
local store and on a real memcached, all in one run:

  (a) old mod_ssl: one global mutex held across lookup and fetch
  (b) httpd 2.4 today: lock-free cache reads, ONE refresh mutex, second look
  (c) per-certificate fetch locks (engine.refresh.stapler)
  (d) per-certificate fetch locks with the prefetch worker running

Beside the lookups, one thread keeps fetching certificates of a healthy
responder on the request path (their staples deleted first): the "fetch"
columns show whether those queue behind the hanging responders.

Prints a table of p50 / p99 / max lookup latency and lookups per second;
--json PATH writes the same figures.

    .venv/bin/python bench/stall.py [--threads 4] [--hanging 4] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.store.cache import Cache  # noqa: E402
from engine.ocsp.certs import Leaf, load_leaf  # noqa: E402
from engine.errors import StapleError  # noqa: E402
from engine.refresh.fetch import FetchOptions, fetch, store  # noqa: E402
from engine.store.providers import open_provider  # noqa: E402
from engine.refresh.stapler import Lookup, Stapler, StaplerOptions  # noqa: E402
from engine.locks.fetchlocks import FetchLocks  # noqa: E402
from engine.responders.transport import TransportOptions  # noqa: E402
from tests.loopback import LOOPBACK  # noqa: E402
from tests.pki import PKI  # noqa: E402
from tests.responder import Behaviour, ScriptedResponder  # noqa: E402
from tests.servers import start_memcached  # noqa: E402


class GlobalMutexStapler(Stapler):
    """(a) mod_ssl before 2.4.16: one mutex around lookup, check AND fetch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._global = threading.Lock()

    def staple(self, leaf: Leaf) -> Lookup:
        with self._global:
            current = self.cached(leaf)
            if self.usable(current, self.clock.now()):
                return Lookup(current, "cache")
            return self._fetch_and_store(leaf)

    def _fetch_and_store(self, leaf: Leaf) -> Lookup:
        try:
            staple = fetch(leaf, self.fetch_options, self.clock)
        except StapleError as error:
            return Lookup(None, "none", error)
        store(self.cache, leaf, staple, self.clock.now(), self.policy)
        return Lookup(staple, "fetched")


class RefreshMutexStapler(GlobalMutexStapler):
    """(b) httpd 2.4.16+: cache reads without a lock, one refresh mutex, a second look."""

    def staple(self, leaf: Leaf) -> Lookup:
        current = self.cached(leaf)
        if self.usable(current, self.clock.now()):
            return Lookup(current, "cache")
        with self._global:
            current = self.cached(leaf)
            if self.usable(current, self.clock.now()):
                return Lookup(current, "cache")
            return self._fetch_and_store(leaf)


def _serve(responder: ScriptedResponder) -> None:
    responder.start()
    threading.Event().wait()


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def run_mode(
    stapler: Stapler, cached: list[Leaf], hanging: list[Leaf], cold: list[Leaf], threads: int, seconds: float
) -> dict:
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    misses = [0] * threads
    cold_latencies: list[float] = []

    def lookups(i: int) -> None:
        mine = latencies[i]
        n = 0
        while not stop.is_set():
            leaf = cached[(i + n) % len(cached)]
            n += 1
            started = time.perf_counter()
            result = stapler.staple(leaf)
            mine.append(time.perf_counter() - started)
            if result.staple is None:
                misses[i] += 1

    def hang(leaf: Leaf) -> None:
        while not stop.is_set():
            stapler.staple(leaf)

    def refetch_cold() -> None:
        # a certificate of a healthy responder that must be fetched now:
        # does it queue behind the hanging ones?
        n = 0
        while not stop.wait(0.02):
            leaf = cold[n % len(cold)]
            n += 1
            stapler.cache.delete(leaf.cert_id)
            started = time.perf_counter()
            stapler.staple(leaf)
            cold_latencies.append(time.perf_counter() - started)

    hangers = [threading.Thread(target=hang, args=(leaf,), daemon=True) for leaf in hanging]
    for t in hangers:
        t.start()
    time.sleep(0.2)  # let the hanging fetches get stuck first
    workers = [threading.Thread(target=lookups, args=(i,), daemon=True) for i in range(threads)]
    workers.append(threading.Thread(target=refetch_cold, daemon=True))
    started = time.perf_counter()
    for t in workers:
        t.start()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - started
    # lookups still blocked (design a) finish late; they count, but the
    # rate is over the measured interval only
    for t in workers + hangers:
        t.join(60)
    values = sorted(v for per in latencies for v in per)
    return {
        "lookups": len(values),
        "lookups_per_s": len(values) / elapsed,
        "p50_ms": percentile(values, 0.50) * 1000,
        "p99_ms": percentile(values, 0.99) * 1000,
        "max_ms": (values[-1] if values else float("nan")) * 1000,
        "no_staple": sum(misses),
        "cold_fetches": len(cold_latencies),
        "cold_p50_ms": percentile(sorted(cold_latencies), 0.5) * 1000,
        "cold_max_ms": max(cold_latencies, default=float("nan")) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 2,
        help="lookup threads (default: one per core; more only measures queueing for the GIL)",
    )
    parser.add_argument("--hanging", type=int, default=4, help="certificates whose responder hangs (default 4)")
    parser.add_argument("--cached", type=int, default=32, help="cached certificates looked up (default 32)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per mode (default 3)")
    parser.add_argument("--timeout", type=float, default=2.0, help="responder timeout in every mode (default 2 s)")
    parser.add_argument("--stores", default="local,memcache", help="comma-separated: local, memcache")
    parser.add_argument("--designs", default="abcd", help="which designs to run (default abcd)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="staplectl-stall-"))
    responder = ScriptedResponder()
    pki = PKI(work / "pki", responder.url)
    responder.pki = pki
    cached_leaves = [load_leaf(pki.leaf(f"cached{i}").chain_path) for i in range(args.cached)]
    hanging_issued = [pki.leaf(f"hanging{i}") for i in range(args.hanging)]
    for issued in hanging_issued:
        responder.script(issued, Behaviour(hang=True))
    hanging_leaves = [load_leaf(i.chain_path) for i in hanging_issued]
    # healthy certificates fetched during the run (striped locks needed them
    # on stripes no hanging one used; per-certificate locks need nothing)
    cold_leaves: list[Leaf] = [load_leaf(pki.leaf(f"cold{n}").chain_path) for n in range(8)]
    # The responder runs in its own process, as a real one is on another
    # host: in this one it would compete for the GIL with the lookups.
    responder_process = multiprocessing.get_context("fork").Process(target=_serve, args=(responder,), daemon=True)
    responder_process.start()
    fetch_options = FetchOptions(transport=TransportOptions(timeout=args.timeout, allow=LOOPBACK))

    memcached = start_memcached() if "memcache" in args.stores else None
    stores = {}
    if "local" in args.stores:
        stores["local"] = f"local:{work / 'staples.db'}"
    if memcached:
        stores["memcache"] = f"memcache://{memcached.host}:{memcached.port}"

    designs = {
        "a": ("old mod_ssl: global mutex across fetch", GlobalMutexStapler, False),
        "b": ("httpd 2.4: one refresh mutex", RefreshMutexStapler, False),
        "c": ("per-certificate fetch locks", Stapler, False),
        "d": ("fetch locks + prefetch worker", Stapler, True),
    }
    results = []
    try:
        for store_name, uri in stores.items():
            for key, (label, cls, with_worker) in designs.items():
                if key not in args.designs:
                    continue
                cache = Cache(open_provider(uri))
                locks = FetchLocks(work / f"locks-{store_name}-{key}")
                options = StaplerOptions(prefetch=with_worker, request_budget=args.timeout)
                stapler = cls(cache, locks, fetch_options=fetch_options, options=options)
                for leaf in cached_leaves:
                    stapler.refresh(leaf)
                worker = None
                if with_worker:
                    from engine.refresh.prefetch import PrefetchWorker

                    worker = PrefetchWorker(stapler)
                    worker.load(cached_leaves + hanging_leaves)
                    worker.start()
                figures = run_mode(stapler, cached_leaves, hanging_leaves, cold_leaves, args.threads, args.seconds)
                if worker:
                    worker.stop()
                cache.close()
                results.append({"store": store_name, "design": key, "label": label, **figures})
                print(f"  measured {store_name} ({key}) {label}", file=sys.stderr)
    finally:
        responder_process.terminate()
        responder_process.join(5)
        if memcached:
            memcached.stop()

    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")


def print_table(results: list[dict]) -> None:
    header = (
        f"{'store':<9} {'design':<40} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'lookups/s':>10} "
        f"{'vs (a) p99':>11} {'fetch p50 ms':>13} {'fetch max ms':>13}"
    )
    print(header)
    print("-" * len(header))
    baseline = {r["store"]: r["p99_ms"] for r in results if r["design"] == "a"}
    for r in results:
        ratio = baseline.get(r["store"], float("nan")) / r["p99_ms"] if r["p99_ms"] else float("nan")
        print(
            f"{r['store']:<9} ({r['design']}) {r['label']:<36} {r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} "
            f"{r['max_ms']:>9.1f} {r['lookups_per_s']:>10.0f} {ratio:>10.0f}x "
            f"{r['cold_p50_ms']:>13.1f} {r['cold_max_ms']:>13.1f}"
        )
    print(
        "\nlookups: request-path lookups of cached certificates; fetch: request-path fetches of "
        "uncached certificates of a healthy responder"
    )


if __name__ == "__main__":
    main()
