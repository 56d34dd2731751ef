"""staplectl locks (being written)."""

from __future__ import annotations

import typer


def locks() -> None:
    """Not written yet."""
    raise typer.Exit(2)
