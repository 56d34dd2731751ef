"""The dashboard driven with the Pilot, over real staples.

Staples are fetched from the scripted responder through the engine into a
real store first (the local store, or a real memcached), so the table, the
panels and the detail screen show what a real run shows; refresh-now is
checked at the responder (one more request) and in the stripe figures (one
more acquisition).
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from rich.console import Console

from engine.clock import FrozenClock
from engine.errors import CacheURIError, InputError
from engine.ocsp.certs import cert_sha1
from engine.ocsp.certfiles import CertSpec, load_all
from engine.refresh.worker_state import StateStore
from engine.locks.stats import read_stats
from engine.locks.fetchlocks import stripe_of
from staplectl.config import Config
from staplectl.dashboard.app import DashboardApp, RefreshDone
from staplectl.dashboard.factory import make_app
from staplectl.dashboard.screens import DetailScreen
from staplectl.dashboard.snapshot import StaticCollector
from staplectl.from_config import open_stapler
from tests.dashboard import fixed
from tests.responder import Behaviour
from tests.servers import _served_by, find_binary, free_port

SIZE = (160, 40)
PATIENCE = 20.0


def aio(test):
    """Run an async test in its own event loop: no asyncio plugin needed."""

    @functools.wraps(test)  # pytest reads the fixtures from the wrapped signature
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


@pytest.fixture
def config(home, pki) -> Config:
    specs = [CertSpec(str(pki.good.chain_path)), CertSpec(str(pki.other.chain_path)), CertSpec(str(pki.rsa.chain_path))]
    config = Config(certificates=specs)
    config.responder.timeout = 1.5
    config.responder.allow = ["loopback"]  # the tests' responders
    return config


def warm(config: Config) -> None:
    """Fill the cache the way `staplectl warm` does: Stapler.refresh per certificate."""
    stapler = open_stapler(config)
    try:
        for leaf in load_all(config.certificates).leaves:
            stapler.refresh(leaf)
    finally:
        stapler.close()


async def until(pilot, condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await pilot.pause(0.02)


async def read(pilot) -> None:
    """One more read, shown."""
    app: DashboardApp = pilot.app
    before = app.reads
    app.request_read()
    await until(pilot, lambda: app.reads > before, "a read")


def cell(app: DashboardApp, cert_id: str, column: str) -> str:
    return app.query_one("#certs").get_cell(cert_id, column).plain


def text(app, selector: str) -> str:
    """A Static's content as plain text, the way a terminal of SIZE shows it."""
    content = app.screen.query_one(selector).content
    if isinstance(content, str):
        return content
    console = Console(width=SIZE[0], record=True, color_system=None, file=io.StringIO())
    console.print(content)
    return console.export_text()


def _id(issued) -> str:
    """The certificate's cache id (the row keys)."""
    return cert_sha1(issued.cert)


def select(app: DashboardApp, cert_id: str) -> None:
    table = app.query_one("#certs")
    table.move_cursor(row=table.get_row_index(cert_id))


@aio
async def test_table_panels_keys_and_details(config, pki):
    warm(config)
    app = make_app(config, interval=60)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.reads >= 1, "the first read")
        table = app.query_one("#certs")
        assert table.row_count == 3
        assert {cell(app, leaf.cert_id, "status") for leaf in load_all(config.certificates).leaves} == {"good"}
        assert not app.query_one("#banner").has_class("shown")
        assert "3 good" in text(app, "#summary") and "0 failing" in text(app, "#summary")
        assert "prefetch worker: none has run" in text(app, "#summary")
        # warm took each certificate's stripe once: the lock panel shows them
        assert "3 acquisitions, 0 contended" in text(app, "#locks")

        await pilot.press("f")  # state: good
        assert app.view.state == "good" and table.row_count == 3
        await pilot.press("f")  # state: due
        assert table.row_count == 0
        await pilot.press("escape")
        assert app.view.state is None and table.row_count == 3

        await pilot.press("slash", *"other")
        assert app.view.text == "other" and table.row_count == 1
        await pilot.press("enter")  # back to the table, filter kept
        assert app.focused is table and table.row_count == 1
        await pilot.press("escape")
        assert table.row_count == 3

        await pilot.press("s")
        assert app.view.sort == "next_refresh" and "▲" in str(table.columns[table.ordered_columns[6].key].label)
        await pilot.press("S")
        assert app.view.reverse
        await pilot.click("#certs", offset=(2, 0))  # the "Certificate" header
        assert app.view.sort == "name" and not app.view.reverse
        names = [app.snapshot.item(row.key.value).name for row in table.ordered_rows]
        assert names == sorted(str(p) for p in (pki.good.chain_path, pki.other.chain_path, pki.rsa.chain_path))

        select(app, _id(pki.good))
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        await until(pilot, lambda: app.snapshot.history_for == _id(pki.good), "the detail read")
        response = text(app, "#detail-response")
        assert "OCSP Response Data" in response and "Cert Status: good" in response
        assert "ok: signature, responder and CertID check out" in text(app, "#detail-summary")
        assert "CN=good" in text(app, "#detail-cert")
        assert "no record of this certificate" in text(app, "#detail-worker")  # no worker ran
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen) and app.detail_id is None




