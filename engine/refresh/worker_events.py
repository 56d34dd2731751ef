"""What the prefetch worker is told to do (WorkerOptions) and what it says
(WorkerEvent): one event per outcome, for logs, metrics and the dashboard,
and the words of the events about the cache, the state file and responders
as a whole."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from engine.clock import iso
from engine.store.outages import Outage

if TYPE_CHECKING:
    from engine.refresh.worker_state import CertState

#: what an outage of the cache means for the renewals, by its reason
_WHILE_DOWN = {
    "cache_unavailable": ("unreachable", "renewals resume when it answers again"),
    "cache_unwritable": (
        "cannot be written", "staples already stored are still read; renewals are stored again when it can be"
    ),
    "cache_damaged": (
        "damaged", "entries that can still be read are renewed; repair the file and restart the service"
    ),
}


@dataclass(frozen=True)
class WorkerOptions:
    #: refreshes in flight at once, all responders together
    concurrency: int = 8
    #: refreshes in flight at once for one responder (scheme, host, port)
    per_responder: int = 2
    #: how long stop() waits for running refreshes before leaving them
    stop_grace: float = 3.0
    #: how long a job waits for its certificate's fetch lock before it reports "busy"
    lock_timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.per_responder < 1:
            raise ValueError("concurrency and per_responder must be 1 or more")
        if self.stop_grace < 0 or self.lock_timeout < 0:
            raise ValueError("stop_grace and lock_timeout must not be negative")


@dataclass(frozen=True)
class WorkerEvent:
    """One outcome, for logs, metrics and the dashboard.

    action: updated | fresh | leased | failed | busy (the certificate's fetch
    lock was held elsewhere past lock_timeout) | added | removed | no_ocsp
    (loaded, but it names no OCSP responder: never scheduled), or, for the
    cache as a whole (no cert_id; name is the cache URI), cache_down |
    cache_up, and for the worker's state (name is its file) state_down |
    state_up, and for a responder (name is its scheme://host:port)
    responder_down | responder_up.
    level: info | warning (a failure with a usable staple still cached; a
    revoked or unknown answer) | error (a failure with nothing usable left
    to serve; the cache down). status, this_update and next_update are the
    staple's that the certificate has after the event, when one is known.
    responder (scheme://host:port) and duration (seconds the refresh took:
    lock, cache, exchange, validation) are those of a refresh's event.
    """

    when: float
    level: str
    cert_id: str
    name: str
    action: str
    detail: str
    reason: str | None = None
    status: str | None = None
    this_update: float | None = None
    next_update: float | None = None
    responder: str = ""
    duration: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("when", "this_update", "next_update"):
            data[name] = iso(data[name])
        duration = data.pop("duration")
        data["duration_seconds"] = None if duration is None else round(duration, 6)
        data["cert_sha1"] = data.pop("cert_id")  # as every --json output names them
        data["event"] = data.pop("action")
        return data


# -- the events about something other than one certificate ------------------------


def added(now: float, state: CertState, said: tuple[str, str] | None, key: str) -> list[WorkerEvent]:
    """A certificate the worker took on: due now, or found with a fresh
    staple (engine.refresh.survey), said (``said``: level and detail) as the
    job that found it would. ``key``: its responder's (responder_key)."""
    responder = state.responder or "(none)"
    if said is None:
        return [WorkerEvent(now, "info", state.cert_id, state.name, "added", f"due now; responder {responder}")]
    level, detail = said
    return [
        WorkerEvent(now, "info", state.cert_id, state.name, "added", f"cached staple still fresh; responder {responder}"),
        WorkerEvent(now, level, state.cert_id, state.name, "fresh", detail, None, state.status, state.this_update,
                    state.next_update, key, 0.0),
    ]  # fmt: skip


def cache_down(now: float, uri: str, outage: Outage) -> WorkerEvent:
    state, meanwhile = _WHILE_DOWN[outage.reason]
    return WorkerEvent(now, "error", "", uri, "cache_down", f"{state}: {outage.error}; {meanwhile}", outage.reason)


def cache_up(now: float, uri: str, outage: Outage, due: int) -> WorkerEvent:
    detail = f"works again after {now - outage.since:.0f} s; {due} certificates that failed on it are due now"
    return WorkerEvent(now, "info", "", uri, "cache_up", detail)


def responder_down(now: float, key: str, outage: Outage) -> WorkerEvent:
    detail = (
        f"not answering: {outage.error}; one probe at a time until it answers, "
        "its certificates keep their cached staples"
    )
    return WorkerEvent(now, "error", "", key, "responder_down", detail, outage.reason)


def responder_up(now: float, key: str, outage: Outage, due: int) -> WorkerEvent:
    detail = f"answers again after {now - outage.since:.0f} s; {due} certificates that failed on it are due now"
    return WorkerEvent(now, "info", "", key, "responder_up", detail)


def state_down(now: float, path: str, error: Exception, reason: str) -> WorkerEvent:
    detail = (
        f"{error}; renewals go on, but inspect, the dashboard and the metrics "
        "show what was last recorded until it can be written again"
    )
    return WorkerEvent(now, "error", "", path, "state_down", detail, reason)


def state_up(now: float, path: str, outage: Outage) -> WorkerEvent:
    return WorkerEvent(now, "info", "", path, "state_up", f"written again after {now - outage.since:.0f} s")
