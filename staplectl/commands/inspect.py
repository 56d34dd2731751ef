"""staplectl inspect: what is in the cache, entry by entry, and why it is (not) usable.

It reads and never writes: no fetch, no fetch lock taken, no state file created.
Entries written by httpd itself (no staplectl metadata) are shown too; a
certificate we know (configured, or named in the entry's metadata) is fully
re-validated, any other entry is only decoded and flagged ``unverified``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.text import Text

from engine.api import (
    DEFAULT_NAMESPACE, SYSTEM_CLOCK, Cache, CertState, Found, HistoryEntry, InputError, Inspection,
    IssuerNotFoundError, KnownCertificates, Leaf, MustStapleWithoutOCSPError, ResponderHealth, ResponderState,
    StapleError, StateStore, cert_sha1, describe, inspect_entry, iso, load_all, load_leaf, must_staple_without_ocsp,
    open_provider, read_certificates, redact, render, responder_key, staple_key,
)
from staplectl import fmt
from staplectl.config import Config
from staplectl.options import JsonOpt, command
from staplectl.printable import printable, printable_lines
from staplectl.from_config import fetch_options
from staplectl.table import print_table
from staplectl.terminal import Terminal

_KEY = re.compile(r"^(?:(?P<namespace>[^\s:]+):)?(?P<cert_id>[0-9a-fA-F]{40})$")


class NotInCacheError(StapleError):
    """The certificate asked about has no entry in the cache (exit 3)."""

    reason = "not_found"


@dataclass
class Target:
    cert_id: str
    label: str
    namespace: str | None = None
    found: Found = Found()


def inspect(
    ctx: typer.Context,
    target: Annotated[
        Optional[str],
        typer.Argument(
            metavar="[CERT|KEY]",
            help="A certificate file, a cache key (mod_ssl-staple:<sha1>) or a bare 40-hex certificate id. "
            "Without it: a table of every entry in the cache.",
            show_default=False,
        ),
    ] = None,
    issuer: Annotated[
        Optional[Path], typer.Option("--issuer", metavar="FILE", help="Issuer of CERT, when its file holds no chain.")
    ] = None,
    text: Annotated[
        bool, typer.Option("--text", help="Print only the decoded response, laid out like openssl ocsp -resp_text.")
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Show the cache's entries: status, times, time left, and what is wrong with them.

    Without an argument: one row per entry, including entries httpd wrote
    itself. Flags: error-entry (httpd's flag 0x00), try-later (a
    non-successful response cached as valid: httpd 2.4's fake tryLater),
    unverified (certificate unknown: signature and CertID not checked),
    invalid: REASON, expired, not-yet-valid, due (past its renewal point),
    metadata-only (fetches failed before any staple was stored).

    With CERT or KEY: that entry in full: the decoded response, the
    validation result (ok, or the check that failed) and the prefetch
    worker's state for it. Exit 0 when shown, 2 for a bad argument, 3 when
    the entry is not in the cache or the cache fails.
    """
    with command(ctx, json_errors=json_output) as (opts, term):
        if text and json_output:
            raise InputError("--text and --json: choose one")
        if text and target is None:
            raise InputError("--text prints one response: name a CERT or KEY")
        effective = opts.load_config()
        wanted = _target(target, issuer) if target is not None else None
        with Cache(open_provider(effective.cache_uri, read_only=True)) as store:
            configured = _configured(effective, term)
            check = _Checker(KnownCertificates(configured), effective, paths_from_cache=not store.shared)
            if wanted is None:
                without = [leaf.name for leaf in configured if not leaf.has_responder]
                _table(term, store, check, effective, json_output, without)
            else:
                _one(term, store, check, effective, wanted, json_output, text)


def _target(text: str, issuer: Path | None) -> Target:
    path = Path(text).expanduser()
    if path.exists():
        try:
            leaf = load_leaf(path, issuer_path=issuer)
            return Target(leaf.cert_id, str(path), found=Found(leaf=leaf, path=str(path)))
        except IssuerNotFoundError:
            if issuer is not None:
                raise
            # The cache id needs only the certificate; the issuer only verifying.
            cert = read_certificates(path)[0]
            note = f"{path}: no issuer in the file (give --issuer), so not verified"
            found = Found(cert=cert, path=str(path), note=note)
            return Target(cert_sha1(cert), str(path), found=found)
    match = _KEY.match(text)
    if match is None:
        raise InputError(
            f"{text}: no such certificate file, and not a cache key (mod_ssl-staple:<40 hex>) "
            "or certificate id (40 hex digits) either"
        )
    return Target(match["cert_id"].lower(), text, namespace=match["namespace"])


def _configured(config: Config, term: Terminal) -> list[Any]:
    if not config.certificates:
        return []
    result = load_all(config.certificates)
    for where, error in result.problems:
        term.debug(f"configured certificate {where}: {error}")
    return result.leaves


def _state_store(config: Config, term: Terminal) -> StateStore | None:
    """The worker's state, if it has ever run: never created by inspect."""
    path = config.state_path()
    if not path.exists():
        return None
    try:
        return StateStore(path, read_only=True)
    except StapleError as error:
        term.warn(f"prefetch worker state not shown: {error}")
        return None


