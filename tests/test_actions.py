"""The renewal actions' runner (engine/refresh/actions.py), on an injected
clock: batches, min_interval, an expired staple at once, retries that keep
what is pending, and a runner thread that a hanging action cannot stall."""

from __future__ import annotations

import threading

import pytest

from engine.clock import FrozenClock
from engine.ocsp.certs import load_leaf
from engine.refresh.actions import BATCH_DELAY, RETRY_BASE, ActionError, ActionResult, ActionRunner


class Recording:
    """An action that records what it was run for; fails while ``failing``."""

    def __init__(self, name: str = "nginx", min_interval: float = 30.0, expires: float | None = None) -> None:
        self.name = name
        self.min_interval = min_interval
        self.expires = expires
        self.runs: list[list[str]] = []
        self.failing = False

    def run(self, leaves):
        self.runs.append(sorted(leaf.name.rsplit("/", 1)[-1] for leaf in leaves))
        if self.failing:
            raise ActionError("reload command 'nginx -s reload' exited with 1")
        return ActionResult("done", {leaf.cert_id: self.expires for leaf in leaves})


_MADE: list = []


@pytest.fixture
def leaves(pki):
    """Three leaves, made once: the PKI lives for the session and names are unique."""
    if not _MADE:
        _MADE.extend(load_leaf(pki.leaf(f"act-{n}").chain_path) for n in range(3))
    return _MADE


def runner_with(action, clock, events=None):
    return ActionRunner([action], clock=clock, rand=lambda: 0.5, on_event=(events.append if events is not None else print))


def test_renewals_arriving_together_are_one_run(pki, leaves):
    clock, action = FrozenClock(1000.0), Recording()
    runner = runner_with(action, clock)
    runner.changed(leaves[:1])
    clock.advance(0.5)
    runner.changed(leaves[1:])  # within the batch window
    assert runner.run_due() == 1000.0 + BATCH_DELAY and action.runs == []
    clock.set(1000.0 + BATCH_DELAY)
    assert runner.run_due() is None
    assert action.runs == [["act-0-chain.pem", "act-1-chain.pem", "act-2-chain.pem"]]


def test_never_more_than_one_run_per_min_interval(pki, leaves):
    clock, action = FrozenClock(1000.0), Recording(min_interval=30.0)
    runner = runner_with(action, clock)
    runner.changed(leaves[:1])
    clock.advance(BATCH_DELAY)
    runner.run_due()
    clock.advance(5)
    runner.changed(leaves[1:2])  # 6 s after the last run: waits for the interval
    assert runner.next_due() == 1000.0 + BATCH_DELAY + 30.0
    clock.set(1000.0 + BATCH_DELAY + 29.9)
    runner.run_due()
    assert len(action.runs) == 1
    clock.set(1000.0 + BATCH_DELAY + 30.0)
    runner.run_due()
    assert action.runs[1] == ["act-1-chain.pem"]


def test_an_expiring_staple_is_acted_on_at_once_whatever_the_interval(pki, leaves):
    clock, action = FrozenClock(1000.0), Recording(min_interval=3600.0, expires=1100.0)
    runner = runner_with(action, clock)
    runner.changed(leaves[:1])
    clock.advance(BATCH_DELAY)
    runner.run_due()
    assert runner.next_due() == 1100.0  # its served staple's end, not the interval's
    action.expires = None  # by then the cache holds nothing servable: the file goes
    clock.set(1100.0)
    runner.run_due()
    assert action.runs == [["act-0-chain.pem"], ["act-0-chain.pem"]]
    assert runner.next_due() is None


def test_a_failed_run_is_retried_with_backoff_and_keeps_what_came_meanwhile(pki, leaves):
    clock, action, events = FrozenClock(1000.0), Recording(min_interval=0.0), []
    runner = runner_with(action, clock, events)
    action.failing = True
    runner.changed(leaves[:1])
    clock.advance(BATCH_DELAY)
    runner.run_due()
    [failed] = events
    assert (failed.level, failed.outcome) == ("error", "failed") and "exited with 1" in failed.detail
    [state] = runner.states()
    assert (state.failures, state.pending, state.next_run) == (1, 1, clock.now() + RETRY_BASE)
    runner.changed(leaves[1:2])  # arrives while it waits: runs with the retry
    clock.advance(RETRY_BASE)
    runner.run_due()
    assert runner.states()[0].next_run == clock.now() + 2 * RETRY_BASE  # doubled
    action.failing = False
    clock.advance(2 * RETRY_BASE)
    runner.run_due()
    assert action.runs[-1] == ["act-0-chain.pem", "act-1-chain.pem"]
    [state] = runner.states()
    assert (state.failures, state.pending, state.last_error, state.last_success) == (0, 0, None, clock.now())


def test_a_bug_in_an_action_is_a_failure_not_the_end_of_the_runner(pki, leaves):
    class Broken(Recording):
        def run(self, leaves):
            raise KeyError("oops")

    clock, events = FrozenClock(1000.0), []
    runner = runner_with(Broken(), clock, events)
    runner.changed(leaves[:1])
    clock.advance(BATCH_DELAY)
    runner.run_due()
    assert "internal error: KeyError" in events[0].detail and runner.states()[0].failures == 1


def test_run_now_runs_every_action_at_once_and_says_which_failed(pki, leaves):
    clock = FrozenClock(1000.0)
    good, bad = Recording("nginx"), Recording("haproxy")
    bad.failing = True
    runner = ActionRunner([good, bad], clock=clock, rand=lambda: 0.5)
    failed = runner.run_now(leaves)
    assert [e.action for e in failed] == ["haproxy"] and len(good.runs) == len(bad.runs) == 1


def test_a_hanging_action_holds_up_no_caller(pki, leaves):
    """Renewals only call changed(): the run happens on the runner's thread."""
    entered, release = threading.Event(), threading.Event()

    class Hanging(Recording):
        def run(self, leaves):
            entered.set()
            release.wait(30)
            return super().run(leaves)

    action = Hanging(min_interval=0.0)
    runner = ActionRunner([action], rand=lambda: 0.5)
    runner.start()
    try:
        runner.changed(leaves[:1])
        assert entered.wait(10)
        runner.changed(leaves[1:])  # returns although a run hangs
        assert runner.states()[0].pending == 2
    finally:
        release.set()
        runner.stop()
