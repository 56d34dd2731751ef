"""The dashboard app (built by staplectl.dashboard.factory.make_app, for the CLI and the tests alike).

The app only renders: snapshots come from the Collector, read in a worker
thread at every tick and posted back as a ``SnapshotRead`` message
(harlequin's typed messages, which tests can watch with ``message_hook``).
A flag keeps reads from overlapping: a tick that finds a read under way is
dropped (a slow memcached must not pile up readers), and a read asked for
during one (after a refresh) runs as soon as it ends. Refreshes run in
their own worker threads, so the screen never waits on a responder.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static

from engine.api import Outcome, UnexpectedError
from staplectl.dashboard.actions import InProcessPrefetch, Refresher, describe
from staplectl.dashboard.panels import WaitHistory, banner, header, lock_panel
from staplectl.dashboard.rows import COLUMNS, FILTERS, LABELS, View, build_rows, counts, due_items, names_by_id
from staplectl.dashboard.screens import DetailScreen
from staplectl.dashboard.snapshot import Item, Snapshot
from staplectl.dashboard.table import WIDE_FROM, CertTable


class SnapshotRead(Message):
    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class ReadFailed(Message):
    """A read that failed in a way the Collector does not turn into a snapshot (a bug)."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class RefreshDone(Message):
    def __init__(self, outcomes: tuple[Outcome, ...], batch: bool) -> None:
        super().__init__()
        self.outcomes = outcomes
        self.batch = batch