class _Checker:
    """inspect_entry with what every row shares: known certificates, policy, options."""

    def __init__(self, known: KnownCertificates, config: Config, *, paths_from_cache: bool) -> None:
        self.known = known
        self.policy = config.policy()
        self.options = fetch_options(config).validation
        #: see build_items in staplectl.dashboard.snapshot: a shared cache never names a file to open
        self.paths_from_cache = paths_from_cache

    def __call__(self, entry: Any, state: CertState | None, given: Found | None, now: float) -> Inspection:
        """The entry inspected at ``now``: one reading of the clock for a whole table (see _table)."""
        found = given
        if found is None or found.leaf is None:
            # a CERT given without its issuer may still be configured with one
            named = (entry.meta or {}).get("cert_path")
            from_cache, unopened = (named, None) if self.paths_from_cache else (None, named)
            looked = self.known.find(entry.cert_id, [from_cache, state.path if state else None], unopened=unopened)
            if looked.leaf is not None or found is None:
                found = looked
            elif looked.note and not found.note:
                found = replace(found, note=looked.note)
        return inspect_entry(entry, now, found=found, state=state, policy=self.policy, options=self.options)


def _table(
    term: Terminal, store: Cache, check: _Checker, config: Config, json_output: bool, without_ocsp: list[str]
) -> None:
    """Every entry of the cache; ``without_ocsp``: the configured certificates that
    name no OCSP responder, which have no entry by design (listed apart)."""
    states: dict[str, CertState] = {}
    state_store = _state_store(config, term)
    if state_store is not None:
        with state_store:
            try:
                states = {s.cert_id: s for s in state_store.all()}
            except StapleError as error:
                term.warn(f"prefetch worker state not shown: {error}")
    # One "now" for every row and for checked_at: a row judged valid is
    # valid at the time the output says it was checked (judged each at its
    # own moment, a staple that lapsed while the rows were read was called
    # valid at a checked_at after its nextUpdate; the soak caught it).
    now = SYSTEM_CLOCK.now()
    rows = [check(e, states.get(e.cert_id), None, now) for e in store.entries()]
    down = _responders_down(config)
    if json_output:
        entries = [{**r.to_dict(), "responder_down": _down_of(r, down)} for r in rows]
        term.json({"cache": redact(store.uri), "checked_at": iso(now), "entries": entries,
                   "without_ocsp": without_ocsp})  # fmt: skip
        return
    apart = f"; {len(without_ocsp)} configured certificates name no OCSP responder" if without_ocsp else ""
    for name in without_ocsp:
        term.debug(f"{name}: names no OCSP responder: no staple is fetched for it")
    if not rows:
        term.info(f"no entries in cache {redact(store.uri)}{apart}")
        return
    # one line per entry, never cut to the terminal's width: an operator
    # greps this, and a piped table must not lose its columns; in a narrow
    # terminal, the columns that say how each certificate stands
    headers = ("key", "certificate", "status", "this update", "next update", "time left", "age", "flags")
    rows = sorted(rows, key=lambda row: (row.cert is None, row.cert or row.key))  # by name, unknown ones last
    print_table(
        term.out,
        headers,
        [
            (
                row.key,
                row.cert or "-",
                (row.status or "-", _colour(row)),
                iso(row.this_update) or "-",
                iso(row.next_update) or "-",
                _left(row.time_left),
                "-" if row.age is None else fmt.duration(row.age),
                ", ".join([*row.flags, *(["responder-down"] if _down_of(row, down) else [])]) or "-",
            )
            for row in rows
        ],
        fit=("certificate", "status", "next update", "time left", "flags"),
        shorten="certificate",
    )
    valid = sum(r.valid for r in rows)
    term.info(f"{len(rows)} entries in {redact(store.uri)}: {valid} valid, {len(rows) - valid} not{apart}")


def _colour(row: Inspection) -> str:
    return "green" if row.valid else ("yellow" if row.status in ("good", None) else "red")


