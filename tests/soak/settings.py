"""The knobs of one soak run, with the long run's defaults.

The short (pytest) version uses the same code with shorter responses,
faults and gaps; every bound the invariants use is derived here, in one
place, so that the report can state it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PROVIDERS = ("local", "memcache", "redis")

#: the fault kinds, in the order the long run cycles through them. Responder
#: faults rotate over the CAs; cache faults are skipped on the local store.
RESPONDER_FAULTS = (
    "hang", "http_500", "try_later", "forged_signature", "rogue_signer", "expired", "flap",
)  # fmt: skip
CACHE_FAULTS = ("cache_restart", "cache_outage")
SERVICE_FAULTS = ("kill", "sighup_broken", "cert_replace")
ALL_FAULTS = (
    "hang", "kill", "http_500", "cache_restart", "try_later", "sighup_broken", "forged_signature",
    "cert_replace", "rogue_signer", "cache_outage", "expired", "flap",
)  # fmt: skip


@dataclass
class SoakSettings:
    provider: str = "local"
    #: measured time, after the world is up and the staples warmed
    seconds: float = 30 * 60
    #: leaves per CA (3 CAs)
    leaves_per_ca: int = 100
    #: validity of each CA's responses, seconds (A, B, C)
    validity: tuple[int, int, int] = (60, 120, 180)
    #: the order faults run in, cycled until the time is up
    faults: tuple[str, ...] = ALL_FAULTS
    #: a responder fault lasts this long, but never more than
    #: fault_fraction of the faulted CA's validity (less than half of it:
    #: a healthy service keeps such a CA's staples through the fault)
    fault_seconds: float = 45.0
    fault_fraction: float = 0.4
    #: healthy time between two faults
    gap_seconds: float = 20.0
    #: how long the cache stays down in the outage fault
    outage_seconds: float = 30.0
    #: flapping: good and hanging alternate this often
    flap_period: float = 1.5
    #: the monitor reads the store this often
    sample_interval: float = 0.5
    #: one one-shot command starts this long after the previous one ended
    reader_interval: float = 3.0
    #: the service's configuration (what an operator would write for 1-3 minute responses)
    min_delay: str = "2s"
    backoff_base: str = "2s"
    backoff_cap: str = "20s"
    responder_timeout: str = "3s"
    concurrency: int = 8
    per_responder: int = 2
    #: how long after the log says "updated" the store must show it
    write_visible_within: float = 1.0
    #: after the cache comes back (restart, outage), the service has this
    #: long to refill every staple; what is still missing then is lapsed
    refill_bound: float = 15.0
    #: a replaced certificate must have a staple this long after its SIGHUP
    replace_bound: float = 10.0
    #: RSS and descriptors: growth beyond these within one service process
    #: (from its first sample after rss_warmup) is flagged
    rss_growth_mib: float = 24.0
    fd_growth: int = 16
    rss_warmup: float = 20.0
    #: check's thresholds; its defaults (12h/2h) are far above these staples
    check_warn: str = "20s"
    check_crit: str = "5s"
    #: where to work; None: a temporary directory, removed unless keep
    workdir: str | None = None
    keep: bool = False
    #: violations on purpose, run before the faults, to prove the harness
    #: reports them (tests/soak/sabotage.py)
    sabotage: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, not {self.provider!r}")
        unknown = set(self.faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))} (known: {', '.join(ALL_FAULTS)})")
        from tests.soak.sabotage import KINDS

        self.sabotage = tuple(self.sabotage)
        if set(self.sabotage) - set(KINDS):
            raise ValueError(f"unknown sabotage: {', '.join(sorted(set(self.sabotage) - set(KINDS)))} (known: {', '.join(KINDS)})")
        self.validity = tuple(int(v) for v in self.validity)  # type: ignore[assignment]
        if len(self.validity) != 3:
            raise ValueError("validity needs three values, one per CA")

    # -- derived bounds ---------------------------------------------------------

    @property
    def backoff_cap_s(self) -> float:
        return _seconds(self.backoff_cap)

    @property
    def timeout_s(self) -> float:
        return _seconds(self.responder_timeout)

    @property
    def responder_recovery(self) -> float:
        """After a responder fault ends, its CA's certificates have this long
        to get a valid staple back before a lapse counts: a certificate whose
        staple lapsed during the fault waits its backoff (at most the cap),
        then one exchange (at most the timeout), plus a margin for the queue."""
        return self.backoff_cap_s + self.timeout_s + 5.0

    def fault_length(self, ca: int) -> float:
        return min(self.fault_seconds, self.fault_fraction * self.validity[ca])

    def faults_for_provider(self) -> tuple[str, ...]:
        if self.provider == "local":
            return tuple(f for f in self.faults if f not in CACHE_FAULTS)
        return self.faults

    def to_dict(self) -> dict:
        data = asdict(self)
        data["responder_recovery"] = self.responder_recovery
        return data


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip()
    if text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)
