"""staplectl warm (being written)."""

from __future__ import annotations

import typer


def warm() -> None:
    """Not written yet."""
    raise typer.Exit(2)
