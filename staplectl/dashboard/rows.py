"""From a Snapshot to the freshness table: states, counts, rows, sorting, filtering.

Plain functions of a Snapshot (and its own ``taken_at`` as "now"), so that
every rule here is tested without an app. The times are judged here with
the engine's freshness rules, not taken from the Inspection, because the
collector reuses an unchanged entry's Inspection across reads.

States, one per certificate, worst first:

- ``missing``: nothing servable is cached: no entry, metadata only,
  httpd's error entry, a fake tryLater, a response that fails validation,
  or one whose thisUpdate is still in the future;
- ``expired``: past nextUpdate (or max_age without it): never served;
- ``revoked``: the responder said revoked or unknown (shown as it said);
- ``stale``: servable, but more than halfway from its renewal point to
  expiry: the renewal that was due has not happened;
- ``due``: servable and past its renewal point: a refresh should come soon;
- ``good``: servable and not yet due;
- ``no OCSP``: nothing cached, and the certificate names no OCSP responder
  (and is not must-staple): nothing to fetch, so nothing is wrong.

``failing`` is counted apart: certificates whose last refreshes failed,
whatever their staple's state (a failing one may still have a good staple).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from engine.api import expires_at, is_usable, renewal_point, to_datetime
from staplectl import fmt
from staplectl.dashboard.snapshot import Item, Snapshot
from staplectl.printable import printable

GOOD, DUE, STALE, EXPIRED, MISSING, REVOKED = "good", "due", "stale", "expired", "missing", "revoked"
NO_OCSP = "no_ocsp"
FAILING = "failing"
#: the header's order; also what the state filter cycles through
STATES = (GOOD, DUE, STALE, EXPIRED, MISSING, REVOKED, NO_OCSP)
FILTERS = (None, *STATES, FAILING)
LABELS = {
    GOOD: "good", DUE: "due for renewal", STALE: "stale but valid", EXPIRED: "expired",
    MISSING: "missing", REVOKED: "revoked/unknown", NO_OCSP: "no OCSP", FAILING: "failing",
}  # fmt: skip
#: The state colours (content, not layout: the .tcss cannot reach a cell's text)
STYLES = {
    GOOD: "green", DUE: "yellow", STALE: "dark_orange", EXPIRED: "bold red",
    MISSING: "bold red", REVOKED: "bold magenta", NO_OCSP: "dim", FAILING: "red",
}  # fmt: skip
#: worst first, for sorting by status
SEVERITY = {MISSING: 0, EXPIRED: 1, REVOKED: 2, STALE: 3, DUE: 4, GOOD: 5, NO_OCSP: 6}
_TIME_FLAGS = ("expired", "not-yet-valid", "due")
_NO_STAPLE = ("error-entry", "metadata-only", "try-later")


@dataclass(frozen=True)
class Freshness:
    state: str
    #: seconds until it may no longer be served; None without a staple
    time_left: float | None = None
    #: share of thisUpdate..nextUpdate still ahead, 0..1
    fraction: float | None = None
    #: what is odd about the entry (inspection flags, judged at this time)
    flags: tuple[str, ...] = ()
    #: the worker's next attempt, else the renewal point
    next_refresh: float | None = None


def classify(item: Item, snapshot: Snapshot) -> Freshness:
    now, policy = snapshot.taken_at, snapshot.policy
    ins = item.inspection
    state = item.state
    planned = state.next_attempt if state else None
    if ins is None:
        leaf = item.leaf
        if leaf is not None and not leaf.has_responder:
            if leaf.must_staple:  # no server can serve it
                return Freshness(MISSING, flags=("must-staple without OCSP",))
            return Freshness(NO_OCSP, flags=("no OCSP responder",))
        return Freshness(MISSING, flags=("not in cache",), next_refresh=planned)
    flags = tuple(f for f in ins.flags if f not in _TIME_FLAGS)
    if ins.this_update is None or any(f in _NO_STAPLE or f.startswith("invalid") for f in flags):
        return Freshness(MISSING, flags=flags, next_refresh=planned)
    end = expires_at(ins.this_update, ins.next_update, policy)
    left = end - now
    span = end - ins.this_update
    fraction = min(1.0, max(0.0, left / span)) if span > 0 else 0.0
    renew = renewal_point(ins.this_update, ins.next_update, policy)

    def result(state_name: str, *more: str) -> Freshness:
        usable = state_name not in (MISSING, EXPIRED)
        return Freshness(state_name, left, fraction, flags + more, planned if planned or not usable else renew)

    if ins.this_update > now + policy.skew:
        return result(MISSING, "not-yet-valid")
    if not is_usable(ins.this_update, ins.next_update, now, policy):
        return result(EXPIRED, "expired")
    if ins.status != "good":
        return result(REVOKED)
    if now >= renew:
        return result(STALE if now >= renew + (end - renew) / 2 else DUE, "due")
    return result(GOOD)


def failing(item: Item) -> bool:
    return bool(item.state and item.state.failures)


@dataclass(frozen=True)
class Counts:
    states: dict[str, int]
    failing: int
    total: int

    def __getitem__(self, state: str) -> int:
        return self.failing if state == FAILING else self.states.get(state, 0)


def counts(snapshot: Snapshot) -> Counts:
    found = Counter(classify(item, snapshot).state for item in snapshot.items)
    return Counts({s: found.get(s, 0) for s in STATES}, sum(map(failing, snapshot.items)), len(snapshot.items))


# -- cells ----------------------------------------------------------------------

BAR_WIDTH = 10
ERROR_WIDTH = 64
NAME_WIDTH = 44
#: a terminal narrower than table.WIDE_FROM: certificate, serial, status,
#: validity left (no bar) and fails must fit 80 columns with their padding
NARROW_NAME_WIDTH = 20
NARROW_SERIAL_WIDTH = 9
NARROW_STATUS_WIDTH = 21  # "missing: not in cache"; a longer reason is on the detail screen


def bar(fraction: float | None, state: str, width: int = BAR_WIDTH) -> Text:
    """Remaining validity as a bar, coloured by state; empty without a staple."""
    filled = 0 if fraction is None else round(fraction * width)
    if fraction and not filled:
        filled = 1  # a sliver left must not look like nothing left
    return Text.assemble(("█" * filled, STYLES[state]), ("░" * (width - filled), "dim"))


def short_name(name: str, width: int = NAME_WIDTH, *, keep_end: bool = False) -> str:
    """A long path keeps its end: /etc/letsencrypt/live/<this>/fullchain.pem;
    ``keep_end``: any name does (an unknown certificate's id is at its end)."""
    if len(name) <= width:
        return name
    return "…" + name[-(width - 1):] if keep_end or name.startswith("/") else name[: width - 1] + "…"


def _cut(text: Text, width: int) -> Text:
    text = text.copy()
    text.truncate(width, overflow="ellipsis")
    return text


def short_serial(serial: str, width: int) -> str:
    """The end: serials of one CA often share their start, never their end."""
    return serial if len(serial) <= width else "…" + serial[-(width - 1):]


def short_time(when: float | None) -> str:
    """UTC, month to second: a 30-second response needs the seconds."""
    return "-" if when is None else to_datetime(when).strftime("%m-%d %H:%M:%S")


def left_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return fmt.duration(seconds) if seconds >= 0 else f"-{fmt.duration(seconds)}"


def refresh_text(fresh: Freshness, now: float, busy: bool) -> Text:
    when = fresh.next_refresh
    if busy:
        return Text("refreshing…", style="bold cyan")
    if when is None:
        return Text("-", style="dim")
    text = Text("now" if when <= now else fmt.relative(when, now))
    if fresh.time_left is not None and fresh.state not in (MISSING, EXPIRED) and when > now + fresh.time_left:
        # The worker plans its next look after this staple stops being
        # servable (it did not see a shorter-lived one stored by someone else).
        text.append(" (after expiry!)")
        text.stylize("bold red")
    return text


def status_text(item: Item, fresh: Freshness) -> Text:
    word = fresh.state
    if word == REVOKED and item.inspection is not None:
        word = item.inspection.status or word  # revoked or unknown, as the responder said
    reasons = [f for f in fresh.flags if f not in ("due", "unverified")]
    if fresh.state == MISSING and reasons:
        word = f"{word}: {reasons[0]}"
    text = Text(word, style=STYLES[fresh.state])
    if "unverified" in fresh.flags:
        text.append(" ?", style="dim")  # signature and CertID not checked: certificate unknown
    return text


def error_text(item: Item) -> Text:
    state = item.state
    if state is None or not state.last_error:
        return Text("")
    reason = f"[{state.last_reason}] " if state.last_reason else ""
    text = printable(reason + " ".join(state.last_error.split()))
    if len(text) > ERROR_WIDTH:
        text = text[: ERROR_WIDTH - 1] + "…"  # in full on the detail screen
    # Red while it is the news; dim once a success came after it, or once
    # the cached staple is newer than the failed attempt (a refresh by hand
    # or by another process: the worker's record catches up at its next run).
    ins = item.inspection
    newer = ins is not None and ins.produced_at is not None and ins.produced_at > (state.last_attempt or 0)
    return Text(text, style="red" if state.failures and not newer else "dim")


# -- rows -----------------------------------------------------------------------

COLUMNS = (
    ("name", "Certificate"), ("serial", "Serial"), ("status", "Status"),
    ("this_update", "thisUpdate"), ("next_update", "nextUpdate"), ("left", "Validity left"),
    ("next_refresh", "Next refresh"), ("failures", "Fails"), ("last_error", "Last error"),
)  # fmt: skip
COLUMN_KEYS = tuple(key for key, _ in COLUMNS)


@dataclass(frozen=True)
class Row:
    key: str
    item: Item
    fresh: Freshness
    #: one per COLUMN_KEYS
    cells: tuple[Any, ...]


def make_row(item: Item, snapshot: Snapshot, busy: Collection[str] = (), *, narrow: bool = False) -> Row:
    """``narrow``: a terminal narrower than table.WIDE_FROM, whose columns show
    shorter name, serial and status, and the time left without its bar."""
    fresh = classify(item, snapshot)
    ins, state = item.inspection, item.state
    serial = (ins.serial if ins else None) or (item.leaf.serial_hex if item.leaf else "-")
    failures = state.failures if state else 0
    if narrow:
        name = short_name(printable(item.name), NARROW_NAME_WIDTH, keep_end=True)
        serial = short_serial(serial, NARROW_SERIAL_WIDTH)
        status = _cut(status_text(item, fresh), NARROW_STATUS_WIDTH)
        left = Text(left_text(fresh.time_left), style=STYLES[fresh.state] if fresh.time_left is not None else "dim")
    else:
        name, serial, status = short_name(printable(item.name)), short_serial(serial, 16), status_text(item, fresh)
        left = Text.assemble(bar(fresh.fraction, fresh.state), " ", left_text(fresh.time_left))
    cells = (
        Text(name, style="" if item.configured else "italic"),
        Text(serial),
        status,
        Text(short_time(ins.this_update if ins else None)),
        Text(short_time(ins.next_update if ins else None)),
        left,
        refresh_text(fresh, snapshot.taken_at, item.cert_id in busy),
        Text(str(failures) if failures else "", style="bold red" if failures else ""),
        error_text(item),
    )
    return Row(item.cert_id, item, fresh, cells)


def same_cell(a: Any, b: Any) -> bool:
    """Whether a cell needs no redraw. Not ``==``: rich's Text compares its
    text and spans but not its own style, and a last error that turns from
    dim to red keeps its words."""
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and a.style == b.style and a.spans == b.spans
    return bool(a == b)


def _none_last(value: Any) -> tuple[bool, Any]:
    return (value is None, value)


#: sort keys; each ascending means "worst first" where that makes sense
SORT_KEYS: dict[str, Callable[[Row], Any]] = {
    "name": lambda r: r.item.name.lower(),
    "serial": lambda r: _none_last(r.item.inspection.serial if r.item.inspection else None),
    "status": lambda r: SEVERITY[r.fresh.state],
    "this_update": lambda r: _none_last(r.item.inspection.this_update if r.item.inspection else None),
    "next_update": lambda r: _none_last(r.item.inspection.next_update if r.item.inspection else None),
    # nothing to serve is the least time left of all
    "left": lambda r: float("-inf") if r.fresh.time_left is None else r.fresh.time_left,
    "next_refresh": lambda r: _none_last(r.fresh.next_refresh),
    "failures": lambda r: -(r.item.state.failures if r.item.state else 0),
    "last_error": lambda r: _none_last(r.item.state.last_error if r.item.state else None),
}


@dataclass(frozen=True)
class View:
    """How the table is sorted and filtered: the app's state, passed in."""

    sort: str = "left"
    reverse: bool = False
    text: str = ""
    state: str | None = None


def matches(row: Row, view: View) -> bool:
    if view.state == FAILING and not failing(row.item):
        return False
    if view.state not in (None, FAILING) and row.fresh.state != view.state:
        return False
    if not view.text:
        return True
    item, needle = row.item, view.text.lower()
    ins, state = item.inspection, item.state
    haystack = [item.name, item.cert_id, row.fresh.state, *row.fresh.flags]
    haystack += [ins.serial or "", ins.subject or "", ins.status or ""] if ins else []
    haystack += [state.last_error or "", state.responder or ""] if state else []
    return any(needle in text.lower() for text in haystack)


def build_rows(
    snapshot: Snapshot, view: View = View(), busy: Collection[str] = (), *, narrow: bool = False
) -> list[Row]:
    rows = [make_row(item, snapshot, busy, narrow=narrow) for item in snapshot.items]
    rows = [row for row in rows if matches(row, view)]
    # name second: equal keys keep one order from one read to the next
    rows.sort(key=lambda r: r.item.name.lower())
    rows.sort(key=SORT_KEYS[view.sort], reverse=view.reverse)
    return rows


def due_items(snapshot: Snapshot) -> list[Item]:
    """What "refresh all due" takes: refreshable, and not good."""
    wanted = (DUE, STALE, EXPIRED, MISSING)
    return [i for i in snapshot.items if i.leaf is not None and classify(i, snapshot).state in wanted]


def names_by_id(items: Iterable[Item]) -> dict[str, str]:
    return {item.cert_id: item.name for item in items}
