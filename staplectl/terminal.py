"""All output goes through one Terminal: data to stdout, diagnostics to stderr.

JSON is printed plain (no colour, no wrapping) so that scripts can rely on
it. Rich honours NO_COLOR on its own.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from functools import cached_property
from typing import TYPE_CHECKING, Any

from staplectl.printable import printable, printable_lines

if TYPE_CHECKING:
    from rich.console import Console


def escape(text: str) -> str:
    """rich's markup escape, imported when first needed (rich costs a command's start)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)

#: set to 1 to have an internal error's traceback printed, as -vv does
TRACEBACK_ENV = "STAPLECTL_TRACEBACK"


class Terminal:
    def __init__(self, *, verbose: int = 0, quiet: bool = False, command: str = "staplectl") -> None:
        self.verbose = verbose
        #: what --json names in its envelope (staplectl.json_output)
        self.command = command
        self.quiet = quiet

    # The consoles are made on first use: check's status line and --json
    # need neither, and rich takes a noticeable share of a start.

    @cached_property
    def out(self) -> Console:
        from rich.console import Console

        # -q: the human tables and summaries go too (a cron job mails only
        # errors); --json, check's status line and inspect --text write
        # to stdout directly and stay
        return Console(file=sys.stdout, highlight=False, soft_wrap=False, emoji=False, quiet=self.quiet)

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(file=sys.stderr, highlight=False, soft_wrap=True, emoji=False)

    def json(self, data: dict[str, Any]) -> None:
        """``data`` in the envelope every --json output shares (staplectl.json_output)."""
        from staplectl.json_output import envelope

        sys.stdout.write(json.dumps(envelope(self.command, data), indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()

    # Diagnostics carry text from outside (a responder's reason phrase, a
    # cache value, a file name): escaped, so it cannot drive the terminal.

    def error(self, message: str) -> None:
        self.err.print(f"[bold red]staplectl: error:[/] {escape(printable(message))}")

    def internal_error(self, exc: BaseException) -> str:
        """A bug, said in one line (its traceback too at -vv or with
        $STAPLECTL_TRACEBACK=1); returns what the line says after the prefix."""
        what = f"{type(exc).__name__}: {exc}"
        if self.verbose >= 2 or os.environ.get(TRACEBACK_ENV) == "1":
            self.err.file.write(printable_lines("".join(traceback.format_exception(exc))))
            self.err.file.flush()
        self.err.print(f"[bold red]staplectl: internal error:[/] {escape(printable(what))}")
        return what

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[yellow]staplectl: warning:[/] {escape(printable(message))}")

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(escape(printable(message)))

    def debug(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self.err.print(f"[dim]{escape(printable(message))}[/]")
