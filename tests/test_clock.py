"""The one time format of every JSON output, and the clocks tests use."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from engine.clock import FrozenClock, iso


@pytest.mark.parametrize(
    "ts, text",
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_700_000_000, "2023-11-14T22:13:20Z"),
        (1_700_000_000.75, "2023-11-14T22:13:20Z"),  # the fraction is dropped, not rounded up
        (1_735_689_599, "2024-12-31T23:59:59Z"),
        (4_102_444_800, "2100-01-01T00:00:00Z"),
    ],
)
def test_iso_is_utc_with_a_z(ts, text):
    assert iso(ts) == text
    assert iso(ts) == datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_iso_of_nothing_is_none():
    assert iso(None) is None


def test_frozen_clock_moves_only_when_told():
    clock = FrozenClock(100)
    assert clock.now() == 100.0
    clock.advance(2.5)
    assert clock.now() == 102.5
    clock.set(7)
    assert clock.now() == 7.0
