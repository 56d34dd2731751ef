"""The first look at many certificates' cached staples at once.

A worker that loads 100,000 certificates would otherwise learn of each
staple in a job of its own: a fetch lock taken, one read from the store,
one validation, one state transaction. Reading takes no lock
(engine.refresh.reader), so the first look reads the store in batches and
validates them on a few threads. They buy less than the cores suggest:
cryptography releases the GIL inside the signature check alone, and on 2
cores a staple took 106 µs to validate on two threads against 135 µs on
one (docs/design.md). A certificate whose staple it finds fresh needs no
job until its renewal; the others are due now, and their jobs take the
lock as always.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from engine.ocsp.certs import Leaf
from engine.ocsp.staple import Staple
from engine.refresh.reader import StapleReader

#: certificates read from the store in one round trip, and validated by one thread
BATCH = 2000


def survey_threads() -> int:
    """One thread per core this process may run on (a container's share, not the host's), at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def cached_staples(
    reader: StapleReader, leaves: list[Leaf], threads: int, validated: Mapping[str, bytes] = {}
) -> dict[str, Staple | None]:
    """cert_id -> the cached staple if genuine (StapleReader.cached_many,
    ``validated`` passed on), for every leaf.

    Raises the store's StapleError when it cannot be read.
    """
    batches = [leaves[start : start + BATCH] for start in range(0, len(leaves), BATCH)]

    def look(batch: list[Leaf]) -> dict[str, Staple | None]:
        return reader.cached_many(batch, validated=validated)

    found: dict[str, Staple | None] = {}
    if threads <= 1 or len(batches) <= 1:
        for batch in batches:
            found.update(look(batch))
        return found
    with ThreadPoolExecutor(min(threads, len(batches)), thread_name_prefix="survey") as pool:
        for part in pool.map(look, batches):
            found.update(part)
    return found


def first_look(
    reader: StapleReader, leaves: list[Leaf], now: float, validated: Mapping[str, bytes] = {}
) -> dict[str, Staple]:
    """cert_id -> its cached staple, for the leaves whose staple is fresh.

    What a job's look in the cache would decide (Stapler.second_look's
    "fresh", with nothing planned yet), for all of them at once. Raises the
    store's StapleError when it cannot be read.
    """
    leaves = [leaf for leaf in leaves if leaf.has_responder]
    if not leaves:
        return {}
    staples = cached_staples(reader, leaves, survey_threads(), validated)
    fresh = {}
    for leaf in leaves:
        staple = staples.get(leaf.cert_id)
        if reader.usable(staple, now) and not reader.due(staple, now):  # type: ignore[arg-type]
            fresh[leaf.cert_id] = staple
    return fresh  # type: ignore[return-value]
