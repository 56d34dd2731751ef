"""rows.py and panels.py: Snapshot -> states, counts, rows, bars and panels, without an app."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rich.console import Console

from engine.refresh.worker_state import Heartbeat
from staplectl.dashboard import detail
from staplectl.dashboard.panels import (
    WaitHistory, actions_text, banner, counts_line, header, lock_panel, spark, worker_text,
)
from staplectl.dashboard.rows import (
    COLUMN_KEYS, DUE, EXPIRED, FAILING, GOOD, MISSING, NO_OCSP, REVOKED, STALE, STYLES, View, bar, build_rows,
    classify, counts, due_items, error_text, make_row, same_cell, short_name,
)  # fmt: skip
from staplectl.dashboard.snapshot import build_items
from tests.dashboard import fixed
from tests.dashboard.fixed import H, LEAVES, T


def by_name(snapshot):
    return {item.name.rsplit("/", 1)[-1].removesuffix(".pem"): item for item in snapshot.items}


def text_of(renderable, width=160) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.fixture
def snap():
    return fixed.snapshot()


def test_each_certificate_gets_its_state(snap):
    items = by_name(snap)
    states = {name: classify(item, snap).state for name, item in items.items() if name in fixed.CERTS}
    assert states == {
        "www": GOOD, "api": DUE, "shop": STALE, "mail": EXPIRED, "old": REVOKED, "new": MISSING, "vpn": MISSING,
    }  # fmt: skip
    unconfigured = [i for i in snap.items if not i.configured]
    assert len(unconfigured) == 1 and classify(unconfigured[0], snap).state == GOOD
    assert "unverified" in classify(unconfigured[0], snap).flags
    assert "try-later" in classify(items["vpn"], snap).flags


def test_states_follow_the_snapshot_clock_not_the_inspection(snap):
    # The collector reuses an Inspection made at an earlier read: an hour
    # later the same items must be judged an hour later.
    www = by_name(snap)["www"]
    assert classify(www, replace(snap, taken_at=T + 12 * H)).state == DUE
    assert classify(www, replace(snap, taken_at=T + 18 * H)).state == STALE
    assert classify(www, replace(snap, taken_at=T + 23 * H)).state == EXPIRED
    future = replace(snap, taken_at=T - 2 * H)  # thisUpdate an hour ahead: beyond the 5 min skew
    assert classify(www, future).state == MISSING and "not-yet-valid" in classify(www, future).flags


def test_counts(snap):
    c = counts(snap)
    assert c.states == {GOOD: 2, DUE: 1, STALE: 1, EXPIRED: 1, MISSING: 2, REVOKED: 1, NO_OCSP: 0}
    assert c[FAILING] == 4  # shop, mail, new, vpn: the worker's consecutive failures
    assert c.total == 8
    line = text_of(counts_line(c))
    assert "2 good" in line and "1 stale but valid" in line and "1 revoked/unknown" in line and "4 failing" in line


def test_a_certificate_without_ocsp_is_no_ocsp_not_missing(snap):
    lets = fixed.leaf_without_ocsp("lets", 20)
    must = fixed.leaf_without_ocsp("must", 21, must_staple=True)
    items = build_items(T, leaves=[*LEAVES.values(), lets, must], entries=fixed.entries(), states={})
    with_them = replace(snap, items=items)
    by_id = {item.cert_id: item for item in items}
    assert classify(by_id[lets.cert_id], with_them).state == NO_OCSP
    assert classify(by_id[must.cert_id], with_them).state == MISSING  # a must-staple one cannot do without
    c = counts(with_them)
    assert c[NO_OCSP] == 1 and "1 no OCSP" in text_of(counts_line(c))
    assert "no OCSP" not in text_of(counts_line(counts(snap)))  # no room taken when there are none


def test_default_sort_is_least_time_left_first(snap):
    rows = build_rows(snap)
    names = [r.item.name.rsplit("/", 1)[-1] for r in rows]
    # nothing to serve first (by name), then expired, then the least left
    assert names[:4] == ["new.pem", "vpn.pem", "mail.pem", "shop.pem"]
    lefts = [r.fresh.time_left for r in rows if r.fresh.time_left is not None]
    assert lefts == sorted(lefts)
    assert [r.item.name for r in build_rows(snap, View(reverse=True))][0].endswith(("www.pem", "old.pem"))


@pytest.mark.parametrize("column", COLUMN_KEYS)
def test_every_column_sorts_both_ways(snap, column):
    forward = [r.key for r in build_rows(snap, View(sort=column))]
    backward = [r.key for r in build_rows(snap, View(sort=column, reverse=True))]
    assert sorted(forward) == sorted(backward) and len(forward) == len(snap.items)


def test_sort_by_failures_and_status(snap):
    rows = build_rows(snap, View(sort="failures"))
    assert rows[0].item.name.endswith("mail.pem")  # 9 failures
    rows = build_rows(snap, View(sort="status"))
    assert [r.fresh.state for r in rows][:3] == [MISSING, MISSING, EXPIRED]


def test_filter_by_state_and_text(snap):
    assert [r.fresh.state for r in build_rows(snap, View(state=EXPIRED))] == [EXPIRED]
    failing = {r.item.name.rsplit("/", 1)[-1] for r in build_rows(snap, View(state=FAILING))}
    assert failing == {"shop.pem", "mail.pem", "new.pem", "vpn.pem"}
    assert [r.item.name for r in build_rows(snap, View(text="SHOP"))] == ["/etc/ssl/sites/shop.pem"]
    # serial, last error and flags are searched too
    assert len(build_rows(snap, View(text="5eed0002"))) == 1
    assert {r.item.name for r in build_rows(snap, View(text="connection refused"))} == {"/etc/ssl/sites/mail.pem"}
    assert len(build_rows(snap, View(text="try-later"))) == 1
    assert build_rows(snap, View(text="shop", state=GOOD)) == []


@pytest.mark.parametrize("state", [GOOD, DUE, STALE, EXPIRED, MISSING, REVOKED])
def test_bar_colour_is_the_state_colour(state):
    text = bar(0.5, state, width=10)
    assert text.plain == "█████░░░░░"
    assert text.spans[0].style == STYLES[state]


def test_bar_widths():
    assert bar(None, MISSING).plain == "░" * 10
    assert bar(1.0, GOOD).plain == "█" * 10
    assert bar(0.01, STALE).plain == "█" + "░" * 9  # a sliver left is not nothing left
    assert bar(0.0, EXPIRED).plain == "░" * 10


def test_bar_in_the_row_follows_the_state(snap):
    rows = {r.item.name.rsplit("/", 1)[-1]: r for r in build_rows(snap)}
    for name, state in (("www.pem", GOOD), ("api.pem", DUE), ("shop.pem", STALE), ("old.pem", REVOKED)):
        left = rows[name].cells[5]
        assert left.spans[0].style == STYLES[state], name
    assert rows["shop.pem"].cells[5].plain.startswith("██░░░░░░░░ 4 h")  # 4 h of 24 left


def test_refreshing_rows_say_so(snap):
    shop = LEAVES["shop"].cert_id
    row = next(r for r in build_rows(snap, busy={shop}) if r.key == shop)
    assert row.cells[6].plain == "refreshing…"


def test_a_next_refresh_after_expiry_is_called_out(snap):
    api = by_name(snap)["api"]  # 10 h left
    late = replace(api, state=replace(api.state, next_attempt=T + 11 * H))
    cell = make_row(late, snap).cells[6]
    assert cell.plain == "in 11 h (after expiry!)" and cell.spans[-1].style == "bold red"
    assert make_row(api, snap).cells[6].plain == "in 2 min"


def test_an_error_older_than_the_staple_is_dimmed(snap):
    shop = by_name(snap)["shop"]
    assert error_text(shop).style == "red"
    newer = replace(shop, state=replace(shop.state, last_attempt=T - 21 * H))
    assert error_text(newer).style == "dim"
    assert len(error_text(replace(shop, state=replace(shop.state, last_error="x" * 500))).plain) == 64


def test_a_cell_whose_colour_changed_is_redrawn(snap):
    shop = by_name(snap)["shop"]
    red, dim = error_text(shop), error_text(replace(shop, state=replace(shop.state, last_attempt=T - 21 * H)))
    assert red == dim  # rich's own equality ignores the style: the table must not rely on it
    assert not same_cell(red, dim) and same_cell(red, error_text(shop)) and same_cell("1", "1")


def test_refresh_all_due_takes_what_is_not_good(snap):
    names = {i.name.rsplit("/", 1)[-1] for i in due_items(snap)}
    # revoked is the truth, not a failure; the unconfigured entry cannot be refreshed
    assert names == {"api.pem", "shop.pem", "mail.pem", "new.pem", "vpn.pem"}


def test_items_join_configured_cached_and_worker_known():
    leaves = [LEAVES["www"], LEAVES["new"]]
    states = fixed.states()
    shop_id = LEAVES["shop"].cert_id
    items = build_items(T, leaves=leaves, entries=fixed.entries()[:1], states={shop_id: states[shop_id]})
    names = {i.name: i.configured for i in items}
    # www (configured, cached), new (configured, not cached), shop (the worker's only)
    assert names == {"/etc/ssl/sites/www.pem": True, "/etc/ssl/sites/new.pem": True, "/etc/ssl/sites/shop.pem": False}
    shop = next(i for i in items if i.name.endswith("shop.pem"))
    assert shop.inspection is None and shop.leaf is None


def test_header_names_cache_and_worker(snap):
    text = text_of(header(snap, counts(snap), paused=True))
    assert "memcache://127.0.0.1:11211" in text and "alive" in text and "PAUSED" in text
    dead = replace(snap, workers=(Heartbeat("web1:4242/1", 4242, T - 86400, T - 600, 7),))
    assert "NOT RUNNING (last beat 10 min ago from web1:4242)" in text_of(worker_text(dead))
    assert "none has run" in text_of(worker_text(replace(snap, workers=(), state_exists=False)))
    assert "off" in text_of(worker_text(replace(snap, workers=(), prefetch_expected=False)))
    assert "in this dashboard" in text_of(worker_text(replace(snap, in_process=True)))


def test_banner_only_when_the_cache_fails(snap):
    assert banner(snap) is None
    down = replace(snap, cache_error="cache memcache://127.0.0.1:1: get failed: refused", data_at=T - 120)
    text = banner(down).plain
    assert "CACHE UNREACHABLE" in text and "refused" in text and "2 min ago" in text
    assert "nothing read from it yet" in banner(replace(down, data_at=None)).plain


def test_lock_panel_highlights_contention_and_names_the_holder(snap):
    history = WaitHistory()
    for step in range(3):
        history.add(fixed.stripes(step))
    names = {i.cert_id: i.name for i in snap.items}
    text = text_of(lock_panel(snap, history, names))
    lines = text.splitlines()
    assert lines[1].split()[0] == "3"  # held now: first
    assert "/etc/ssl/sites/shop.pem (pid 4242)" in lines[1] and "6.00 s" in lines[1]
    assert "64 stripes, 3 used" in text and "1 held now" in text
    table = lock_panel(snap, history, names).renderables[0]
    percent = table.columns[2]._cells
    assert [c.style for c in percent] == ["bold red", "bold red", ""]  # 11.7 %, 12.5 %, 0 %
    crashed = replace(snap, stripes=tuple(replace(s, holders=tuple(replace(h, alive=False) for h in s.holders)) for s in snap.stripes))
    assert "CRASHED holder pid 4242" in text_of(lock_panel(crashed, history, names))


def test_lock_panel_without_figures(snap):
    assert "no stripe figures yet" in text_of(lock_panel(replace(snap, stripes=())))
    assert "unreadable: bad magic" in text_of(lock_panel(replace(snap, stripes_error="bad magic")))


def test_wait_history_keeps_differences_between_reads():
    history = WaitHistory(size=5)
    history.add(fixed.stripes(0))
    assert list(history.total) == []  # nothing to compare with yet
    history.add(fixed.stripes(1))
    history.add(fixed.stripes(2))
    assert list(history.total) == pytest.approx([0.5, 2.1])  # stripe 3: 0.4 s then 2 s; stripe 42: 0.1 s each
    assert list(history.by_stripe[3]) == pytest.approx([0.4, 2.0])
    assert 17 not in history.by_stripe  # never waited
    history.add(fixed.stripes(0))  # counters went back: a new stats file
    assert history.total[-1] == pytest.approx(9.5 + 0.2 + 0.002)


def test_short_names_keep_what_tells_them_apart():
    assert short_name("/etc/ssl/a.pem") == "/etc/ssl/a.pem"
    path = "/etc/letsencrypt/live/shop.example.com/fullchain.pem"
    assert short_name(path, 30).endswith("example.com/fullchain.pem") and len(short_name(path, 30)) == 30
    assert short_name("CN=a very long subject name, O=Example", 20) == "CN=a very long subj…"


def test_spark():
    assert spark([]) == ""
    assert spark([0, 0]) == "▁▁"
    assert spark([0, 1, 2, 4]) == "▁▃▅█"
    assert spark([0.0001, 10]) == "▂█"  # any wait at all shows above the bottom
    assert spark([0.001, 0.002]) == "▂▂"  # but milliseconds do not fill the block
    assert spark([0.001, 0.002], floor=0) == "▅█"
    assert len(spark(range(100), width=12)) == 12


def test_detail_sections(snap):
    items = by_name(snap)
    shop = items["shop"]
    summary = text_of(detail.summary(shop, snap))
    assert "ok: signature, responder and CertID check out" in summary and "STALE: renewal overdue" in summary
    worker = text_of(detail.worker(shop, fixed.HISTORY[shop.cert_id], snap))
    assert worker.index("(failure 3 in a row)") < worker.index("(failure 1 in a row)")  # newest first
    assert "CN=shop.example.test" in text_of(detail.certificate(shop))
    assert "OCSP Response Status: successful (0x0)" in detail.response(shop).plain
    assert "not usable: responseStatus is try_later" in text_of(detail.summary(items["vpn"], snap))
    assert "no entry in the cache" in text_of(detail.summary(items["new"], snap))
    assert "not usable: expired 6 h ago" in text_of(detail.summary(items["mail"], snap))
    assert "responder says REVOKED" in text_of(detail.summary(items["old"], snap))


def test_lock_panel_names_the_responders_down(snap):
    from engine.responders.health import ResponderState

    down = ResponderState("http://ocsp.ca-x.example:80", snap.taken_at - 125, "no complete answer within 10 s", 3,
                          snap.taken_at + 20)  # fmt: skip
    text = text_of(lock_panel(replace(snap, responders_down=(down,))))
    assert "responder http://ocsp.ca-x.example:80 down for 2 min, 3 failed probes: no complete answer" in text
    assert "down for" not in text_of(lock_panel(snap))


def test_the_renewal_actions_line(snap):
    from engine.refresh.actions import ActionState

    assert "actions:" not in text_of(header(snap, counts(snap)))  # none configured: no room taken
    with_actions = replace(snap, actions=(
        ActionState("nginx", runs=4, last_success=T - 12, next_run=None),
        ActionState("haproxy", runs=3, failures=3, last_error="socket /run/haproxy/admin.sock: \x1b[31mrefused", pending=2),
        ActionState("command"),
    ))  # fmt: skip
    line = text_of(actions_text(with_actions))
    assert "nginx ok 12 s ago" in line and "command not run yet" in line
    assert "haproxy FAILING (3x: socket /run/haproxy/admin.sock: \\x1b[31mrefused), 2 pending" in line
    assert "actions:" in text_of(header(with_actions, counts(with_actions)))
