"""The prefetch worker's schedule on its own (engine/refresh/schedule.py): due
order, per-responder slots, parked and running jobs, and the plans after an
answer or a failure. No worker, no responder, no clock: times are numbers.
"""

from __future__ import annotations

from dataclasses import replace

from engine.refresh.freshness import DEFAULT_POLICY, FreshnessPolicy, expires_at
from engine.responders.health import responder_key
from engine.refresh.schedule import LAPSED_RETRY, MIN_RETRY, Schedule, after_answer, after_failure


class TestSchedule:
    def test_due_order_and_nothing_early(self):
        schedule = Schedule(per_responder=2)
        schedule.add("b", "r1", 20.0)
        schedule.add("a", "r2", 10.0)
        assert schedule.take(9.9) is None
        assert schedule.take(20.0).cert_id == "a"
        assert schedule.take(20.0).cert_id == "b"
        assert schedule.take(20.0) is None

    def test_a_full_responder_parks_its_jobs_and_others_go_on(self):
        schedule = Schedule(per_responder=2)
        for n in range(4):
            schedule.add(f"slow{n}", "slow", float(n))
        schedule.add("fast", "fast", 10.0)
        first, second = schedule.take(10.0), schedule.take(10.0)
        assert (first.cert_id, second.cert_id) == ("slow0", "slow1")
        assert schedule.take(10.0).cert_id == "fast"  # past the two parked ones
        assert schedule.take(10.0) is None
        assert schedule.in_flight("slow") == 2
        assert schedule.next_wakeup() is None and schedule.next_due() == 2.0
        assert schedule.done(first, 100.0)
        assert schedule.take(10.0).cert_id == "slow2"  # a slot freed: the earliest parked
        assert schedule.take(10.0) is None

    def test_a_certificate_runs_once_at_a_time_and_wakes_the_next_of_its_responder(self):
        schedule = Schedule(per_responder=1)
        schedule.add("a", "r", 0.0)
        schedule.add("b", "r", 1.0)
        schedule.add("c", "q", 2.0)
        a = schedule.take(5.0)
        assert a.cert_id == "a"
        assert schedule.take(5.0).cert_id == "c"  # past b, parked behind r
        assert schedule.take(5.0) is None  # a is running: not taken again, whatever is due
        schedule.done(a, 3.0)
        assert schedule.take(5.0).cert_id == "b"  # woken first, before a's new due time
        assert schedule.take(5.0) is None
        assert schedule.next_due() == 3.0

    def test_removed_jobs_vanish_even_when_parked_or_running(self):
        schedule = Schedule(per_responder=1)
        schedule.add("a", "r", 0.0)
        schedule.add("b", "r", 0.0)
        running = schedule.take(0.0)
        assert schedule.take(0.0) is None  # b parked
        schedule.remove("b")
        schedule.remove(running.cert_id)
        assert schedule.done(running, 50.0) is False
        assert schedule.take(100.0) is None and len(schedule) == 0 and schedule.in_flight("r") == 0

    def test_move_requeues_a_parked_job_on_its_new_responder(self):
        schedule = Schedule(per_responder=1)
        schedule.add("a", "r1", 0.0)
        schedule.add("b", "r1", 0.0)
        schedule.take(0.0)
        assert schedule.take(0.0) is None
        schedule.move("b", "r2", 5.0)
        assert schedule.take(5.0).cert_id == "b"

    def test_many_removals_compact_the_heap(self):
        schedule = Schedule(per_responder=2)
        for n in range(5000):
            schedule.add(str(n), "r", float(n))
        for n in range(4990):
            schedule.remove(str(n))
        assert len(schedule._heap) < 5000
        assert [schedule.take(1e9).cert_id for _ in range(2)] == ["4990", "4991"]

    def test_responder_key_is_the_origin(self):
        assert responder_key("http://OCSP.example.test/ca1") == responder_key("http://ocsp.example.test:80/ca2")
        assert responder_key("https://ocsp.example.test/") != responder_key("http://ocsp.example.test/")
        assert responder_key(None) == ""

    def test_plans_never_come_sooner_than_min_retry(self):
        policy = FreshnessPolicy(min_delay=0)
        assert after_answer(0.0, 10.0, 9.999, policy, 0.0) == 9.999 + MIN_RETRY
        assert after_failure(1, True, 100.5, 100.0, policy, 0.5) == 100.0 + MIN_RETRY

    def test_failure_plans(self):
        policy = DEFAULT_POLICY
        assert after_failure(3, True, 1e9, 0.0, policy, 0.5) == 4 * policy.backoff_base
        # nothing usable left: a temporary failure is tried again within LAPSED_RETRY
        assert after_failure(3, True, None, 0.0, policy, 0.5) == LAPSED_RETRY
        slow = replace(policy, backoff_base=300.0)
        assert after_failure(1, True, None, 0.0, slow, 0.5) == 300.0  # never sooner than its base
        assert after_failure(1, False, None, 0.0, policy, 0.5) == policy.backoff_cap
        expires = expires_at(0.0, 100.0, policy)
        assert after_failure(1, True, expires, 60.0, policy, 0.5) == 60.0 + (100.0 - 60.0) / 2
        assert after_failure(1, True, 1e6, 20.0, policy, 0.5) == 20.0 + policy.backoff_base


def test_an_unknown_answer_is_asked_again_soon_not_at_half_its_validity():
    """unknown is the responder's "not yet" (a certificate just issued): a day's
    validity must not leave it unknown for twelve hours."""
    from engine.refresh.freshness import UNKNOWN_RECHECK, renewal_point_for

    now = 1_000_000.0
    good = after_answer(now, now + 86400, now, DEFAULT_POLICY, 0.0)
    unknown = after_answer(now, now + 86400, now, DEFAULT_POLICY, 0.0, "unknown")
    assert good > now + 3600 and unknown == now + UNKNOWN_RECHECK
    assert renewal_point_for("unknown", now, now + 86400) == now + UNKNOWN_RECHECK
    assert renewal_point_for("revoked", now, now + 86400) == renewal_point_for("good", now, now + 86400) > now + 3600
    assert renewal_point_for("unknown", now, now + 300) == now + 150  # already sooner: unchanged