class DashboardApp(App[None]):
    CSS_PATH = "dashboard.tcss"
    TITLE = "staplectl dashboard"
    BINDINGS = [
        Binding("p", "pause", "Pause"),
        Binding("l", "toggle_locks", "Locks"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("ctrl+s", "screenshot", "Screenshot", show=False),
    ]

    def __init__(self, collector: Any, *, refresher: Refresher | None = None,
                 prefetch: InProcessPrefetch | None = None, interval: float = 2.0) -> None:  # fmt: skip
        super().__init__()
        self.collector = collector
        self.refresher = refresher
        self.prefetch = prefetch
        self.interval = interval
        self.view = View()
        self.paused = False
        self.snapshot: Snapshot | None = None
        self.waits = WaitHistory()
        #: certificates with a refresh in flight
        self.busy: set[str] = set()
        self.detail_id: str | None = None
        self.reads = 0
        self._reading = False
        self._read_again = False
        self._timer: Timer | None = None
        #: the lock panel as the user set it with l (None: by the terminal's height)
        self._locks_shown: bool | None = None

    # -- layout ---------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("reading…", id="summary")
        yield Static(id="banner")
        with Horizontal(id="bar"):
            yield Input(placeholder="/ filter: name, serial, status, error…", id="filter")
            yield Static(id="view")
        yield CertTable(id="certs")
        yield Static(id="locks")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(CertTable).set_columns(self.view)
        self._show_view()
        self.query_one(CertTable).focus()
        if self.prefetch is not None:
            self.run_worker(self._start_prefetch, thread=True, group="prefetch", exit_on_error=False)
        self._timer = self.set_interval(self.interval, self._tick)
        self.request_read()

    def _start_prefetch(self) -> None:  # in a worker thread: loading the state may take a while
        assert self.prefetch is not None
        try:
            self.prefetch.start()
        except Exception as error:
            self.call_from_thread(self.notify, f"the prefetch worker did not start: {error}", severity="error",
                                  timeout=30, markup=False)  # fmt: skip

    def on_unmount(self) -> None:
        if self.prefetch is not None:
            self.prefetch.stop()
        self.collector.close()

    # -- reading --------------------------------------------------------------

    def _tick(self) -> None:
        # A tick during a slow read is dropped, not queued: a cache that takes
        # longer than the interval is read back to back at worst, never twice at once.
        if not self._reading:
            self.request_read()

    def request_read(self) -> None:
        """Read now, or as soon as the read under way ends (after a refresh, for a detail)."""
        if self._reading:
            self._read_again = True
            return
        self._reading = True
        self.run_worker(partial(self._read, self.detail_id), thread=True, group="read", exit_on_error=False)

    def _read(self, detail: str | None) -> None:  # in a worker thread
        try:
            snapshot = self.collector.collect(detail)
        except Exception as error:  # a bug in reading must not end the live view
            self.post_message(ReadFailed(f"{type(error).__name__}: {error}"))
        else:
            self.post_message(SnapshotRead(snapshot))

    def on_snapshot_read(self, message: SnapshotRead) -> None:
        self.reads += 1
        self.snapshot = message.snapshot
        self.waits.add(message.snapshot.stripes)
        self._read_done()
        self.render_snapshot()
        if isinstance(self.screen, DetailScreen):
            self.screen.show(message.snapshot)

    def on_read_failed(self, message: ReadFailed) -> None:
        self._read_done()
        self.notify(message.error, title="reading failed", severity="error", markup=False)

    def _read_done(self) -> None:
        self._reading = False
        if self._read_again:
            self._read_again = False
            self.request_read()

    # -- rendering ------------------------------------------------------------

    def render_snapshot(self) -> None:
        snapshot = self.snapshot
        if snapshot is None:
            return
        self.query_one("#summary", Static).update(
            header(snapshot, counts(snapshot), paused=self.paused, reading=self._reading)
        )
        text = banner(snapshot)
        bar = self.query_one("#banner", Static)
        bar.update(text or "")
        bar.set_class(text is not None, "shown")
        table = self.query_one(CertTable)
        table.show(build_rows(snapshot, self.view, self.busy, narrow=table.narrow))
        self.query_one("#locks", Static).update(lock_panel(snapshot, self.waits, names_by_id(snapshot.items)))

    def _show_view(self) -> None:
        label = dict(COLUMNS)[self.view.sort]
        state = LABELS[self.view.state] if self.view.state else "all"
        self.query_one("#view", Static).update(
            f"state: {state} (f)   sort: {label} {'▼' if self.view.reverse else '▲'} (s, S)   "
            f"{'text: ' + repr(self.view.text) if self.view.text else ''}"
        )

    def _change_view(self, **changes: Any) -> None:
        columns = "sort" in changes or "reverse" in changes
        self.view = replace(self.view, **changes)
        if columns:
            self.query_one(CertTable).set_columns(self.view)
        self._show_view()
        self.render_snapshot()

    # -- the selection --------------------------------------------------------

    def selected_key(self) -> str | None:
        return self.query_one(CertTable).selected_key()

    def selected_item(self) -> Item | None:
        snapshot = self.snapshot
        return snapshot.item(self.selected_key()) if snapshot else None

    # -- actions --------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.open_details(event.row_key.value)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        self._change_view(sort=key, reverse=not self.view.reverse if key == self.view.sort else False)

    def open_details(self, cert_id: str | None) -> None:
        if cert_id is None or self.snapshot is None:
            return
        self.detail_id = cert_id
        self.push_screen(DetailScreen(cert_id, self.snapshot), callback=self._details_closed)
        self.request_read()  # its history

    def _details_closed(self, _: None) -> None:
        self.detail_id = None

    def action_refresh_selected(self) -> None:
        self.refresh_cert(self.selected_key())

    def refresh_cert(self, cert_id: str | None) -> None:
        item = self.snapshot.item(cert_id) if self.snapshot else None
        if item is not None:
            self.refresh_items([item], batch=False)

    def action_refresh_due(self) -> None:
        if self.snapshot is not None:
            self.refresh_items(due_items(self.snapshot), batch=True)

    def refresh_items(self, items: list[Item], *, batch: bool) -> None:
        if self.refresher is None:
            return
        unknown = [i for i in items if i.leaf is None]
        todo = [i for i in items if i.leaf is not None and i.cert_id not in self.busy]
        if unknown and not batch:
            self.notify(f"{unknown[0].name}: cannot refresh: its certificate (and issuer) is not known here; "
                        "add it to the configuration", severity="warning", markup=False)  # fmt: skip
        if not todo:
            if batch:
                self.notify("nothing to refresh: no certificate is due, stale, expired or missing", markup=False)
            return
        self.busy.update(i.cert_id for i in todo)
        self.render_snapshot()
        leaves = [i.leaf for i in todo if i.leaf is not None]
        self.run_worker(partial(self._refresh, leaves, batch), thread=True, group="refresh", exit_on_error=False)

    def _refresh(self, leaves: list[Any], batch: bool) -> None:  # in a worker thread
        assert self.refresher is not None
        try:
            outcomes = self.refresher.refresh(leaves, force=not batch)
        except Exception as error:  # never leave rows "refreshing…" for ever
            unexpected = UnexpectedError(f"unexpected {type(error).__name__}: {error}")
            outcomes = [Outcome(leaf, None, "failed", unexpected) for leaf in leaves]
        self.post_message(RefreshDone(tuple(outcomes), batch))

    def on_refresh_done(self, message: RefreshDone) -> None:
        self.busy.difference_update(o.leaf.cert_id for o in message.outcomes)
        ok = all(o.ok for o in message.outcomes)
        title = "refresh all due" if message.batch else ("refreshed" if ok else "refresh failed")
        self.notify(describe(message.outcomes), title=title, severity="information" if ok else "error",
                    timeout=4 if ok else 12, markup=False)  # fmt: skip
        self.request_read()

    #: below this many lines the lock panel starts hidden (l shows it): at
    #: 80x24 it would leave three certificate rows
    LOCKS_FROM_HEIGHT = 32

    def on_resize(self, event: events.Resize) -> None:
        if self._locks_shown is None:  # the user's choice (l) stands over the size
            self.query_one("#locks").display = event.size.height >= self.LOCKS_FROM_HEIGHT
        table = self.query_one(CertTable)
        narrow = event.size.width < WIDE_FROM
        if narrow != table.narrow:  # the columns that fit (the detail screen shows them all)
            table.set_columns(self.view, narrow)
            self.render_snapshot()

    def action_toggle_locks(self) -> None:
        panel = self.query_one("#locks")
        self._locks_shown = panel.display = not panel.display

    def action_pause(self) -> None:
        self.paused = not self.paused
        if self._timer is not None:
            (self._timer.pause if self.paused else self._timer.resume)()
        if not self.paused:
            self.request_read()
        self.render_snapshot()

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        # Textual's own delivers through its file-delivery machinery; an
        # operator wants a file here, now, and its name (for the ticket).
        saved = self.save_screenshot(filename, path or ".")
        self.notify(f"screenshot saved: {saved}", markup=False)

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._change_view(text=event.value.strip())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(CertTable).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self._change_view(text="", state=None)
        self.query_one(CertTable).focus()

    def action_state_filter(self) -> None:
        self._change_view(state=FILTERS[(FILTERS.index(self.view.state) + 1) % len(FILTERS)])

    def action_sort(self) -> None:
        keys = [key for key, _ in COLUMNS]
        self._change_view(sort=keys[(keys.index(self.view.sort) + 1) % len(keys)], reverse=False)

    def action_reverse(self) -> None:
        self._change_view(reverse=not self.view.reverse)
