#!/usr/bin/env python3
"""The soak run: staplectl as operated, for N minutes per cache provider, under faults.

For each provider (local, memcache, redis, one after the other): three CAs
with 100 leaves each and responses living 60, 120 and 180 s, the real
`staplectl prefetch` service, one-shot commands every few seconds (check,
inspect, export --nginx/--haproxy, fetch, warm, a dashboard snapshot),
and faults one at a time (responders that hang, fail, lie or flap; the
cache restarted empty or down for 30 s; the service SIGKILLed, given a
broken configuration, or a replaced certificate). Every invariant is
checked from outside the service (tests/soak/monitor.py, readers.py): see
tests/soak/__init__.py for the parts and docs in each module for the rules.

Prints a table per provider (a row per fault kind and "healthy", a column
per figure; columns marked * are invariants and must be 0) and a summary,
and exits 1 when any invariant was broken. --json PATH writes everything,
with the first examples of each violation.

    .venv/bin/python bench/soak.py [--minutes 30] [--providers local,memcache,redis] [--json PATH]
        [--faults KIND,...] [--fault-seconds 45] [--gap-seconds 20] [--outage-seconds 30]
        [--validity 60,120,180] [--leaves 100] [--reader-interval 3] [--sample-interval 0.5]
        [--refill-bound 15] [--sabotage KIND,...] [--workdir DIR] [--keep]

--sabotage corrupt,delete,rollback,expired,sigstop plants violations on
purpose before the faults (tests/soak/sabotage.py): the run must then fail,
which shows the harness can.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.soak.run import run_provider
from tests.soak.settings import ALL_FAULTS, PROVIDERS, SoakSettings


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="measured minutes per provider (default 30)")
    parser.add_argument("--providers", type=_list, default=PROVIDERS, help="comma-separated (default: all three)")
    parser.add_argument("--json", type=Path, help="write the figures of every provider here")
    parser.add_argument("--faults", type=_list, default=ALL_FAULTS, help=f"fault kinds in order, cycled (default: {','.join(ALL_FAULTS)})")
    parser.add_argument("--fault-seconds", type=float, default=45.0,
                        help="length of a responder fault, capped at 40%% of the faulted CA's validity (default 45)")
    parser.add_argument("--gap-seconds", type=float, default=20.0, help="healthy time between faults (default 20)")
    parser.add_argument("--outage-seconds", type=float, default=30.0, help="how long the cache stays down (default 30)")
    parser.add_argument("--validity", type=lambda t: tuple(int(v) for v in _list(t)), default=(60, 120, 180),
                        help="seconds of validity of CA A, B, C's responses (default 60,120,180)")
    parser.add_argument("--leaves", type=int, default=100, help="leaves per CA (default 100)")
    parser.add_argument("--reader-interval", type=float, default=3.0, help="seconds between one-shot commands (default 3)")
    parser.add_argument("--sample-interval", type=float, default=0.5, help="seconds between reads of the store (default 0.5)")
    parser.add_argument("--refill-bound", type=float, default=15.0,
                        help="seconds the service has to refill the cache after it comes back (default 15)")
    parser.add_argument("--sabotage", type=_list, default=(), help="violations to plant on purpose")
    parser.add_argument("--workdir", type=Path, help="work here (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (always kept when a run fails)")
    args = parser.parse_args()

    results, crashed = [], {}
    started = time.time()

    def write_json() -> None:
        if args.json:
            payload = {
                "started": started, "python": sys.version.split()[0], "cpus": os.cpu_count(),
                "providers": {r.provider: r.to_json() for r in results}, "crashed": crashed,
            }  # fmt: skip
            args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")

    for provider in args.providers:
        settings = SoakSettings(
            provider=provider, seconds=args.minutes * 60, leaves_per_ca=args.leaves, validity=args.validity,
            faults=args.faults, fault_seconds=args.fault_seconds, gap_seconds=args.gap_seconds,
            outage_seconds=args.outage_seconds, reader_interval=args.reader_interval,
            sample_interval=args.sample_interval, refill_bound=args.refill_bound, sabotage=args.sabotage,
            workdir=str(args.workdir) if args.workdir else None, keep=args.keep,
        )  # fmt: skip
        try:
            results.append(run_provider(settings, say=lambda text: print(text, flush=True)))
        except Exception:  # one provider's crash must not lose the others' figures
            crashed[provider] = traceback.format_exc()
            print(f"[{provider}] the run itself failed:\n{crashed[provider]}", flush=True)
        write_json()
        print(flush=True)
    print("== violations per provider ==")
    for result in results:
        bad = {k: v for k, v in result.violations.items() if v}
        print(f"{result.provider:<9} {'FAILED ' + json.dumps(bad) if bad else 'ok: every invariant held'}")
    for provider in crashed:
        print(f"{provider:<9} FAILED: the run did not complete (see above)")
    return 1 if crashed or any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
