"""actions.py: refreshes never raise into the app, and batches are summed up in one line."""

from __future__ import annotations

from staplectl.dashboard.actions import Outcome, Refresher, describe
from tests.dashboard.fixed import LEAVES


def test_an_engine_that_cannot_open_fails_every_refresh_without_raising():
    def cannot() -> None:
        raise PermissionError(13, "Permission denied", "/var/lib/staplectl/locks")

    outcomes = Refresher(cannot, lock_timeout=1).refresh([LEAVES["www"], LEAVES["api"]], force=True)
    assert [(o.name, o.action, o.ok) for o in outcomes] == [
        ("/etc/ssl/sites/www.pem", "failed", False), ("/etc/ssl/sites/api.pem", "failed", False),
    ]  # fmt: skip
    assert "cannot open the cache and locks: [Errno 13] Permission denied" in outcomes[0].message


def test_describe():
    one = Outcome("a", "www.pem", "updated", "updated: good")
    assert describe([one]) == "www.pem: updated: good"
    batch = [one, Outcome("b", "x", "fresh", "fresh: good"), Outcome("c", "y", "failed", "failed", "timeout"),
             Outcome("d", "z", "failed", "failed", "timeout")]  # fmt: skip
    assert describe(batch) == "2 failed, 1 fresh, 1 updated (timeout 2)"
