"""staplectl locks: the fetch locks' figures, from any process.

Reads the lock directory's ``locks.stats`` without taking any lock
(engine.locks.stats), so it is safe to run, and to --watch, next to a busy
prefetch service. It never creates the directory or the file: before any
process has taken a fetch lock there is nothing to show, which is a normal
state of a fresh install, so that is exit 0 with an empty table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from engine.api import STATS_FILE, InputError, LockStatsError, ResponderHealth, StripeStats, read_stats as _read_stats
from staplectl import fmt
from staplectl.options import JsonOpt, command
from staplectl.printable import printable
from staplectl.table import print_table
from staplectl.terminal import Terminal

if TYPE_CHECKING:
    from rich.console import Group


def locks(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option("--all", help="Every stripe, also those never acquired.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw the table until Ctrl-C.")] = False,
    interval: Annotated[
        float,
        typer.Option("--interval", metavar="SECONDS", min=0.1, help="Seconds between redraws with --watch."),
    ] = 2.0,
    json_output: JsonOpt = False,
) -> None:
    """Show contention on the fetch locks, and who holds which certificate now.

    A fetch lock is per certificate; the figures are grouped in stripes
    (certificates by the first bits of their id) so that they stay readable
    with any number of certificates. One row per stripe that was ever used
    (--all: every stripe), with counts since the lock directory's stats
    file was created: acquisitions, contended acquisitions (had to wait for
    another thread or process fetching the same certificate) and their
    share, average and longest wait and hold, re-entries, how many of its
    certificates are held now, and the longest-held: certificate id, pid,
    for how long, and whether that process is still alive. Below, the responders marked down (one probe at
    a time goes to each until it answers). Exit 0, also when no process has
    used the locks yet (empty table).
    """
    with command(ctx, json_errors=json_output) as (opts, term):
        if watch and json_output:
            raise InputError("--watch redraws a table; for JSON, run locks --json repeatedly")
        directory = opts.load_config().locks.path()
        if watch:
            _watch(term, directory, show_all, interval)
            return
        stats = read_stats(directory)
        if json_output:
            term.json(snapshot(directory, stats, show_all, time.time()))
            return
        if not stats:
            term.info(f"no stripe statistics in {directory} yet: no process has taken a fetch lock there")
        if term.out.is_terminal:
            term.out.print(render(directory, stats, show_all, time.time(), term.out.width))
        else:
            _plain(term, directory, stats, show_all)


def read_stats(directory: Path) -> list[StripeStats]:
    """engine's read_stats, with an unreadable file as an error that names it."""
    try:
        return _read_stats(directory)
    except OSError as exc:
        raise LockStatsError(f"{directory / STATS_FILE}: cannot read: {exc.strerror or exc}") from None


def _row(s: StripeStats, now: float) -> dict[str, Any]:
    # A hold is counted when it ends: those in progress are in s.holders, not in the totals.
    finished = s.acquisitions
    return {
        **s.to_dict(),
        "contended_percent": round(100.0 * s.contended / s.acquisitions, 1) if s.acquisitions else 0.0,
        "avg_wait_seconds": s.total_wait / s.acquisitions if s.acquisitions else 0.0,
        "avg_hold_seconds": s.total_hold / finished if finished > 0 else 0.0,
        "held_for_seconds": max(0.0, now - s.holder_since) if s.holder_since else None,
        "held": len(s.holders),
    }


def _shown(stats: list[StripeStats], show_all: bool) -> list[StripeStats]:
    return stats if show_all else [s for s in stats if s.acquisitions or s.reentries or s.holder_pid]


def snapshot(directory: Any, stats: list[StripeStats], show_all: bool, now: float) -> dict[str, Any]:
    """What --json prints: totals over every stripe, the rows shown, and the responders down."""
    acquisitions = sum(s.acquisitions for s in stats)
    contended = sum(s.contended for s in stats)
    return {
        "responders_down": [state.to_dict() for state in ResponderHealth(Path(directory)).down().values()],
        "directory": str(directory),
        "stripes": len(stats),
        "acquisitions": acquisitions,
        "contended": contended,
        "contended_percent": round(100.0 * contended / acquisitions, 1) if acquisitions else 0.0,
        "max_wait_seconds": max((s.max_wait for s in stats), default=0.0),
        "held": sum(len(s.holders) for s in stats),
        "rows": [_row(s, now) for s in _shown(stats, show_all)],
    }


