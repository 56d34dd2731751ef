"""Clocks. Everything that depends on time takes one, so tests never sleep."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (wall clock: compared with thisUpdate/nextUpdate)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FrozenClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, when: float) -> None:
        self._now = float(when)


SYSTEM_CLOCK = SystemClock()


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def iso(ts: float | None) -> str | None:
    """ISO 8601 in UTC with a Z, the one format every JSON output uses."""
    if ts is None:
        return None
    # time.gmtime, not a datetime: a third of the cost, and warm writes
    # four of these per certificate
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
