"""Freshness rules, tested as pure functions: no I/O, no clock, no sleep."""

from __future__ import annotations

import pytest

from engine.refresh.freshness import (
    FreshnessPolicy,
    backoff,
    expires_at,
    is_due,
    is_usable,
    provider_ttl,
    renew_at,
    seconds_left,
)
from engine.store.providers.layout import MEMCACHED_MAX_TTL

T0 = 1_800_000_000.0
HOUR = 3600.0
DAY = 86400.0
POLICY = FreshnessPolicy(jitter=0.0)


class TestUsable:
    def test_current_response_is_usable(self):
        assert is_usable(T0, T0 + DAY, T0 + HOUR, POLICY)

    def test_expired_response_is_never_usable_even_within_skew(self):
        # mod_ssl would accept it for 300 s more; we never serve an expired staple
        assert not is_usable(T0, T0 + DAY, T0 + DAY, POLICY)
        assert not is_usable(T0, T0 + DAY, T0 + DAY + 1, POLICY)

    def test_future_this_update_within_skew_is_usable(self):
        assert is_usable(T0 + 299, T0 + DAY, T0, POLICY)

    def test_future_this_update_beyond_skew_is_not(self):
        assert not is_usable(T0 + 301, T0 + DAY, T0, POLICY)

    def test_without_next_update_max_age_applies(self):
        policy = FreshnessPolicy(max_age=HOUR)
        assert is_usable(T0, None, T0 + HOUR - 1, policy)
        assert not is_usable(T0, None, T0 + HOUR, policy)
        assert expires_at(T0, None, policy) == T0 + HOUR
        assert seconds_left(T0, None, T0 + 600, policy) == HOUR - 600


class TestRenewAt:
    def test_half_of_validity_by_default(self):
        # a 4-day response fetched at thisUpdate renews after 2 days... clamped to max 1 day
        policy = FreshnessPolicy(jitter=0.0, max_delay=7 * DAY)
        assert renew_at(T0, T0 + 4 * DAY, T0, policy) == T0 + 2 * DAY

    def test_clamped_to_max_delay(self):
        assert renew_at(T0, T0 + 4 * DAY, T0, POLICY) == T0 + POLICY.max_delay

    def test_clamped_to_min_delay(self):
        # halfway point already passed: do not retry at once, wait min_delay
        assert renew_at(T0, T0 + DAY, T0 + 0.6 * DAY, POLICY) == T0 + 0.6 * DAY + POLICY.min_delay

    def test_min_delay_never_lets_a_short_response_lapse(self):
        # 30 s of validity, min delay 60 s: renew at half of what is left instead
        when = renew_at(T0, T0 + 30, T0, POLICY)
        assert when == T0 + 15
        assert when < T0 + 30

    def test_other_fraction(self):
        policy = FreshnessPolicy(renew_fraction=0.67, jitter=0.0, max_delay=10 * DAY)
        assert renew_at(T0, T0 + 3 * DAY, T0, policy) == pytest.approx(T0 + 0.67 * 3 * DAY)

    def test_jitter_only_moves_earlier(self):
        policy = FreshnessPolicy(jitter=0.1)
        base = renew_at(T0, T0 + DAY, T0, policy, rand=0.0)
        earliest = renew_at(T0, T0 + DAY, T0, policy, rand=0.999999)
        assert base == T0 + DAY / 2
        assert T0 + 0.9 * DAY / 2 <= earliest < base

    def test_is_due(self):
        assert not is_due(T0 + 10, T0)
        assert is_due(T0 + 10, T0 + 10)


class TestBackoff:
    def test_exponential_without_jitter(self):
        policy = FreshnessPolicy(backoff_base=60, backoff_cap=3600)
        assert [backoff(n, policy, rand=0.5) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]

    def test_capped(self):
        policy = FreshnessPolicy(backoff_base=60, backoff_cap=3600)
        assert backoff(7, policy) == 3600
        assert backoff(10_000, policy) == 3600  # no overflow

    def test_jitter_spreads_both_ways_but_never_past_the_cap(self):
        policy = FreshnessPolicy(backoff_base=60, backoff_cap=3600, backoff_jitter=0.5)
        assert backoff(2, policy, rand=0.0) == 60
        assert backoff(2, policy, rand=1.0) == 180
        assert backoff(20, policy, rand=1.0) == 3600

    def test_no_failures_no_wait(self):
        assert backoff(0) == 0


class TestProviderTTL:
    def test_next_update_plus_skew(self):
        assert provider_ttl(T0, T0 + DAY, T0 + HOUR, POLICY) == int(DAY - HOUR + 300)

    def test_capped_for_memcached(self):
        ttl = provider_ttl(T0, T0 + 60 * DAY, T0, POLICY, max_ttl=MEMCACHED_MAX_TTL)
        assert ttl == MEMCACHED_MAX_TTL < 30 * DAY

    def test_long_expired_response_gets_no_ttl(self):
        assert provider_ttl(T0, T0 + HOUR, T0 + 2 * HOUR, POLICY) == 0


class TestPolicyChecks:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"renew_fraction": 0},
            {"renew_fraction": 1.0},
            {"min_delay": 100, "max_delay": 10},
            {"jitter": 1.0},
            {"backoff_base": 0},
            {"backoff_base": 100, "backoff_cap": 10},
        ],
    )
    def test_bad_policy_is_refused(self, kwargs):
        with pytest.raises(ValueError):
            FreshnessPolicy(**kwargs)
