"""Where staplectl keeps its state when nobody says otherwise."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """``$STAPLECTL_HOME``, else ``$XDG_STATE_HOME/staplectl``, else ~/.local/state/staplectl."""
    home = os.environ.get("STAPLECTL_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "staplectl"


def ensure_private_dir(path: Path) -> Path:
    """Create a directory that only its owner (and group) may write."""
    path.mkdir(parents=True, exist_ok=True, mode=0o750)
    return path
