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

from staplectl.dashboard.rows import COLUMNS, Row, View, same_cell


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

    def set_columns(self, view: View) -> None:
        """The columns, the sorted one marked; the rows come with the next show()."""
        self.clear(columns=True)
        for key, label in COLUMNS:
            mark = (" ▼" if view.reverse else " ▲") if key == view.sort else ""
            self.add_column(label + mark, key=key)
        self._order, self._shown = [], {}

    def show(self, rows: list[Row]) -> None:
        order = [row.key for row in rows]
        if order == self._order:
            for row in rows:
                for (key, _), new, old in zip(COLUMNS, row.cells, self._shown[row.key]):
                    if not same_cell(new, old):
                        self.update_cell(row.key, key, new, update_width=True)
        else:
            selected = self.selected_key()
            self.clear()
            for row in rows:
                self.add_row(*row.cells, key=row.key)
            if selected in order:
                self.move_cursor(row=order.index(selected), animate=False)
        self._order = order
        self._shown = {row.key: row.cells for row in rows}

    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
