"""staplectl check (being written)."""

from __future__ import annotations

import typer


def check() -> None:
    """Not written yet."""
    raise typer.Exit(2)
