#!/usr/bin/env python3
"""What a fetch lock costs: uncontended acquire and release, per certificate.

Holds --count (20,000) different certificates one after another, --runs
(5) times, in a fresh lock directory, and prints the least time per hold:
the certificate's byte-range lock, its figures' record and its holder
slot, taken and let go. --json writes the figures.

    .venv/bin/python bench/locks.py [--count 20000] [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.locks.fetchlocks import FetchLocks  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="certificates held per run (20,000)")
    parser.add_argument("--runs", type=int, default=5, help="runs; the least is reported (5)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="staplectl-locks-"))
    ids = [hashlib.sha1(str(n).encode()).hexdigest() for n in range(args.count)]
    runs = []
    with FetchLocks(work / "locks") as locks:
        for _ in range(args.runs):
            began = time.perf_counter()
            for cert_id in ids:
                with locks.hold(cert_id, timeout=0):
                    pass
            runs.append((time.perf_counter() - began) / args.count)
    shutil.rmtree(work, ignore_errors=True)
    figures = {"count": args.count, "runs": args.runs, "least_us": round(min(runs) * 1e6, 2),
               "median_us": round(sorted(runs)[len(runs) // 2] * 1e6, 2)}  # fmt: skip
    print(f"{'holds':>8} {'runs':>5} {'least':>10} {'median':>10}")
    print(f"{args.count:>8} {args.runs:>5} {figures['least_us']:>7.2f} us {figures['median_us']:>7.2f} us")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
