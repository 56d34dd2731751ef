"""What the soak's monitor (monitor.py) keeps as it samples the store: per
certificate, the runs of samples in one state and every staple it judged
(Track, Interval); the writes it waits to see in the store (PendingWrite);
and what a one-shot command claimed, judged once a sample after the command
exists (Claim, filled in by readers.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Interval:
    start: float
    end: float
    state: str
    this_update: float | None
    next_update: float | None


@dataclass
class Track:
    """What the monitor knows of one certificate."""

    prev_digest: bytes | None = None
    prev_next_update: float | None = None
    max_this_update: float | None = None
    seen: set[bytes] = field(default_factory=set)
    intervals: list[Interval] = field(default_factory=list)
    #: (thisUpdate, nextUpdate) -> genuine, for every staple judged
    staples: dict[tuple[float | None, float | None], bool] = field(default_factory=dict)
    lapsing: bool = False
    #: when it first had a valid staple
    first_valid: float | None = None


@dataclass
class Claim:
    """A command said a certificate's staple is valid; judged once a sample after it exists."""

    key: str  # the tally column it counts in when wrong
    row: str
    sha1: str
    this_update: float | None
    next_update: float | None
    t0: float
    t1: float
    claimed_at: float
    what: dict[str, Any]
    problems: list[str]  # the command run's, to append to


@dataclass
class PendingWrite:
    sha1: str
    this_update: float
    t: float
    deadline: float
    source: str
    row: str
