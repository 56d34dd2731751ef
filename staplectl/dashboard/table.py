"""The freshness table: a DataTable that shows rows.Row and keeps its place.

Rebuilding a DataTable every two seconds would throw away the cursor and
the scroll position, and flicker. When the same certificates come in the
same order (the usual case), only the cells that changed are rewritten;
otherwise it is rebuilt, and the cursor goes back to the certificate it
was on.
"""

from __future__ import annotations

from typing import Any

from textual.binding import Binding
from textual.widgets import DataTable

from staplectl.dashboard.rows import COLUMN_KEYS, COLUMNS, Row, View, same_cell

#: the columns a terminal narrower than WIDE_FROM shows (80 columns: these fit)
NARROW_COLUMNS = ("name", "serial", "status", "left", "failures")
WIDE_FROM = 120


class CertTable(DataTable):
    """Its keys are listed in the footer only while it has the focus (not on the detail screen)."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Details"),
        Binding("r", "app.refresh_selected", "Refresh now"),
        Binding("a", "app.refresh_due", "Refresh all due"),
        Binding("slash", "app.filter", "Filter"),
        Binding("f", "app.state_filter", "State"),
        Binding("s", "app.sort", "Sort"),
        Binding("S", "app.reverse", "Reverse", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._shown: dict[str, tuple[Any, ...]] = {}
        self._order: list[str] = []
        #: a terminal narrower than WIDE_FROM: only NARROW_COLUMNS (the detail screen has the rest)
        self.narrow = False
        self._keys: tuple[str, ...] = COLUMN_KEYS

    def set_columns(self, view: View, narrow: bool | None = None) -> None:
        """The columns (those that fit when ``narrow``), the sorted one marked;
        the rows come with the next show()."""
        if narrow is not None:
            self.narrow = narrow
        self.clear(columns=True)
        self._keys = NARROW_COLUMNS if self.narrow else COLUMN_KEYS
        for key, label in COLUMNS:
            if key in self._keys:
                mark = (" ▼" if view.reverse else " ▲") if key == view.sort else ""
                self.add_column(label + mark, key=key)
        self._order, self._shown = [], {}

    def show(self, rows: list[Row]) -> None:
        order = [row.key for row in rows]
        index = [COLUMN_KEYS.index(key) for key in self._keys]
        cells = {row.key: tuple(row.cells[i] for i in index) for row in rows}
        if order == self._order:
            for key_of_row in order:
                for key, new, old in zip(self._keys, cells[key_of_row], self._shown[key_of_row]):
                    if not same_cell(new, old):
                        self.update_cell(key_of_row, key, new, update_width=True)
        else:
            selected = self.selected_key()
            self.clear()
            for row in rows:
                self.add_row(*cells[row.key], key=row.key)
            if selected in order:
                self.move_cursor(row=order.index(selected), animate=False)
        self._order = order
        self._shown = cells

    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
