"""Responder health shared by every process: a down responder costs one probe
at a time, not one timeout per certificate, and its first answer brings it back."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from engine.ocsp.certs import load_leaf
from engine.clock import FrozenClock
from engine.errors import ResponderHTTPError, ResponderTimeoutError, ResponderUnreachableError
from engine.responders.health import (
    PROBE_BASE, PROBE_CAP, ResponderDownError, ResponderHealth, ResponderState, probe_delay,
    responder_key,
)
from tests.responder import Behaviour
from tests.test_fanout import run
from tests.test_stapler import make_stapler

KEY = "http://ocsp.example.test:80"


def health(tmp_path, clock) -> ResponderHealth:
    return ResponderHealth(tmp_path / "locks", clock=clock, rand=lambda: 0.5)


def fail(h: ResponderHealth, error=None) -> None:
    with pytest.raises(type(error or ResponderTimeoutError("x"))):
        with h.asking(KEY):
            raise error or ResponderTimeoutError(f"responder {KEY}/: no complete answer within 10 s")


def test_a_timeout_marks_it_down_and_the_others_fail_at_once(tmp_path):
    clock = FrozenClock(1_000_000.0)
    h = health(tmp_path, clock)
    with h.asking(KEY):
        pass  # up: asked, answered, nothing written
    assert not (tmp_path / "locks" / "responders.json").exists()
    fail(h)
    [state] = h.down().values()
    assert (state.key, state.failures, state.next_probe) == (KEY, 1, clock.now() + PROBE_BASE)
    # another process sees it, and sends nothing before the probe is due
    other = health(tmp_path, clock)
    with pytest.raises(ResponderDownError, match=f"responder {KEY} down since .*no complete answer within 10 s"):
        with other.asking(KEY):
            raise AssertionError("nothing may be sent")


def test_one_probe_at_a_time_and_its_answer_brings_it_back(tmp_path):
    clock = FrozenClock(1_000_000.0)
    h, other = health(tmp_path, clock), health(tmp_path, clock)
    fail(h)
    clock.advance(PROBE_BASE)
    probe = h.ask(KEY)  # this process probes...
    with pytest.raises(ResponderDownError, match="another probe is out"):
        other.ask(KEY)  # ...and no other may meanwhile
    probe.done(None)  # it answered
    assert h.down() == {} and other.down() == {}
    with other.asking(KEY):
        pass


def test_a_failed_probe_doubles_the_wait_and_late_failures_change_nothing(tmp_path):
    clock = FrozenClock(1_000_000.0)
    h = health(tmp_path, clock)
    late = h.ask(KEY)  # sent while it was still up
    fail(h)
    late.done(ResponderTimeoutError("late"))  # says nothing new: no second failure counted
    assert h.down()[KEY].failures == 1
    clock.advance(PROBE_BASE)
    probe = h.ask(KEY)
    probe.done(ResponderUnreachableError(f"responder {KEY}/: connection refused"))
    state = h.down()[KEY]
    assert state.failures == 2 and state.next_probe == clock.now() + probe_delay(2, 0.5) == clock.now() + 2 * PROBE_BASE
    assert "connection refused" in state.last_error


def test_an_answer_however_bad_is_an_answer(tmp_path):
    clock = FrozenClock(1_000_000.0)
    h = health(tmp_path, clock)
    fail(h)
    clock.advance(PROBE_BASE)
    fail(h, ResponderHTTPError(f"responder {KEY}/: answered HTTP 503", 503))  # the probe got a 503
    assert h.down() == {}


def test_a_staple_that_would_lapse_before_the_next_probe_may_probe_now(tmp_path):
    """The next probe may be a minute away; a staple ending sooner must not wait for it."""
    clock = FrozenClock(1_000_000.0)
    h = health(tmp_path, clock)
    fail(h)
    for _ in range(3):  # three failed probes: the next is 40 s after the last
        clock.set(h.down()[KEY].next_probe)
        fail(h)
    state = h.down()[KEY]
    assert state.next_probe - clock.now() == probe_delay(4, 0.5) == 8 * PROBE_BASE
    with pytest.raises(ResponderDownError, match="next probe at"):
        h.ask(KEY, expires=clock.now() + 10)  # within PROBE_BASE of the last failure: no
    clock.advance(PROBE_BASE)
    with pytest.raises(ResponderDownError, match="next probe at"):
        h.ask(KEY, expires=state.next_probe + 1)  # outlasts the next probe: it waits
    with pytest.raises(ResponderDownError, match="next probe at"):
        h.ask(KEY, expires=None)  # nothing usable cached: nothing left to save, it waits
    early = h.ask(KEY, expires=clock.now() + 10)  # runs out before the next probe: it probes
    assert early.probe is not None
    with pytest.raises(ResponderDownError, match="another probe is out"):
        h.ask(KEY, expires=clock.now() + 10)  # still one at a time
    early.done(ResponderTimeoutError("still hanging"))
    with pytest.raises(ResponderDownError, match="next probe at"):
        h.ask(KEY, expires=clock.now() + 10)  # it failed: the next early one waits PROBE_BASE
    clock.advance(PROBE_BASE)
    h.ask(KEY, expires=clock.now() + 1).done(None)  # and that one finds it back
    assert h.down() == {}


def first_state(clock):
    return ResponderState(KEY, clock.now(), "", 0, clock.now())


def test_a_responder_back_between_probes_renews_staples_before_they_lapse(tmp_path, pki, responder):
    """The soak's failure: a responder back 28 s before its next probe while its
    60 s staples ran out. The worker's retries near expiry are probes now."""
    from engine.refresh.prefetch import PrefetchWorker, WorkerOptions

    clock = FrozenClock(time.time())
    stapler = make_stapler(tmp_path, timeout=1.0)
    stapler.clock = clock
    stapler.health = ResponderHealth(tmp_path / "locks", clock=clock, rand=lambda: 0.5)
    leaves = [load_leaf(pki.leaf(f"health-early-{n}").chain_path) for n in range(3)]
    for leaf in leaves:
        responder.script(leaf.serial, Behaviour(this_update_offset=0, next_update_offset=60))
    worker = PrefetchWorker(stapler, clock=clock, options=WorkerOptions(concurrency=4, per_responder=2))
    worker.load(leaves)
    worker.run_due()
    first = {leaf.cert_id: stapler.cached(leaf) for leaf in leaves}
    assert all(first.values())
    expires = min(staple.next_update for staple in first.values())
    # down for a while: its next probe lies past every staple's end
    key = responder_key(leaves[0].responder_url())
    for _ in range(4):  # the first marks it down; three probes fail, each at its time
        clock.set(max(clock.now(), stapler.health.down().get(key, first_state(clock)).next_probe))
        with pytest.raises(ResponderTimeoutError):
            with stapler.health.asking(key):
                raise ResponderTimeoutError(f"responder {key}/: no complete answer within 1 s")
    assert stapler.health.down()[key].next_probe > expires
    for leaf in leaves:  # what it answers once back: produced later than the staples held
        responder.script(leaf.serial, Behaviour(this_update_offset=30, next_update_offset=120))
    # back now; the worker runs its retries as they fall due, up to the staples' end
    while clock.now() < expires - 1:
        due = min(due for _, due in worker.schedule())
        clock.set(min(max(due, clock.now()), expires - 1))
        worker.run_due()
        if all(stapler.cached(leaf).this_update > first[leaf.cert_id].this_update for leaf in leaves):
            break
    assert stapler.health.down() == {}
    for leaf in leaves:
        renewed = stapler.cached(leaf)
        assert renewed.this_update > first[leaf.cert_id].this_update, "a staple lapsed waiting for the probe"
    worker.stop()


