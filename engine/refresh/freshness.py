"""Freshness rules: pure functions of a response's times and the clock.

No I/O and no clock reads: every function is given ``now`` (and, where it
jitters, a random number in [0, 1)), so each rule is tested on its own, in
the manner of hishel's ``_spec.py``. The prefetch worker, the request path
and the CLI all decide with these and nothing else.

Terms (RFC 6960 4.2.1 / RFC 5019 4): a response is *current* from
thisUpdate to nextUpdate. Without nextUpdate, "newer information is always
available" and we keep it at most ``max_age`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.bounds import DEFAULT_MAX_AGE, DEFAULT_SKEW


@dataclass(frozen=True)
class FreshnessPolicy:
    #: renew once this fraction of the validity has passed (Caddy: 0.5; mod_md: 0.67)
    renew_fraction: float = 0.5
    #: never renew sooner than this after now (protects the responder)...
    min_delay: float = 60.0
    #: ...nor later than this (so revocation is noticed within a day)
    max_delay: float = 86400.0
    #: renewals are moved earlier by up to this fraction, to spread load
    jitter: float = 0.1
    backoff_base: float = 60.0
    backoff_cap: float = 3600.0
    #: failures are retried after the backoff +- this fraction
    backoff_jitter: float = 0.5
    skew: float = DEFAULT_SKEW
    max_age: float = DEFAULT_MAX_AGE

    def __post_init__(self) -> None:
        if not 0 < self.renew_fraction < 1:
            raise ValueError(f"renew fraction {self.renew_fraction} must be between 0 and 1")
        if self.min_delay < 0 or self.max_delay < self.min_delay:
            raise ValueError(
                f"delays must satisfy 0 <= min ({self.min_delay}) <= max ({self.max_delay})"
            )
        if not 0 <= self.jitter < 1 or not 0 <= self.backoff_jitter < 1:
            raise ValueError("jitter fractions must be in [0, 1)")
        if self.backoff_base <= 0 or self.backoff_cap < self.backoff_base:
            raise ValueError(
                f"backoff must satisfy 0 < base ({self.backoff_base}) <= cap ({self.backoff_cap})"
            )


DEFAULT_POLICY = FreshnessPolicy()


def expires_at(this_update: float, next_update: float | None, policy: FreshnessPolicy = DEFAULT_POLICY) -> float:
    """When a response stops being servable: nextUpdate, else thisUpdate + max_age."""
    return next_update if next_update is not None else this_update + policy.max_age


def is_usable(
    this_update: float, next_update: float | None, now: float, policy: FreshnessPolicy = DEFAULT_POLICY
) -> bool:
    """May this response be served (stapled, exported) now?

    thisUpdate may be up to ``skew`` ahead of us (the responder's clock may
    run fast). nextUpdate gets no grace: an expired staple is never served,
    whatever mod_ssl's own 300 s tolerance would allow.
    """
    return this_update <= now + policy.skew and now < expires_at(this_update, next_update, policy)


def seconds_left(
    this_update: float, next_update: float | None, now: float, policy: FreshnessPolicy = DEFAULT_POLICY
) -> float:
    return expires_at(this_update, next_update, policy) - now


def renewal_point(
    this_update: float, next_update: float | None, policy: FreshnessPolicy = DEFAULT_POLICY
) -> float:
    """The moment ``renew_fraction`` of the validity has passed, unclamped.

    The request path (prefetch off) refreshes a staple from this point on;
    the worker schedules with renew_at, which also clamps and jitters.
    """
    end = expires_at(this_update, next_update, policy)
    return this_update + policy.renew_fraction * (end - this_update)


#: an ``unknown`` answer is the responder's "not yet" (a certificate it has
#: not heard of yet, such as one just issued), not a verdict: it is asked
#: again this soon, not at half its validity
UNKNOWN_RECHECK = 600.0


def renewal_point_for(status: str, this_update: float, next_update: float | None,
                      policy: FreshnessPolicy = DEFAULT_POLICY) -> float:  # fmt: skip
    """renewal_point, brought forward for an ``unknown`` answer (UNKNOWN_RECHECK)."""
    point = renewal_point(this_update, next_update, policy)
    return min(point, this_update + UNKNOWN_RECHECK) if status == "unknown" else point


def renew_at(
    this_update: float,
    next_update: float | None,
    now: float,
    policy: FreshnessPolicy = DEFAULT_POLICY,
    rand: float = 0.0,
) -> float:
    """When to fetch a replacement for a response we hold.

    At ``renew_fraction`` of its validity, clamped to [min_delay, max_delay]
    from now, then moved earlier by up to ``jitter`` of the delay. The
    minimum delay yields to expiry: if it would let the response lapse, we
    renew at the same fraction of what is left instead (a responder that
    issues 30-second responses gets asked every 15 seconds).
    """
    end = expires_at(this_update, next_update, policy)
    target = renewal_point(this_update, next_update, policy)
    delay = min(max(target - now, policy.min_delay), policy.max_delay)
    if now + delay >= end:
        delay = max(0.0, (end - now) * policy.renew_fraction)
    return now + delay * (1.0 - policy.jitter * rand)


def is_due(renew_time: float, now: float) -> bool:
    return now >= renew_time


def backoff(failures: int, policy: FreshnessPolicy = DEFAULT_POLICY, rand: float = 0.5) -> float:
    """Seconds to wait after ``failures`` consecutive failures (1 or more).

    Exponential from ``backoff_base``, capped at ``backoff_cap``, then spread
    by +- ``backoff_jitter`` (``rand`` 0.5 means no spread), and never more
    than the cap.
    """
    if failures < 1:
        return 0.0
    # min() on the exponent first: 2**1000 would overflow a float
    raw = min(policy.backoff_base * 2.0 ** min(failures - 1, 64), policy.backoff_cap)
    spread = 1.0 + policy.backoff_jitter * (2.0 * rand - 1.0)
    return min(raw * spread, policy.backoff_cap)


def provider_ttl(
    this_update: float,
    next_update: float | None,
    now: float,
    policy: FreshnessPolicy = DEFAULT_POLICY,
    max_ttl: int | None = None,
) -> int:
    """The physical TTL to give a provider: at most nextUpdate + skew - now.

    Longer than the renew time on purpose (dogpile's logical versus physical
    expiry): the old staple stays in the store while its successor is being
    fetched. ``max_ttl`` is the store's own limit (memcached: under 30
    days). 0 means: do not store it at all.
    """
    ttl = int(expires_at(this_update, next_update, policy) + policy.skew - now)
    if max_ttl is not None:
        ttl = min(ttl, max_ttl)
    return max(ttl, 0)
