"""actions.py: refreshes never raise into the app, and batches are summed up in one line."""

from __future__ import annotations

from types import SimpleNamespace

from engine.api import Outcome, StapleError
from staplectl.dashboard.actions import Refresher, describe
from tests.dashboard import fixed
from tests.dashboard.fixed import LEAVES

#: describe reads a staple's status only
GOOD_STAPLE = SimpleNamespace(status="good")


def test_an_engine_that_cannot_open_fails_every_refresh_without_raising():
    def cannot() -> None:
        raise PermissionError(13, "Permission denied", "/var/lib/staplectl/locks")

    outcomes = Refresher(cannot, lock_timeout=1).refresh([LEAVES["www"], LEAVES["api"]], force=True)
    assert [(o.leaf.name, o.result, o.ok) for o in outcomes] == [
        ("/etc/ssl/sites/www.pem", "failed", False), ("/etc/ssl/sites/api.pem", "failed", False),
    ]  # fmt: skip
    assert "cannot open the cache and locks: [Errno 13] Permission denied" in outcomes[0].message


def test_a_certificate_without_ocsp_is_no_ocsp_and_nothing_is_opened_for_it():
    def never() -> None:
        raise AssertionError("nothing to fetch: the engine is not opened")

    lets = fixed.leaf_without_ocsp("lets-actions", 30)
    must = fixed.leaf_without_ocsp("must-actions", 31, must_staple=True)
    outcomes = Refresher(never, lock_timeout=1).refresh([lets, must], force=True)
    assert [(o.leaf, o.result, o.ok) for o in outcomes] == [(lets, "no_ocsp", True), (must, "failed", False)]
    assert outcomes[1].reason == "must_staple_without_ocsp"


class Timeout(StapleError):
    reason = "timeout"


def test_describe():
    www, api, mail, shop = (LEAVES[name] for name in ("www", "api", "mail", "shop"))
    one = Outcome(www, GOOD_STAPLE, "updated")
    assert describe([one]) == f"{www.name}: updated: good"
    batch = [one, Outcome(api, GOOD_STAPLE, "fresh"), Outcome(mail, None, "failed", Timeout("no answer")),
             Outcome(shop, None, "failed", Timeout("no answer"))]  # fmt: skip
    assert describe(batch) == "2 failed, 1 fresh, 1 updated (timeout 2)"
    assert batch[2].message == "failed [timeout]: no answer"
