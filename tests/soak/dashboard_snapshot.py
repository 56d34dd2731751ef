"""One look at the dashboard, headless: the real Textual app in its own process.

    python -m tests.soak.dashboard_snapshot --config FILE [--timeout 20]

Builds the app exactly as `staplectl dashboard` does
(staplectl.dashboard.factory.make_app on the loaded configuration, its
real Collector reading the real store), runs it with Textual's
`run_test()` (the headless driver tests/dashboard/test_app.py uses), waits
for its first read to be rendered, and prints one JSON object: per
certificate the state the table shows (rows.classify, the code that
colours the row) and the inspection's verdict and times. The soak sets
every "servable" row (good, due, stale) against what the store held.

Why the app and not only the Collector: an operator looks at the app; its
read runs in a Textual worker thread and is rendered from a message, and
that path is what must not show a staple as good that is not. The
Collector is what the app renders from, so its Snapshot is printed too.

Exit 0 with the JSON; 2 and {"error": ...} when the configuration or the
cache URI is bad (as the CLI); 3 when no read came within the timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from engine.errors import StapleError
from staplectl.config import load
from staplectl.dashboard.factory import make_app
from staplectl.dashboard.rows import classify

SIZE = (160, 40)


async def _drive(app, timeout: float) -> dict:
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.monotonic() + timeout
        while app.reads < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no read rendered within {timeout} s")
            await pilot.pause(0.05)
        snapshot = app.snapshot
        table = app.query_one("#certs")
        items = []
        for item in snapshot.items:
            shown = classify(item, snapshot)
            ins = item.inspection
            items.append({
                "cert_id": item.cert_id, "name": item.name, "state": shown.state,
                "valid": ins.valid if ins else None,
                "this_update": ins.this_update if ins else None,
                "next_update": ins.next_update if ins else None,
                "flags": list(shown.flags),
            })  # fmt: skip
        return {
            "taken_at": snapshot.taken_at, "cache_error": snapshot.cache_error,
            "state_error": snapshot.state_error, "rows": table.row_count, "items": items,
        }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    try:
        app = make_app(load(args.config, explicit=True), interval=60)
    except StapleError as error:
        print(json.dumps({"error": {"reason": error.reason, "message": str(error)}}))
        print(f"staplectl dashboard: {error}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_drive(app, args.timeout))
    except TimeoutError as error:
        print(json.dumps({"error": {"reason": "timeout", "message": str(error)}}))
        return 3
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