def _left(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return fmt.duration(seconds) if seconds >= 0 else f"-{fmt.duration(seconds)}"


def _one(
    term: Terminal, store: Cache, check: _Checker, config: Config, wanted: Target, json_output: bool, text: bool
) -> None:
    namespace = getattr(store.provider, "namespace", DEFAULT_NAMESPACE)
    if wanted.namespace and wanted.namespace != namespace:
        raise InputError(
            f"{wanted.label}: namespace {wanted.namespace!r} is not the cache's ({namespace!r}); "
            f"add ?namespace={wanted.namespace} to the cache URI"
        )
    key = staple_key(namespace, wanted.cert_id)
    entry = store.get(wanted.cert_id)
    state_store = _state_store(config, term)
    state, history = _worker(state_store, wanted.cert_id, term)
    leaf = wanted.found.leaf if wanted.found else None
    if not entry and leaf is not None and not leaf.has_responder:
        _no_ocsp(term, store, leaf, json_output)
        return
    if not entry:
        last = f"; the prefetch worker's last error: {state.last_error}" if state and state.last_error else ""
        raise NotInCacheError(f"{wanted.label}: no entry in cache {redact(store.uri)} (key {key}){last}")
    now = SYSTEM_CLOCK.now()  # the row's and checked_at's (see _table)
    row = check(entry, state, wanted.found, now)
    if text:
        if not entry.der:
            raise NotInCacheError(f"{wanted.label}: the entry holds metadata only, no response (key {key})")
        _plain(term, render(entry.der, "cached staple"))
        return
    response = _describe(entry.der)
    responder_down = _down_of(row, _responders_down(config))
    if json_output:
        data = row.to_dict()
        data["responder_down"] = responder_down
        data["validation"] = {"ok": row.valid, "problem": row.problem}
        data.update(response=response, meta=entry.meta, state=state.to_dict() if state else None)
        data["history"] = [h.to_dict() for h in history]
        term.json({"cache": redact(store.uri), "checked_at": iso(now), "entries": [data], "without_ocsp": []})
        return
    _show(term, row, entry.der, state, history)
    if responder_down:
        term.out.print(f"\n[bold red]responder down[/] since {responder_down['down_since']}, "
                       f"{responder_down['failures']} failed probes: {safe(responder_down['last_error'])}")


def _no_ocsp(term: Terminal, store: Cache, leaf: Leaf, json_output: bool) -> None:
    """A certificate that names no OCSP responder has no entry by design; only a
    must-staple one is a problem (exit 3)."""
    message = f"{leaf.name}: names no OCSP responder: no staple is fetched for it"
    if leaf.must_staple:
        raise MustStapleWithoutOCSPError(must_staple_without_ocsp(leaf))
    if json_output:
        term.json({"cache": redact(store.uri), "entries": [], "without_ocsp": [leaf.name], "message": message})
    else:
        term.out.print(safe(message))


def _responders_down(config: Config) -> dict[str, ResponderState]:
    """The responders marked down (engine.responders.health), as every process on the host sees them."""
    return ResponderHealth(config.locks.path()).down()


def _down_of(row: Inspection, down: dict[str, ResponderState]) -> dict[str, Any] | None:
    """The entry's responder's down state, if it is down."""
    responder = row.to_dict()["responder"]
    state = down.get(responder_key(responder)) if responder else None
    return state.to_dict() if state else None


def _worker(store: StateStore | None, cert_id: str, term: Terminal) -> tuple[CertState | None, list[HistoryEntry]]:
    if store is None:
        return None, []
    with store:
        try:
            return store.get(cert_id), store.history(cert_id)
        except StapleError as error:
            term.warn(f"prefetch worker state not shown: {error}")
            return None, []


def _describe(der: bytes) -> dict[str, Any] | None:
    if not der:
        return None
    try:
        return describe(der, "cached staple")
    except StapleError:
        return None


def safe(text: str) -> str:
    """Text from outside, for a line with markup: escaped for the terminal and for rich."""
    return escape(printable(text))


def _plain(term: Terminal, text: str) -> None:
    # neither markup nor emoji codes: ":ab:" in a hex dump is not an emoji
    term.out.print(printable_lines(text), end="", markup=False, emoji=False, highlight=False, soft_wrap=True)


def _show(term: Terminal, row: Inspection, der: bytes, state: CertState | None, history: list[HistoryEntry]) -> None:
    now = SYSTEM_CLOCK.now()
    term.out.print(Text(row.status or "-", style=_colour(row)) + Text(f"  {printable(row.subject or row.key)}"))
    verdict = "[green]ok[/]" if row.valid else f"[red]not usable[/]: {safe(row.problem or ', '.join(row.flags))}"
    lines = [
        ("key", safe(row.key)),
        ("certificate", safe(row.cert or "unknown: signature and CertID not checked")),
        ("serial", safe(row.serial or "-")),
        ("this update", fmt.timestamp(row.this_update, now)),
        ("next update", fmt.timestamp(row.next_update, now)),
        ("produced at", iso(row.produced_at) or "-"),
        ("time left", _left(row.time_left)),
        ("flags", safe(", ".join(row.flags)) or "-"),
        ("validation", verdict),
        ("stored until", fmt.timestamp(row.expires_at, now)),
    ]
    if row.cert_note:
        lines.insert(2, ("note", safe(row.cert_note)))
    if row.weak:
        lines.append(("weak", f"[yellow]{safe('; '.join(row.weak))}[/] (accepted; responder.refuse_weak refuses)"))
    for label, value in lines:
        term.out.print(f"  [dim]{label:<12}[/] {value}", emoji=False)
    if der:
        term.out.print("\n[bold]Response[/] (as openssl ocsp -resp_text shows it)")
        try:
            _plain(term, render(der, "cached staple"))
        except StapleError as error:
            term.out.print(f"  [red]{safe(str(error))}[/]")
    if state is not None:
        term.out.print("\n[bold]Prefetch worker[/]")
        for label, value in state.to_dict().items():
            if label not in ("cert_sha1", "name") and value not in (None, ""):
                term.out.print(f"  [dim]{label:<12}[/] {safe(str(value))}", emoji=False)
        for event in history:
            _plain(term, f"  {iso(event.when)}  {event.action}  {printable(event.detail)}\n")
