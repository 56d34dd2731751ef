"""Durations as operators write them: 90, "90s", "5m", "1h30m", "2d"."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d|w)")


def parse_duration(value: object, what: str = "duration") -> float:
    """Seconds from a number or a text such as "1h30m"; ValueError names the value."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{what}: {value!r} is negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{what}: {value!r} is not a duration")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    total, position = 0.0, 0
    for match in _PART.finditer(text):
        if text[position : match.start()].strip():
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    else:
        if position and not text[position:].strip():
            return total
    raise ValueError(
        f"{what}: {value!r} is not a duration (examples: 30, 30s, 5m, 1h30m, 2d)"
    )


def format_duration(seconds: float) -> str:
    """The shortest exact text for a duration: 90 -> "1m30s"."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    seconds = int(seconds)
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
