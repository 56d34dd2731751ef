"""When each fault ran, and what it excuses.

Every check that finds something wrong asks the timeline two things:

- which row of the report it belongs to (`phase_at`): the fault under
  way, or in its aftermath (the recovery bound after it), else "healthy";
- whether the fault excuses it. A responder fault excuses its own CA's
  certificates from its start until `responder_recovery` after it ends
  (those lapses are reported apart, never counted as healthy ones). A
  cache fault (restart, outage) excuses every certificate from the moment
  the server stops until `refill_bound` after it answers again, and the
  store errors, lost writes and failed commands of that window. Nothing
  else excuses anything: a SIGKILL, a broken reload or a replaced
  certificate must not cost a healthy staple a single second (a replaced
  certificate itself has `replace_bound` after its SIGHUP).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.soak.settings import CACHE_FAULTS, RESPONDER_FAULTS, SoakSettings


@dataclass
class FaultEvent:
    kind: str
    #: the faulted CA (responder faults, cert_replace), else None
    ca: int | None
    start: float
    #: when the fault was lifted; None while it lasts
    end: float | None = None
    #: seconds after `end` that still belong to it (its recovery bound)
    aftermath: float = 0.0
    #: what happened: times, figures, the log lines that prove it
    details: dict[str, Any] = field(default_factory=dict)
    #: invariants this fault's own steps found broken
    problems: list[str] = field(default_factory=list)

    def until(self) -> float:
        return (self.end if self.end is not None else float("inf")) + self.aftermath

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "ca": "abc"[self.ca] if self.ca is not None else None,
            "start": round(self.start, 3), "end": round(self.end, 3) if self.end else None,
            "seconds": round(self.end - self.start, 2) if self.end else None,
            "details": self.details, "problems": self.problems,
        }  # fmt: skip


class Timeline:
    def __init__(self, settings: SoakSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self.events: list[FaultEvent] = []
        #: when the measurement began (lapses count from here on)
        self.measure_from: float | None = None

    def begin(self, kind: str, ca: int | None = None, start: float | None = None) -> FaultEvent:
        if kind in RESPONDER_FAULTS:
            aftermath = self.settings.responder_recovery
        elif kind in CACHE_FAULTS:
            aftermath = self.settings.refill_bound
        elif kind == "cert_replace":
            aftermath = self.settings.replace_bound
        else:
            aftermath = 10.0  # kill, sighup_broken: the restart or reload and a look at what follows
        event = FaultEvent(kind, ca, start if start is not None else time.time(), aftermath=aftermath)
        with self._lock:
            self.events.append(event)
        return event

    def finish(self, event: FaultEvent, end: float | None = None) -> None:
        event.end = end if end is not None else time.time()

    def snapshot(self) -> list[FaultEvent]:
        with self._lock:
            return list(self.events)

    # -- questions ----------------------------------------------------------------

    def phase_at(self, t: float) -> str:
        """The report row for time t: the latest fault that began by t and whose aftermath lasts past it."""
        with self._lock:
            for event in reversed(self.events):
                if event.start <= t < event.until():
                    return event.kind
        return "healthy"

    def responder_excuse(self, ca: int, t: float) -> FaultEvent | None:
        with self._lock:
            for event in reversed(self.events):
                if event.kind in RESPONDER_FAULTS and event.ca == ca and event.start <= t < event.until():
                    return event
        return None

    def cache_excuse(self, t: float, after_up: float | None = None) -> FaultEvent | None:
        """A cache fault covering t: from the server's stop to `after_up`
        (default: refill_bound) after it answered again."""
        slack = self.settings.refill_bound if after_up is None else after_up
        with self._lock:
            for event in reversed(self.events):
                if event.kind not in CACHE_FAULTS:
                    continue
                down = event.details.get("down_at", event.start)
                up = event.details.get("up_at")
                if down - 0.5 <= t < (up if up is not None else float("inf")) + slack:
                    return event
        return None

    def cache_touched(self, t0: float, t1: float) -> FaultEvent | None:
        """A cache fault whose down..up window overlaps [t0, t1] (writes in it may be lost)."""
        with self._lock:
            for event in self.events:
                if event.kind not in CACHE_FAULTS:
                    continue
                down = event.details.get("down_at", event.start)
                up = event.details.get("up_at")
                if down - 0.5 <= t1 and t0 <= (up if up is not None else float("inf")) + 0.5:
                    return event
        return None

    def config_broken(self, t0: float, t1: float) -> bool:
        """Was the configuration file broken at some point in [t0, t1]?"""
        with self._lock:
            for event in self.events:
                if event.kind != "sighup_broken":
                    continue
                broken = event.details.get("broken_at", event.start)
                restored = event.details.get("restored_at")
                if broken <= t1 and t0 <= (restored if restored is not None else float("inf")):
                    return True
        return False
