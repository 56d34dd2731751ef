"""The detail screen: one certificate's staple, verdict, worker history and response.

It renders what staplectl.dashboard.detail makes of the app's snapshots,
and follows them: while it is open the app reads this certificate's
history too, and a refresh from here shows up here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from engine.api import HistoryEntry
from staplectl.dashboard import detail
from staplectl.dashboard.snapshot import Snapshot

if TYPE_CHECKING:
    from staplectl.dashboard.app import DashboardApp


class DetailScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,backspace", "back", "Back"),
        Binding("r", "refresh_now", "Refresh now"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, cert_id: str, snapshot: Snapshot) -> None:
        super().__init__()
        self.cert_id = cert_id
        self.snapshot = snapshot
        self.history: tuple[HistoryEntry, ...] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title")
        with VerticalScroll(id="detail-body"):
            yield Static("Validation", classes="section-title")
            yield Static(id="detail-summary", classes="section")
            yield Static("Prefetch worker", classes="section-title")
            yield Static(id="detail-worker", classes="section")
            yield Static("Certificate", classes="section-title")
            yield Static(id="detail-cert", classes="section")
            yield Static("Response (as openssl ocsp -resp_text shows it)", classes="section-title")
            yield Static(id="detail-response", classes="section")
        yield Footer()

    def on_mount(self) -> None:
        self.show(self.snapshot)

    def show(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        if snapshot.history_for == self.cert_id:
            self.history = snapshot.history
        item = snapshot.item(self.cert_id)
        if item is None:
            gone = f"{self.cert_id}: no longer in the cache or the configuration"
            self.query_one("#detail-title", Static).update(gone)
            return
        self.query_one("#detail-title", Static).update(detail.title(item, snapshot))
        self.query_one("#detail-summary", Static).update(detail.summary(item, snapshot))
        if self.history is None:
            self.query_one("#detail-worker", Static).update("reading the worker's history…")
        else:
            self.query_one("#detail-worker", Static).update(detail.worker(item, self.history, snapshot))
        self.query_one("#detail-cert", Static).update(detail.certificate(item))
        self.query_one("#detail-response", Static).update(detail.response(item))

    def action_back(self) -> None:
        self.dismiss()

    def action_refresh_now(self) -> None:
        app: DashboardApp = self.app  # type: ignore[assignment]
        app.refresh_cert(self.cert_id)
