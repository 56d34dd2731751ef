"""staplectl export (being written)."""

from __future__ import annotations

import typer


def export() -> None:
    """Not written yet."""
    raise typer.Exit(2)
