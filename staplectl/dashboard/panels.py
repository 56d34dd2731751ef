"""From a Snapshot to the header and the lock panel: Rich renderables.

Plain functions (dolphie's panels), tested without an app. ``WaitHistory``
is the one thing kept across snapshots: the lock figures are counters since
the stats file was made, so what an operator wants to see, waits now
versus a minute ago, is the difference between two reads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from engine.api import StripeStats
from staplectl import fmt
from staplectl.dashboard.rows import FAILING, LABELS, NO_OCSP, STATES, STYLES, Counts, short_time
from staplectl.dashboard.snapshot import Snapshot
from staplectl.printable import printable

BLOCKS = "▁▂▃▄▅▆▇█"
HISTORY = 30
#: contended share from which a stripe is shown as a problem, not a hint
HOT_PERCENT = 10.0


#: seconds of waiting that fill a sparkline's block at least: a millisecond
#: between two reads is no news, and must not look like a ten-second stall
SPARK_FLOOR = 0.25


def spark(values: Iterable[float], width: int = HISTORY, floor: float = SPARK_FLOOR) -> str:
    """A sparkline scaled to its maximum (at least ``floor``); any wait at all shows above the bottom."""
    values = list(values)[-width:]
    top = max([*values, floor])
    if top <= 0:
        return BLOCKS[0] * len(values)
    return "".join(BLOCKS[0] if v <= 0 else BLOCKS[max(1, min(7, round(v / top * 7)))] for v in values)


class WaitHistory:
    """Seconds waited for stripes between consecutive reads, overall and per stripe."""

    def __init__(self, size: int = HISTORY) -> None:
        self.size = size
        self.total: deque[float] = deque(maxlen=size)
        self.by_stripe: dict[int, deque[float]] = {}
        self._last: dict[int, tuple[int, float]] | None = None

    def add(self, stripes: Iterable[StripeStats]) -> None:
        now = {s.stripe: (s.acquisitions, s.total_wait) for s in stripes}
        last, self._last = self._last, now
        if last is None:
            return  # a first read has nothing to compare with
        total = 0.0
        for stripe, (acquisitions, waited) in now.items():
            before = last.get(stripe, (0, 0.0))
            # counters that went back: the stats file was made anew
            delta = waited - before[1] if acquisitions >= before[0] else waited
            delta = max(0.0, delta)
            total += delta
            if delta > 0 or stripe in self.by_stripe:
                self.by_stripe.setdefault(stripe, deque(maxlen=self.size)).append(delta)
        self.total.append(total)


# -- header -----------------------------------------------------------------------


def counts_line(counts: Counts) -> Text:
    text = Text()
    for state in (*STATES, FAILING):
        n = counts[state]
        if state == NO_OCSP and not n:
            continue  # most hosts have none: no room taken for it
        if text:
            text.append("   ")
        text.append(str(n), style=f"bold {STYLES[state]}" if n and state != "good" else ("bold green" if n else "dim"))
        text.append(f" {LABELS[state]}", style="" if n else "dim")
    text.append(f"   of {counts.total} certificates", style="dim")
    return text


def worker_text(snapshot: Snapshot) -> Text:
    """Whether a prefetch worker keeps the staples fresh, from its heartbeats."""
    now = snapshot.taken_at
    alive = [w for w in snapshot.workers if w.alive(now)]
    text = Text("prefetch worker: ", style="dim")
    if snapshot.state_error:
        return text.append(f"state unreadable: {snapshot.state_error}", style="red")
    if alive:
        where = "in this dashboard" if snapshot.in_process else ", ".join(w.worker_id.split("/")[0] for w in alive)
        newest = max(alive, key=lambda w: w.beat)
        return text.append("alive", style="bold green").append(
            f" ({where}; last beat {fmt.duration(now - newest.beat)} ago, {newest.certificates} certificates)"
        )
    if not snapshot.prefetch_expected:
        return text.append("off (prefetch.enabled = false: the request path refreshes)", style="dim")
    if snapshot.workers:
        last = max(snapshot.workers, key=lambda w: w.beat)
        return text.append("NOT RUNNING", style="bold red").append(
            f" (last beat {fmt.duration(now - last.beat)} ago from {last.worker_id.split('/')[0]})"
        )
    if snapshot.state_exists:
        return text.append("NOT RUNNING", style="bold red").append(" (no heartbeat)")
    return text.append("none has run", style="bold yellow").append(f" (no {snapshot.state_path})", style="dim")


def actions_text(snapshot: Snapshot) -> Text:
    """The renewal actions (an nginx reload, a push to HAProxy...): the failing in red."""
    now = snapshot.taken_at
    text = Text("actions: ", style="dim")
    for index, action in enumerate(snapshot.actions):
        if index:
            text.append(" · ", style="dim")
        if action.failures:
            text.append(f"{action.name} FAILING", style="bold red").append(
                f" ({action.failures}x: {printable(action.last_error or '')[:80]})", style="red"
            )
        elif action.last_success is not None:
            text.append(action.name, style="green").append(f" ok {fmt.duration(now - action.last_success)} ago")
        else:
            text.append(f"{action.name} not run yet", style="dim")
        if action.pending:
            text.append(f", {action.pending} pending", style="yellow")
    return text


def header(snapshot: Snapshot, counts: Counts, *, paused: bool = False, reading: bool = False) -> Group:
    where = Text.assemble(("cache ", "dim"), (snapshot.cache_uri, "bold"), ("   ", ""))
    where.append_text(worker_text(snapshot))
    when = Text.assemble(("read ", "dim"), (short_time(snapshot.taken_at) + " UTC", ""))
    if snapshot.read_seconds >= 1:
        when.append(f" (took {snapshot.read_seconds:.1f} s)", style="yellow")
    if paused:
        when.append("   PAUSED", style="bold reverse yellow")
    elif reading:
        when.append("   reading…", style="dim")
    lines: list[RenderableType] = [counts_line(counts), where, when]
    if snapshot.actions:
        lines.append(actions_text(snapshot))
    if snapshot.problems:
        first = snapshot.problems[0]
        more = f" (and {len(snapshot.problems) - 1} more)" if len(snapshot.problems) > 1 else ""
        lines.append(Text(f"not loaded: {first}{more}", style="yellow"))
    return Group(*lines)


def banner(snapshot: Snapshot) -> Text | None:
    """The one thing that must not be missed: the cache cannot be read."""
    if snapshot.cache_error is None:
        return None
    if snapshot.data_at is None:
        shown = "nothing read from it yet"
    else:
        ago = fmt.duration(snapshot.taken_at - snapshot.data_at)
        shown = f"rows below are from {short_time(snapshot.data_at)} UTC, {ago} ago"
    return Text(f"CACHE UNREACHABLE: {snapshot.cache_error} — {shown}; retrying at every refresh")


# -- locks ------------------------------------------------------------------------


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s" if value < 60 else fmt.duration(value)


def _percent(s: StripeStats) -> float:
    return 100.0 * s.contended / s.acquisitions if s.acquisitions else 0.0


def lock_panel(
    snapshot: Snapshot, history: WaitHistory | None = None, names: Mapping[str, str] | None = None, rows: int = 6
) -> Group:
    """The stripes worth a look: with a certificate held now, or contended most; then totals and the wait history.

    A stripe is a group of certificates for the figures; each certificate has its own lock.
    """
    names = names or {}
    if snapshot.stripes_error:
        return Group(Text(f"stripe figures unreadable: {snapshot.stripes_error}", style="red"))
    stats = snapshot.stripes
    if not stats:
        never = f"no stripe figures yet in {snapshot.lock_dir}: no process has taken a fetch lock there"
        return Group(Text(never, style="dim"))
    used = [s for s in stats if s.acquisitions or s.holder_pid]
    used.sort(key=lambda s: (s.holder_pid is None, -_percent(s), -s.max_wait, s.stripe))
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("Stripe", "Acquired", "Cont. %", "Avg wait", "Max wait", "Max hold"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Waits", no_wrap=True)
    table.add_column("Held for", justify="right", no_wrap=True)
    table.add_column("Holder now", no_wrap=True, overflow="ellipsis")
    now = snapshot.taken_at
    for s in used[:rows]:
        pct = _percent(s)
        style = "bold red" if pct >= HOT_PERCENT else ("yellow" if s.contended else "")
        holder, held_for = Text("-", style="dim"), "-"
        if s.holder_pid:
            who = names.get(s.holder_cert_id or "", s.holder_cert_id or "?")
            more = f" +{len(s.holders) - 1} more" if len(s.holders) > 1 else ""
            holder = Text(f"{who} (pid {s.holder_pid}){more}")
            if not s.holder_alive:
                holder = Text(f"CRASHED holder pid {s.holder_pid}: {who}{more}", style="bold red")
            held_for = _seconds(max(0.0, now - (s.holder_since or now)))
        waits = history.by_stripe.get(s.stripe, ()) if history else ()
        table.add_row(
            str(s.stripe), str(s.acquisitions), Text(f"{pct:.1f}", style=style),
            _seconds(s.total_wait / s.acquisitions if s.acquisitions else 0.0), _seconds(s.max_wait),
            _seconds(s.max_hold), Text(spark(waits, 12), style="cyan"), held_for, holder,
            style="on grey15" if s.contended else None,
        )  # fmt: skip
    acquisitions = sum(s.acquisitions for s in stats)
    contended = sum(s.contended for s in stats)
    pct = 100.0 * contended / acquisitions if acquisitions else 0.0
    held = sum(len(s.holders) for s in stats)
    summary = Text.assemble(
        (f"{len(stats)} stripes, {len(used)} used", ""),
        (f" ({len(used) - rows} more not shown)" if len(used) > rows else "", "dim"),
        f"; {acquisitions} acquisitions, ",
        (f"{contended} contended ({pct:.1f} %)", "bold red" if pct >= HOT_PERCENT else ("yellow" if contended else "")),
        f", longest wait {_seconds(max((s.max_wait for s in stats), default=0.0))}, {held} held now",
    )
    if history is not None:
        summary.append("   waits per read ", style="dim")
        summary.append(spark(history.total) or "(from the next read)", style="cyan")
    down = [
        Text(printable(f"responder {r.key} down for {_seconds(max(0.0, now - r.down_since))}, "
                       f"{r.failures} failed probes: {r.last_error}"), style="bold red")  # fmt: skip
        for r in snapshot.responders_down
    ]
    return Group(table, summary, *down)
