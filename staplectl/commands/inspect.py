"""staplectl inspect (being written)."""

from __future__ import annotations

import typer


def inspect() -> None:
    """Not written yet."""
    raise typer.Exit(2)