def test_a_warm_probes_for_a_staple_that_would_lapse_before_the_next_probe(tmp_path, pki, responder):
    """The fanout (warm, the dashboard) passes the cached staple too: one certificate
    probes, the responder is up again, and its staple is renewed in the same run."""
    clock = FrozenClock(time.time())
    stapler = make_stapler(tmp_path, timeout=1.0)
    stapler.clock = clock
    stapler.health = ResponderHealth(tmp_path / "locks", clock=clock, rand=lambda: 0.5)
    leaf = load_leaf(pki.leaf("health-early-warm").chain_path)
    responder.script(leaf.serial, Behaviour(this_update_offset=0, next_update_offset=60))
    [result] = run(stapler, [leaf])
    held = stapler.cached(leaf)
    key = responder_key(leaf.responder_url())
    for _ in range(4):
        clock.set(max(clock.now(), stapler.health.down().get(key, first_state(clock)).next_probe))
        with pytest.raises(ResponderTimeoutError):
            with stapler.health.asking(key):
                raise ResponderTimeoutError(f"responder {key}/: no complete answer within 1 s")
    clock.advance(PROBE_BASE)  # 40 s in: the staple ends in 20, the next probe in 35
    responder.script(leaf.serial, Behaviour(this_update_offset=30, next_update_offset=120))
    [result] = run(stapler, [leaf])
    assert result.action == "updated" and stapler.cached(leaf).this_update > held.this_update
    assert stapler.health.down() == {}