def _seconds(value: float) -> str:
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s" if value < 60 else fmt.duration(value)


HEADERS = ("stripe", "acquired", "contended", "%", "avg wait", "max wait", "avg hold", "max hold",
           "reentries", "held", "longest held", "pid", "held for", "alive")  # fmt: skip
#: what fits 80 columns, in a terminal narrower than the whole table
NARROW = ("stripe", "acquired", "contended", "%", "max wait", "held", "longest held", "held for")
#: the whole table's width, about, with a certificate id in "longest held"
WIDE_ENOUGH = 150


def _cells(row: dict[str, Any]) -> dict[str, Text | str]:
    holding = row["holder_pid"] is not None
    pct = row["contended_percent"]
    alive = Text("yes", style="green") if row["holder_alive"] else (Text("no (crashed)", style="red") if holding else "-")
    return {
        "stripe": str(row["stripe"]), "acquired": str(row["acquisitions"]), "contended": str(row["contended"]),
        "%": Text(f"{pct:.1f}", style="red" if pct >= 10 else ("yellow" if pct > 0 else "")),
        "avg wait": _seconds(row["avg_wait_seconds"]), "max wait": _seconds(row["max_wait_seconds"]),
        "avg hold": _seconds(row["avg_hold_seconds"]), "max hold": _seconds(row["max_hold_seconds"]),
        "reentries": str(row["reentries"]), "held": str(row["held"]) if holding else "-",
        "longest held": Text(row["holder_cert_sha1"] or "-"), "pid": str(row["holder_pid"]) if holding else "-",
        "held for": _seconds(row["held_for_seconds"]) if holding else "-", "alive": alive,
    }  # fmt: skip


def _plain(term: Terminal, directory: Any, stats: list[StripeStats], show_all: bool) -> None:
    """Piped: every column, one line per stripe, never squeezed to a width (grep it, cut it)."""
    data = snapshot(directory, stats, show_all, time.time())
    rows = [[str(cell) for cell in _cells(row).values()] for row in data["rows"]]
    print_table(term.out, HEADERS, rows)
    for line in [_summary(directory, data), *_down_lines(data)]:
        term.out.print(line, markup=False, soft_wrap=True)


def _summary(directory: Any, data: dict[str, Any]) -> str:
    return (f"{directory}: {data['stripes']} stripes, {len(data['rows'])} shown; {data['acquisitions']} acquisitions, "
            f"{data['contended']} contended ({data['contended_percent']:.1f} %), {data['held']} held now")  # fmt: skip


def render(directory: Any, stats: list[StripeStats], show_all: bool, now: float, width: int = 200) -> Group:
    """The table for a terminal ``width`` columns wide: the columns that fit, none cut."""
    from rich.console import Group  # here: every command imports this module
    from rich.table import Table

    data = snapshot(directory, stats, show_all, now)
    table = Table(box=None, header_style="bold", pad_edge=False)
    headers = HEADERS if width >= WIDE_ENOUGH else NARROW
    for name in headers:
        table.add_column(name, justify="left" if name in ("longest held", "alive") else "right", no_wrap=True)
    for row in data["rows"]:
        cells = _cells(row)
        if width < WIDE_ENOUGH and row["holder_cert_sha1"]:
            cells["longest held"] = Text(row["holder_cert_sha1"][:12] + "…")  # the start tells them apart
        table.add_row(*(cells[name] for name in headers))
    summary = Text(_summary(directory, data))
    down = [Text(line, style="red") for line in _down_lines(data)]
    return Group(table, summary, *down)


def _down_lines(data: dict[str, Any]) -> list[str]:
    return [
        printable(f"responder {r['key']} down since {r['down_since']} ({r['failures']} failed probes), "
                  f"next probe {r['next_probe']}: {r['last_error']}")  # fmt: skip
        for r in data["responders_down"]
    ]


def _watch(term: Terminal, directory: Any, show_all: bool, interval: float) -> None:
    """Redraw until Ctrl-C, which ends it with exit 0 (it is how one stops watching)."""
    try:
        from rich.live import Live

        with Live(console=term.out, auto_refresh=False, transient=False) as live:
            while True:
                live.update(render(directory, read_stats(directory), show_all, time.time(), term.out.width),
                            refresh=True)  # fmt: skip
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
