"""check's thresholds: a duration (12h), or a share of the staple's own
validity (40%), which fits every CA: a 7-day response and a 1-hour one are
each judged by how far through their life they are.

The defaults say what an operator wants to hear about: WARNING at 40 %
left, when a staple is a tenth of its validity past its renewal point (50 %
by default), so the prefetch service is behind; CRITICAL at 10 % left.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.api import FreshnessPolicy, InputError, Staple, expires_at, parse_duration

DEFAULT_WARN = "40%"
DEFAULT_CRIT = "10%"


@dataclass(frozen=True)
class Threshold:
    text: str
    #: a duration, in seconds
    seconds: float | None = None
    #: a share of the staple's validity, 0 to 1
    share: float | None = None

    def for_staple(self, staple: Staple, policy: FreshnessPolicy) -> float:
        """Seconds of time left below which this threshold is crossed, for this staple."""
        if self.seconds is not None:
            return self.seconds
        assert self.share is not None
        validity = expires_at(staple.this_update, staple.next_update, policy) - staple.this_update
        return self.share * max(validity, 0.0)


def parse_threshold(text: str, option: str) -> Threshold:
    """``12h``, ``90`` (seconds), or ``40%``; the InputError naming the option otherwise."""
    value = text.strip()
    if value.endswith("%"):
        number = value[:-1].strip()
        try:
            share = float(number)
        except ValueError:
            share = -1.0
        if not 0 < share < 100:
            raise InputError(f"{option}: {text!r} is not a share of the validity (examples: 40%, 10%, 2.5%)")
        return Threshold(text, share=share / 100)
    try:
        return Threshold(text, seconds=parse_duration(value, option))
    except ValueError as exc:
        raise InputError(f"{exc} (or a share of the validity: 40%)") from None


def check_order(warn: Threshold, crit: Threshold) -> None:
    """--warn must not be crossed after --crit, when the two can be compared."""
    if warn.seconds is not None and crit.seconds is not None and warn.seconds < crit.seconds:
        raise InputError(f"--warn {warn.text} must not be shorter than --crit {crit.text}")
    if warn.share is not None and crit.share is not None and warn.share < crit.share:
        raise InputError(f"--warn {warn.text} must not be smaller than --crit {crit.text}")