def _take_probe_and_hang(directory, ready) -> None:
    ResponderHealth(directory, clock=FrozenClock(2_000_000.0)).ask(KEY)
    ready.set()
    time.sleep(600)


def test_a_probe_whose_process_died_is_no_probe(tmp_path):
    clock = FrozenClock(1_000_000.0)
    h = health(tmp_path, clock)
    fail(h)
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_take_probe_and_hang, args=(tmp_path / "locks", ready))
    child.start()
    assert ready.wait(30)
    clock.advance(PROBE_BASE)
    with pytest.raises(ResponderDownError, match="another probe is out"):
        h.ask(KEY)
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    h.ask(KEY).done(None)  # its lock went with it
    assert h.down() == {}


def test_a_warm_of_a_hanging_responder_ends_in_about_one_timeout(tmp_path, pki, responder):
    """24 certificates, 8 in flight, a 1 s timeout: the first 8 time out together,
    the other 16 fail at once instead of in two more rounds of timeouts."""
    stapler = make_stapler(tmp_path, timeout=1.0)
    stapler.health = ResponderHealth(tmp_path / "locks")
    leaves = [load_leaf(pki.leaf(f"health-warm-{n}").chain_path) for n in range(24)]
    for leaf in leaves:
        responder.script(leaf.serial, Behaviour(hang=True))
    asked = responder.request_count
    started = time.monotonic()
    results = run(stapler, leaves, in_flight=8)
    took = time.monotonic() - started
    assert all(isinstance(r, (ResponderTimeoutError, ResponderDownError)) for r in results), results
    assert sum(isinstance(r, ResponderDownError) for r in results) >= 16
    assert responder.request_count - asked <= 8
    assert took < 2.5, f"{took:.1f} s: more than one round of timeouts"


def test_the_request_path_fails_at_once_for_a_down_responder(tmp_path, pki, responder):
    stapler = make_stapler(tmp_path, timeout=1.0, request_budget=5)
    stapler.health = ResponderHealth(tmp_path / "locks")
    first, second = (load_leaf(pki.leaf(f"health-path-{n}").chain_path) for n in range(2))
    responder.script(first.serial, Behaviour(hang=True))
    responder.script(second.serial, Behaviour(hang=True))
    assert stapler.staple(first).source == "none"  # its own timeout: it marks the responder down
    started = time.monotonic()
    lookup = stapler.staple(second)
    assert lookup.source == "none" and isinstance(lookup.error, ResponderDownError)
    assert time.monotonic() - started < 0.5


def test_the_worker_says_it_once_and_renews_all_at_once_when_it_is_back(tmp_path, pki, responder):
    from engine.refresh.prefetch import PrefetchWorker, WorkerOptions

    clock = FrozenClock(time.time())
    stapler = make_stapler(tmp_path, timeout=1.0)
    stapler.clock = clock
    stapler.health = ResponderHealth(tmp_path / "locks", clock=clock, rand=lambda: 0.5)
    events: list = []
    worker = PrefetchWorker(stapler, clock=clock, options=WorkerOptions(concurrency=4, per_responder=2),
                            on_event=events.append)  # fmt: skip
    leaves = [load_leaf(pki.leaf(f"health-worker-{n}").chain_path) for n in range(6)]
    for leaf in leaves:
        responder.script(leaf.serial, Behaviour(hang=True))
    worker.load(leaves)
    failed = worker.run_due()
    assert [e.action for e in events].count("responder_down") == 1
    reasons = sorted(e.reason for e in failed)
    assert reasons.count("timeout") <= 2 and reasons.count("responder_down") >= 4  # one round of timeouts
    for leaf in leaves:
        responder.script(leaf.serial, None)  # back
    clock.advance(PROBE_BASE * 1.5)  # the probe is due; each certificate's own retry is later
    probe_due = min(due for _, due in worker.schedule())
    clock.set(max(clock.now(), probe_due))
    events.clear()
    worker.run_due()
    up = [e for e in events if e.action == "responder_up"]
    assert len(up) == 1 and "certificates that failed on it are due now" in up[0].detail
    worker.run_due()  # those brought forward: all renewed now, not at their own retry
    assert all(stapler.cached(leaf) is not None for leaf in leaves)
    worker.stop()


def test_probes_double_with_jitter_and_never_wait_more_than_a_minute():
    assert probe_delay(1, 0.5) == PROBE_BASE and probe_delay(2, 0.5) == 2 * PROBE_BASE
    assert probe_delay(1, 0.0) == PROBE_BASE / 2 and probe_delay(1, 0.999) < PROBE_BASE * 1.5
    assert probe_delay(40, 0.999) == PROBE_CAP == 60.0
