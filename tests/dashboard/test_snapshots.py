"""SVG snapshots of the dashboard (pytest-textual-snapshot) from fixed data.

The data is tests/dashboard/fixed.py: deterministic certificates and
responses, a frozen clock, fixed lock figures, so the baselines in
__snapshots__/ are the same on every machine. After an intended change of
the layout, look at the report pytest writes, then run this file once
with --snapshot-update and commit the new SVGs.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.clock import FrozenClock
from staplectl.config import Config
from staplectl.dashboard.app import DashboardApp
from staplectl.dashboard.factory import make_app
from staplectl.dashboard.snapshot import StaticCollector
from tests.dashboard import fixed

SIZE = (160, 40)


@pytest.fixture(autouse=True)
def _home(home, monkeypatch):
    """Nothing of the real machine's state (the refresher would look there), and colour:
    NO_COLOR in the environment would make Textual draw every snapshot monochrome."""
    monkeypatch.delenv("NO_COLOR", raising=False)


def app_for(*snapshots) -> DashboardApp:
    collector = StaticCollector(*snapshots, histories=fixed.HISTORY)
    return make_app(Config(), interval=3600, clock=FrozenClock(fixed.T), collector=collector)


async def reads(app: DashboardApp, count: int) -> None:
    """Wait until ``count`` reads have been shown."""
    deadline = time.monotonic() + 10
    while app.reads < count:
        assert time.monotonic() < deadline, f"only {app.reads} reads of {count}"
        await asyncio.sleep(0.01)


async def four_reads(pilot) -> None:
    # four reads of rising lock counters: the wait history has three points
    await reads(pilot.app, 1)
    for n in (2, 3, 4):
        pilot.app.request_read()
        await reads(pilot.app, n)


def test_main_screen(snap_compare):
    app = app_for(*(fixed.snapshot(step) for step in range(4)))
    assert snap_compare(app, terminal_size=SIZE, run_before=four_reads)


def test_an_80x24_terminal_shows_the_certificates_first(snap_compare):
    """At 80x24 the lock panel starts hidden (l shows it), so the rows fit."""
    app = app_for(*(fixed.snapshot(step) for step in range(4)))
    assert snap_compare(app, terminal_size=(80, 24), run_before=four_reads)


def test_a_160x45_terminal(snap_compare):
    app = app_for(*(fixed.snapshot(step) for step in range(4)))
    assert snap_compare(app, terminal_size=(160, 45), run_before=four_reads)


def test_detail_screen(snap_compare):
    app = app_for(fixed.snapshot())

    async def open_shop(pilot) -> None:
        await reads(pilot.app, 1)
        await pilot.press("down", "down", "down", "enter")  # new, vpn, mail, shop: least time left first
        await reads(pilot.app, 2)  # the read that brings its history

    assert snap_compare(app, terminal_size=SIZE, run_before=open_shop)


def test_cache_unreachable(snap_compare):
    down = fixed.snapshot(
        cache_error="cache memcache://127.0.0.1:11211: entries failed: [Errno 111] Connection refused",
        data_at=fixed.T - 120,
    )
    assert snap_compare(app_for(down), terminal_size=SIZE, run_before=lambda pilot: reads(pilot.app, 1))
