"""Formatting times for people."""

from __future__ import annotations

from engine.api import iso


def duration(seconds: float) -> str:
    """A short human duration: 45 s, 12 min, 3 h 20 min, 6 d 4 h."""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min"
    hours, minutes = divmod(int(minutes), 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(when: float | None, now: float) -> str:
    """'in 3 h', '12 min ago'."""
    if when is None:
        return "-"
    delta = when - now
    return f"in {duration(delta)}" if delta >= 0 else f"{duration(delta)} ago"


def timestamp(when: float | None, now: float) -> str:
    if when is None:
        return "-"
    return f"{iso(when)} ({relative(when, now)})"