@aio
async def test_refresh_now_goes_through_the_engine_and_never_blocks(config, pki, responder):
    warm(config)
    good = _id(pki.good)
    stripe = stripe_of(good, config.locks.stripes)
    responder.script(pki.good, Behaviour(this_update_offset=-30, delay=0.8))  # newer than warm's (-60)
    before_requests = responder.requests_for(pki.good)
    before_acquired = read_stats(config.locks.path())[stripe].acquisitions
    messages: list = []
    app = make_app(config, interval=60)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await until(pilot, lambda: app.reads >= 1, "the first read")
        this_update = cell(app, good, "this_update")
        select(app, good)
        await pilot.press("r")
        # in flight (the responder takes 0.8 s): shown, and the screen answers keys
        assert cell(app, good, "next_refresh") == "refreshing…"
        await pilot.press("p")
        assert app.paused
        await until(pilot, lambda: any(isinstance(m, RefreshDone) for m in messages), "the refresh")
        await read(pilot)
        done = next(m for m in messages if isinstance(m, RefreshDone))
        assert [(o.leaf.cert_id, o.result) for o in done.outcomes] == [(good, "updated")]
        assert responder.requests_for(pki.good) == before_requests + 1
        assert read_stats(config.locks.path())[stripe].acquisitions == before_acquired + 1
        assert cell(app, good, "this_update") != this_update
        assert cell(app, good, "next_refresh") != "refreshing…"


@aio
async def test_a_failed_refresh_keeps_the_staple_and_says_why(config, pki, responder):
    warm(config)
    other = _id(pki.other)
    responder.script(pki.other, Behaviour(hang=True))
    messages: list = []
    app = make_app(config, interval=60)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await until(pilot, lambda: app.reads >= 1, "the first read")
        select(app, other)
        await pilot.press("r")
        await pilot.press("f")  # the UI answers while the responder hangs
        assert app.view.state == "good"
        await until(pilot, lambda: any(isinstance(m, RefreshDone) for m in messages), "the timeout")
        outcome = next(m for m in messages if isinstance(m, RefreshDone)).outcomes[0]
        assert (outcome.result, outcome.reason) == ("failed", "timeout")
        await read(pilot)
        assert cell(app, other, "status") == "good"  # a failure never replaces a valid staple


@aio
async def test_refresh_all_due(config, pki, responder):
    responder.default = Behaviour(this_update_offset=-2000, next_update_offset=1600)  # just past half its life: due
    warm(config)
    responder.default = Behaviour()
    before = responder.request_count
    app = make_app(config, interval=60)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.reads >= 1, "the first read")
        assert {cell(app, _id(i), "status") for i in (pki.good, pki.other, pki.rsa)} == {"due"}
        await pilot.press("a")
        await until(pilot, lambda: not app.busy and app.reads >= 2, "the refreshes")
        await read(pilot)
        assert responder.request_count == before + 3
        assert {cell(app, _id(i), "status") for i in (pki.good, pki.other, pki.rsa)} == {"good"}


# -- an unreachable cache, and its return -------------------------------------------


def memcached_on(port: int) -> subprocess.Popen:
    args = [find_binary("memcached", "memcached"), "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16", "-t", "1"]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while _served_by("127.0.0.1", port, b"stats\r\n", b"STAT pid ") != proc.pid:
        assert proc.poll() is None and time.monotonic() < deadline, f"memcached did not start on port {port}"
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


@aio
async def test_unreachable_cache_is_shown_and_recovers(config, pki):
    port = free_port()
    config.cache = f"memcache://127.0.0.1:{port}?timeout=0.5"
    good = _id(pki.good)
    app = make_app(config, interval=60)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.reads >= 1, "the first read")
        banner = app.query_one("#banner")
        assert banner.has_class("shown") and "CACHE UNREACHABLE" in text(app, "#banner")
        assert "nothing read from it yet" in text(app, "#banner")
        assert cell(app, good, "status") == "missing: not in cache"

        server = memcached_on(port)
        try:
            warm(config)
            await read(pilot)
            assert not banner.has_class("shown") and cell(app, good, "status") == "good"
        finally:
            stop(server)
        await read(pilot)
        assert banner.has_class("shown") and "rows below are from" in text(app, "#banner")
        assert cell(app, good, "status") == "good"  # the last rows read, kept and said to be old
        await pilot.press("f")  # still alive
        await pilot.press("escape")

        server = memcached_on(port)  # back, empty
        try:
            await read(pilot)
            assert not banner.has_class("shown") and cell(app, good, "status") == "missing: not in cache"
        finally:
            stop(server)


