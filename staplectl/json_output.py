"""One shape for every --json output (docs/json.md).

Every command prints one object: the envelope (``schema``, ``command``,
``checked_at``, ``error``, ``cache``), then what the command has to say. The same
thing has the same name in every command: a certificate is ``cert``,
``cert_sha1``, ``serial``; a staple's fields are those of staple_fields;
what a command did for a certificate is its ``result``; times are ISO 8601
in UTC and durations are seconds in a field whose name ends ``_seconds``.
Scripts read ``.error`` (null on success) and the exit status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.api import DEFAULT_POLICY, SYSTEM_CLOCK, iso, seconds_left

if TYPE_CHECKING:
    from engine.api import FreshnessPolicy, Staple

#: raised when a field changes meaning or goes; new fields do not raise it
SCHEMA = 1


def envelope(command: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` under the common fields; its own ``checked_at``, ``error`` or ``cache`` wins."""
    return {"schema": SCHEMA, "command": command, "checked_at": iso(SYSTEM_CLOCK.now()), "error": None, "cache": None,
            **data}  # fmt: skip


def error_fields(reason: str, message: str) -> dict[str, Any]:
    return {"error": {"reason": reason, "message": message}}


def time_left(staple: Staple | None, now: float, policy: FreshnessPolicy = DEFAULT_POLICY) -> float | None:
    """Seconds until ``staple`` may no longer be served (its nextUpdate, or the
    policy's limit for a response without one), negative since when; None without one."""
    return None if staple is None else seconds_left(staple.this_update, staple.next_update, now, policy)


def staple_fields(staple: Staple | None, left: float | None) -> dict[str, Any]:
    """A staple as every command names it; all None (``weak`` empty) without one.

    ``left``: its ``time_left_seconds``, as time_left gives it or as the
    command judged it (check); None for a staple not judged by time.
    """
    if staple is None:
        return {"status": None, "revocation_time": None, "revocation_reason": None, "this_update": None,
                "next_update": None, "produced_at": None, "time_left_seconds": None, "weak": []}  # fmt: skip
    return {
        "status": staple.status,
        "revocation_time": iso(staple.revocation_time),
        "revocation_reason": staple.revocation_reason,
        "this_update": iso(staple.this_update),
        "next_update": iso(staple.next_update),
        "produced_at": iso(staple.produced_at),
        "time_left_seconds": None if left is None else int(left),
        "weak": list(staple.weak),
    }
