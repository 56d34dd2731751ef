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

from engine.api import SYSTEM_CLOCK, iso, seconds_left

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


def staple_fields(
    staple: Staple | None, now: float, policy: FreshnessPolicy | None = None, *, left: float | None = None
) -> dict[str, Any]:
    """A staple as every command names it; all None (``weak`` empty) without one.

    ``time_left_seconds``: until it may no longer be served (its nextUpdate,
    or the policy's limit for a response without one), negative since when;
    ``left`` when the caller has judged it already.
    """
    if staple is None:
        return {"status": None, "revocation_time": None, "revocation_reason": None, "this_update": None,
                "next_update": None, "produced_at": None, "time_left_seconds": None, "weak": []}  # fmt: skip
    if left is None:
        left = seconds_left(staple.this_update, staple.next_update, now, *([policy] if policy else []))
    return {
        "status": staple.status,
        "revocation_time": iso(staple.revocation_time),
        "revocation_reason": staple.revocation_reason,
        "this_update": iso(staple.this_update),
        "next_update": iso(staple.next_update),
        "produced_at": iso(staple.produced_at),
        "time_left_seconds": int(left),
        "weak": list(staple.weak),
    }
