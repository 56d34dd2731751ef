"""A plain aligned table: one line per row, never wrapped or cut.

Not rich.table: with 10,000 certificates its layout takes seconds, and it
wraps or crops long error messages to the terminal's width, where an
operator (or grep) wants the whole line. Colour only on a colour terminal.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from staplectl.printable import printable

#: a cell: its text, or (text, rich style)
Cell = str | tuple[str, str]


def print_table(console: Console, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
    if console.quiet:
        return  # -q: nothing but errors
    # cells hold text from outside (subjects, file names, errors): escaped, one line each
    cells = [[(printable(c[0]), c[1]) if isinstance(c, tuple) else (printable(c), "") for c in row] for row in rows]
    widths = [max([len(h), *(len(row[i][0]) for row in cells)]) for i, h in enumerate(headers)]
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
