"""The tallies of one run, per fault kind, and how they are shown.

Rows are the fault kinds that ran plus "healthy" (time in no fault and no
fault's aftermath). Columns marked as violations must be zero; the others
are figures (how often, how long). Each violation also keeps its first
examples, with times and the data that shows it, so that a failed run
says what happened and not only how often.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from typing import Any

#: (key, heading, is an invariant that must stay zero)
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("runs", "runs", False),
    ("renewals", "renewals", False),
    ("fault_hits", "fault hits", False),
    ("lapsed_healthy_s", "lapsed healthy s", True),
    ("lapsed_excused_s", "lapsed in fault s", False),
    ("lost_writes", "lost writes", True),
    ("vanished", "vanished", True),
    ("invalid_stored", "invalid stored", True),
    ("expired_stored", "expired stored", True),
    ("rollbacks", "rollbacks", True),
    ("invalid_inspected", "invalid inspected", True),
    ("invalid_exported", "invalid exported", True),
    ("served_expired", "served expired", True),
    ("check_false_ok", "check false OK", True),
    ("dashboard_false_valid", "dashboard false valid", True),
    ("store_errors", "store errors", True),
    ("service_problems", "service problems", True),
    ("command_failures", "command failures", True),
    ("commands", "commands", False),
    ("refill_s", "refill s (max)", False),
    ("recovery_s", "recovery s (max)", False),
)
VIOLATIONS = tuple(key for key, _, violation in COLUMNS if violation)
#: examples kept per violation kind
EXAMPLES = 12


class Tally:
    """Counters per (row, column), the examples of each violation, and run figures. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.maxima: dict[str, dict[str, float]] = defaultdict(dict)
        self.examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.example_counts: dict[str, int] = defaultdict(int)
        self.info: dict[str, Any] = {}

    def add(self, row: str, key: str, amount: float = 1.0, example: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.rows[row][key] += amount
            if example is not None:
                self.example_counts[key] += 1
                if len(self.examples[key]) < EXAMPLES:
                    self.examples[key].append({"row": row, **example})

    def maximum(self, row: str, key: str, value: float) -> None:
        with self._lock:
            self.maxima[row][key] = max(self.maxima[row].get(key, 0.0), value)

    def value(self, row: str, key: str) -> float:
        with self._lock:
            if key in ("refill_s", "recovery_s"):
                return self.maxima.get(row, {}).get(key, 0.0)
            return self.rows.get(row, {}).get(key, 0.0)

    def total(self, key: str) -> float:
        with self._lock:
            return sum(row.get(key, 0.0) for row in self.rows.values())

    def row_names(self) -> list[str]:
        with self._lock:
            names = set(self.rows) | set(self.maxima)
        return sorted(names, key=lambda n: (n == "healthy", n))

    def violations(self) -> dict[str, float]:
        return {key: round(self.total(key), 2) for key in VIOLATIONS}


def table(tally: Tally) -> str:
    """The per-fault table: one row per fault kind and healthy, a column per figure."""
    names = tally.row_names()
    keys = [k for k, _, _ in COLUMNS]
    headings = ["row"] + [h + (" *" if v else "") for _, h, v in COLUMNS]
    cells = []
    for name in [*names, "TOTAL"]:
        row = [name]
        for key in keys:
            if name == "TOTAL":
                value = (
                    max((tally.value(n, key) for n in names), default=0.0)
                    if key in ("refill_s", "recovery_s") else tally.total(key)
                )  # fmt: skip
            else:
                value = tally.value(name, key)
            row.append(_fmt(value))
        cells.append(row)
    # Columns are narrow numbers under long headings: print headings as a
    # numbered legend and the table with the numbers.
    legend = "  ".join(f"[{i}] {h}" for i, h in enumerate(headings[1:], 1))
    widths = [max(len(headings[0]), *(len(r[0]) for r in cells))] + [
        max(len(f"[{i}]"), *(len(r[i]) for r in cells)) for i in range(1, len(headings))
    ]
    lines = [legend, "(* an invariant: must be 0)", ""]
    head = [headings[0].ljust(widths[0])] + [f"[{i}]".rjust(widths[i]) for i in range(1, len(headings))]
    lines.append("  ".join(head))
    for row in cells:
        lines.append("  ".join([row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(row))]))
    return "\n".join(lines)


def summary_lines(summary: dict[str, Any]) -> str:
    width = max(len(k) for k in summary)
    return "\n".join(f"{k:<{width}}  {_plain(v)}" for k, v in summary.items())


def examples_text(tally: Tally) -> str:
    lines = []
    for key in VIOLATIONS:
        found = tally.examples.get(key)
        if not found:
            continue
        lines.append(f"{key}: {tally.example_counts[key]} example(s), first {len(found)}:")
        lines += [f"  {json.dumps(e, default=str)[:600]}" for e in found]
    return "\n".join(lines)


def as_json(tally: Tally, summary: dict[str, Any], faults: list[dict[str, Any]], settings: dict[str, Any]) -> dict:
    rows = {
        name: {key: round(tally.value(name, key), 3) for key, _, _ in COLUMNS} for name in tally.row_names()
    }
    return {
        "settings": settings,
        "summary": summary,
        "rows": rows,
        "violations": tally.violations(),
        "examples": {k: v for k, v in tally.examples.items()},
        "faults": faults,
    }


def _fmt(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.1f}"


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)
