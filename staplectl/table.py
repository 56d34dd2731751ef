"""A plain aligned table: one line per row, never wrapped.

Not rich.table: with 10,000 certificates its layout takes seconds, and it
wraps or crops long error messages to the terminal's width, where an
operator (or grep) wants the whole line. Colour only on a colour terminal.
Piped, every column is written whole; in a terminal too narrow for them
all, a caller may name the columns that matter (``fit``) and the one whose
start may go (``shorten``: a path keeps its end, where names differ).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from staplectl.printable import printable

#: a cell: its text, or (text, rich style)
Cell = str | tuple[str, str]


def print_table(
    console: Console, headers: Sequence[str], rows: Sequence[Sequence[Cell]], *,
    fit: Sequence[str] = (), shorten: str | None = None,
) -> None:  # fmt: skip
    if console.quiet:
        return  # -q: nothing but errors
    # cells hold text from outside (subjects, file names, errors): escaped, one line each
    cells = [[(printable(c[0]), c[1]) if isinstance(c, tuple) else (printable(c), "") for c in row] for row in rows]
    widths = _widths(headers, cells)
    if fit and console.is_terminal and sum(widths) + 2 * (len(widths) - 1) > console.width:
        headers, cells, widths = _fitted(console.width, list(headers), cells, fit, shorten)
    last = len(headers) - 1

    def pad(i: int, text: str) -> str:
        return text if i == last else text.ljust(widths[i])

    if console.color_system is None:
        lines = ["  ".join(pad(i, h) for i, h in enumerate(headers)).rstrip()]
        lines += ["  ".join(pad(i, text) for i, (text, _) in enumerate(row)).rstrip() for row in cells]
        console.file.write("\n".join(lines) + "\n")
        console.file.flush()
        return
    console.print(Text("  ".join(pad(i, h) for i, h in enumerate(headers)).rstrip(), style="bold"), soft_wrap=True)
    for row in cells:
        line = Text()
        for i, (text, style) in enumerate(row):
            if i:
                line.append("  ")
            line.append(pad(i, text), style=style or None)
        console.print(line, soft_wrap=True)


def _fitted(
    width: int, headers: list[str], cells: list[list[tuple[str, str]]], fit: Sequence[str], shorten: str | None
) -> tuple[list[str], list[list[tuple[str, str]]], list[int]]:
    """Only the ``fit`` columns; then ``shorten``'s cells cut from the left until the line fits."""
    keep = [i for i, h in enumerate(headers) if h in fit]
    headers = [headers[i] for i in keep]
    cells = [[row[i] for i in keep] for row in cells]
    widths = _widths(headers, cells)
    if shorten in headers:
        column = headers.index(shorten)
        over = sum(widths) + 2 * (len(widths) - 1) - width
        if over > 0:
            room = max(len(shorten), widths[column] - over, 12)
            for row in cells:
                text, style = row[column]
                if len(text) > room:
                    row[column] = ("…" + text[-(room - 1):], style)
            widths = _widths(headers, cells)
    return headers, cells, widths


def _widths(headers: Sequence[str], cells: list[list[tuple[str, str]]]) -> list[int]:
    """Each column's width: its widest cell, or its header."""
    return [max([len(h), *(len(row[i][0]) for row in cells)]) for i, h in enumerate(headers)]
