"""The bounds of every number an operator can set, checked where it is read.

A number outside them is bad input (exit 2) naming the setting, the value
and the bounds, never a traceback later: ``timeout = inf`` or ``nan`` would
make a deadline that never comes, ``stripes = 5000`` crashed the first
fetch, ``max_size = 4000000000`` let a responder fill our memory. The same
table serves the configuration file, the command line and the cache URI,
and docs/security.md prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.errors import InputError

_DAY = 86400.0


class OutOfBoundsError(InputError):
    reason = "out_of_bounds"


@dataclass(frozen=True)
class Bound:
    low: float
    high: float
    #: "s" for durations, "bytes", or "" for a plain count or fraction
    unit: str = ""
    #: the low end itself is not allowed (a fraction that must be above 0)
    above_low: bool = False
    #: the high end itself is not allowed (a fraction that must be below 1)
    below_high: bool = False

    def allows(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        low_ok = value > self.low if self.above_low else value >= self.low
        high_ok = value < self.high if self.below_high else value <= self.high
        return low_ok and high_ok

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        low = f"above {_number(self.low)}" if self.above_low else f"at least {_number(self.low)}"
        high = f"below {_number(self.high)}" if self.below_high else f"at most {_number(self.high)}"
        return f"{low} and {high}{unit}"


def _number(value: float) -> str:
    """As an operator writes it: 1048576, 0.1, 8.64e+15, nan."""
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and abs(value) < 1e12:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


# The defaults of settings that other modules of the engine use, kept here
# so that reading a configuration (staplectl config, --help) loads nothing
# else of the engine: no cryptography, no transport.
#: responder.timeout: connect, send and read, in total, in seconds
DEFAULT_TIMEOUT = 10.0
#: responder.max_size: the largest response read, in bytes
DEFAULT_MAX_SIZE = 64 * 1024
#: locks.stripes
DEFAULT_STRIPES = 64
#: responder.skew: mod_ssl's own tolerance (MAX_VALIDITY_PERIOD 300 s)
DEFAULT_SKEW = 300.0
#: responder.max_age, for a response without nextUpdate: as long as mod_ssl keeps one
DEFAULT_MAX_AGE = 3600.0
#: responder.hash, --hash: the CertID hashes a request may use
CERTID_HASHES = ("sha1", "sha256", "sha384", "sha512")

#: setting -> its bounds; the names are the configuration's (section.key)
BOUNDS: dict[str, Bound] = {
    "locks.stripes": Bound(1, 4096),
    "prefetch.renew_fraction": Bound(0, 1, above_low=True, below_high=True),
    "prefetch.min_delay": Bound(0, 30 * _DAY, "s"),
    "prefetch.max_delay": Bound(1, 30 * _DAY, "s"),
    "prefetch.jitter": Bound(0, 1, below_high=True),
    "prefetch.backoff_base": Bound(0.1, _DAY, "s"),
    "prefetch.backoff_cap": Bound(0.1, 7 * _DAY, "s"),
    "prefetch.backoff_jitter": Bound(0, 1, below_high=True),
    "prefetch.concurrency": Bound(1, 1024),
    "prefetch.per_responder": Bound(1, 1024),
    "responder.timeout": Bound(0.1, 300, "s"),
    # a real OCSP response is a few KiB; httpd's cache holds at most 10 KiB
    "responder.max_size": Bound(512, 1024 * 1024, "bytes"),
    "responder.skew": Bound(0, 3600, "s"),
    "responder.max_age": Bound(60, 7 * _DAY, "s"),
    "request.budget": Bound(0.01, 60, "s"),
    "request.lease_ttl": Bound(1, 3600, "s"),
    # the cache URI's ?timeout=
    "cache.timeout": Bound(0.1, 300, "s"),
}


def check(name: str, value: float, *, where: str | None = None, option: str | None = None) -> float:
    """``value`` if it is within BOUNDS[name], else OutOfBoundsError.

    The message names the setting as the operator gave it: ``option``
    (``--timeout``) on the command line, else ``name`` in ``where`` (the
    configuration file, the cache URI).
    """
    bound = BOUNDS[name]
    if isinstance(value, bool) or not bound.allows(value):
        given = f"{option} {_number(value)}" if option else f"{name} = {_number(value)}"
        prefix = f"{where}: " if where else ""
        raise OutOfBoundsError(f"{prefix}{given} is out of bounds: it must be {bound}")
    return value