# -- --prefetch -----------------------------------------------------------------------


@aio
async def test_prefetch_runs_in_process_and_stops_on_quit(config, pki, responder):
    app = make_app(config, interval=0.3, prefetch=True)
    async with app.run_test(size=SIZE) as pilot:
        ids = [_id(i) for i in (pki.good, pki.other, pki.rsa)]
        def all_cached() -> bool:
            snapshot = app.snapshot
            return snapshot is not None and all(getattr(snapshot.item(i), "inspection", None) for i in ids)

        await until(pilot, all_cached, "the worker's fetches")
        await until(pilot, lambda: any(w.alive(app.snapshot.taken_at) for w in app.snapshot.workers), "a heartbeat")
        assert "alive (in this dashboard" in text(app, "#summary")
        assert {cell(app, i, "status") for i in ids} == {"good"}
        assert responder.request_count >= 3
        await pilot.press("q")
    assert app.prefetch is not None and app.prefetch.worker is not None
    with StateStore(config.state_path()) as state:
        assert state.workers() == []  # it stopped, and said so
        assert {s.cert_id for s in state.all()} == set(ids)


def test_bad_cache_uri_and_prefetch_without_certificates(home):
    with pytest.raises(CacheURIError):
        make_app(Config(cache="memcache://"))
    with pytest.raises(InputError, match="--prefetch"):
        make_app(Config(), prefetch=True)


@aio
async def test_a_cell_that_changes_only_colour_is_redrawn(home):
    # The worker failed again after a staple came in: the same words, now red.
    shop = fixed.LEAVES["shop"].cert_id
    before = fixed.snapshot()
    items = tuple(replace(i, state=replace(i.state, last_attempt=fixed.T - 21 * fixed.H)) if i.cert_id == shop else i
                  for i in before.items)  # fmt: skip
    app = make_app(Config(), interval=60, clock=FrozenClock(fixed.T),
                   collector=StaticCollector(replace(before, items=items), before))  # fmt: skip
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.reads >= 1, "the first read")
        assert app.query_one("#certs").get_cell(shop, "last_error").style == "dim"
        await read(pilot)
        assert app.query_one("#certs").get_cell(shop, "last_error").style == "red"


@aio
async def test_at_80_columns_the_table_fits_and_the_detail_says_everything(home):
    """A long path, a 36-digit serial and a failure of 180 characters: the
    table at 80x24 shows its narrow columns without scrolling sideways, each
    keeping the end that tells rows apart; the detail screen shows the whole
    error, wrapped."""
    shop = fixed.LEAVES["shop"].cert_id
    long_name = "/etc/letsencrypt/live/a-rather-long-site-name.example.org/fullchain.pem"
    serial = "04" + "A1B2C3D4E5F6" * 2 + "0123456789"  # 36 hex digits, as Let's Encrypt's
    error = "responder http://ocsp.example.test/: " + "no complete answer within 10 s; " * 5 + "the end"
    before = fixed.snapshot()
    items = tuple(
        replace(i, name=long_name, inspection=replace(i.inspection, serial=serial),
                state=replace(i.state, last_error=error)) if i.cert_id == shop else i
        for i in before.items
    )  # fmt: skip
    app = make_app(Config(), interval=3600, clock=FrozenClock(fixed.T),
                   collector=StaticCollector(replace(before, items=items)))  # fmt: skip
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.reads >= 1, "the first read")
        await pilot.pause()
        table = app.query_one("#certs")
        assert table.narrow and table.virtual_size.width <= 80, table.virtual_size
        assert [str(c.label).split(" ")[0] for c in table.columns.values()] == [
            "Certificate", "Serial", "Status", "Validity", "Fails"]
        assert table.get_cell(shop, "name").plain.endswith("/fullchain.pem")
        assert table.get_cell(shop, "serial").plain == "…" + serial[-8:]
        assert table.get_cell(shop, "left").plain == "4 h"  # the time, without the bar
        table.move_cursor(row=table.get_row_index(shop))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen), "the detail screen")
        seen = []
        for _ in range(4):  # a page at a time, as one reads it
            await pilot.pause()
            seen += ["".join(seg.text for seg in strip).strip() for strip in app.screen._compositor.render_strips()]
            await pilot.press("pagedown")
        shown = " ".join(" ".join(seen).split())
        assert long_name in shown and error in shown
