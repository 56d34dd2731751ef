"""From one Item to the detail screen's sections: Rich renderables, no app.

What ``staplectl inspect CERT`` prints, laid out for a screen: the verdict
first (can this staple be served, and if not why), then what the prefetch
worker knows and did, then the certificate, then the response itself as
``openssl ocsp -resp_text`` shows it (engine.ocsp.response_text).
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
from rich.table import Table
from rich.text import Text

from engine.api import (
    HistoryEntry, StapleError, cert_sha1, is_must_staple, iso, ocsp_urls, render, renewal_point, serial_text,
)
from staplectl import fmt
from staplectl.dashboard.rows import DUE, EXPIRED, MISSING, REVOKED, STALE, STYLES, classify, left_text, status_text
from staplectl.dashboard.snapshot import Item, Snapshot
from staplectl.printable import printable, printable_lines


def _pairs(rows: Iterable[tuple[str, str | Text]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    for label, value in rows:
        table.add_row(label, value if isinstance(value, Text) else Text(printable(value)))
    return table


def title(item: Item, snapshot: Snapshot) -> Text:
    return Text.assemble(status_text(item, classify(item, snapshot)), "  ", (item.name, "bold"))


def verdict(item: Item, snapshot: Snapshot) -> Text:
    """Can it be served now, and if not, why: the first thing asked at 3 a.m."""
    ins = item.inspection
    if ins is None:
        return Text("no entry in the cache: nothing to staple", style=STYLES[MISSING])
    fresh = classify(item, snapshot)
    if fresh.state == MISSING:
        why = ins.problem or ", ".join(fresh.flags) or "no usable response"
        return Text(f"not usable: {why}", style=STYLES[MISSING])
    if fresh.state == EXPIRED:
        return Text(f"not usable: expired {fmt.relative(ins.next_update, snapshot.taken_at)}", style=STYLES[EXPIRED])
    text = Text("ok", style="bold green")
    if "unverified" in fresh.flags:
        text = Text("decoded only", style="yellow").append(
            ": the certificate is unknown, so the signature and CertID were not checked", style=""
        )
    else:
        text.append(": signature, responder and CertID check out; current", style="")
    if fresh.state in (DUE, STALE) and ins.this_update is not None:
        since = fmt.relative(renewal_point(ins.this_update, ins.next_update, snapshot.policy), snapshot.taken_at)
        overdue = f"; due for renewal since {since}" if fresh.state == DUE else f"; STALE: renewal overdue since {since}"
        text.append(overdue, style=STYLES[fresh.state])
    if fresh.state == REVOKED:
        text.append(f"; but the responder says {ins.status.upper() if ins.status else '?'}", style=STYLES[REVOKED])
    return text


def summary(item: Item, snapshot: Snapshot) -> Table:
    ins, now = item.inspection, snapshot.taken_at
    fresh = classify(item, snapshot)
    rows: list[tuple[str, str | Text]] = [
        ("verdict", verdict(item, snapshot)),
        ("certificate id", item.cert_id),
        ("configured", "yes" if item.configured else "no: found in the cache (written by another program or host)"),
    ]
    if item.note:
        rows.append(("note", Text(printable(item.note), style="yellow")))
    if ins is not None:
        meta = ins.meta or {}
        rows += [
            ("cache key", ins.key),
            ("status", f"{ins.status or '-'} (responseStatus {ins.response_status or '-'})"),
            ("thisUpdate", fmt.timestamp(ins.this_update, now)),
            ("nextUpdate", fmt.timestamp(ins.next_update, now)),
            ("producedAt", iso(ins.produced_at) or "-"),
            ("validity left", left_text(fresh.time_left)),
            ("flags", ", ".join(fresh.flags) or "-"),
            ("next refresh", fmt.timestamp(fresh.next_refresh, now)),
            ("stored until", fmt.timestamp(ins.expires_at, now)),
            ("fetched", f"{meta.get('fetched_at') or '-'} from {meta.get('responder') or '-'}"),
        ]
    return _pairs(rows)


def worker(item: Item, history: Iterable[HistoryEntry], snapshot: Snapshot) -> Table | Text:
    state, now = item.state, snapshot.taken_at
    if state is None:
        return Text("the prefetch worker has no record of this certificate", style="dim")
    rows: list[tuple[str, str | Text]] = [
        ("responder", state.responder or "-"),
        ("last attempt", fmt.timestamp(state.last_attempt, now)),
        ("last success", fmt.timestamp(state.last_success, now)),
        ("failures", Text(str(state.failures), style="bold red" if state.failures else "")),
        ("last error", Text(printable(f"[{state.last_reason}] {state.last_error}") if state.last_error else "-",
                            style="red" if state.failures else "")),
        ("next attempt", fmt.timestamp(state.next_attempt, now)),
    ]  # fmt: skip
    table = _pairs(rows)
    events = list(history)
    if not events:
        table.add_row("history", Text("(none recorded)", style="dim"))
    for n, event in enumerate(reversed(events)):  # newest first
        style = "red" if event.action in ("failed", "busy") else ""
        table.add_row(
            "history" if n == 0 else "",
            Text.assemble((iso(event.when) or "", "dim"), "  ", (f"{event.action:<8}", style), "  ", event.detail),
        )
    return table


def certificate(item: Item) -> Table | Text:
    cert = item.cert
    if cert is None:
        return Text("unknown: not configured, and no certificate file was named for it", style="dim")
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = ", ".join(str(n.value) for n in names)
    except x509.ExtensionNotFound:
        sans = "-"
    rows: list[tuple[str, str | Text]] = [
        ("subject", cert.subject.rfc4514_string()),
        ("issuer", cert.issuer.rfc4514_string()),
        ("serial", serial_text(cert.serial_number)),
        ("not before", iso(cert.not_valid_before_utc.timestamp()) or "-"),
        ("not after", iso(cert.not_valid_after_utc.timestamp()) or "-"),
        ("names", sans),
        ("OCSP responder", ", ".join(ocsp_urls(cert)) or "- (none in AIA)"),
        ("must-staple", "yes" if is_must_staple(cert) else "no"),
        ("SHA-1", cert_sha1(cert)),
        ("file", str(item.leaf.path) if item.leaf and item.leaf.path else "-"),
    ]
    return _pairs(rows)


def response(item: Item) -> Text:
    if not item.der:
        return Text("no response cached", style="dim")
    try:
        return Text(printable_lines(render(item.der, "cached staple")))
    except StapleError as error:
        return Text(printable(str(error)), style="red")
