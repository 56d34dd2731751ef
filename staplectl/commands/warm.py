"""staplectl warm: make sure every certificate has a fresh staple in the cache.

What an operator runs before starting httpd, nginx or HAProxy (systemd
``ExecStartPre=``), so that the first handshakes after a restart are
stapled without waiting on a responder. Each certificate goes through
engine.refresh.fanout, the steps of ``Stapler.refresh`` with many in flight on one
thread: its fetch lock, a second look in the cache, a fetch only when
the staple is missing or due. What is fresh is left alone.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer

from engine.api import (
    GOOD, NO_OCSP, SYSTEM_CLOCK, ActionEvent, ActionRunner, Fanout, FreshnessPolicy, Leaf, Outcome, Refresh, Staple,
    StapleError, Team, check_bound, iso, no_responder, outcome_of, redact,
)
from staplectl import fmt
from staplectl.exitcodes import Exit
from staplectl.config import check_hash
from staplectl.json_output import staple_fields, time_left
from staplectl.options import HashOpt, IssuerOpt, JsonOpt, command
from staplectl.renewal_actions import build_actions
from staplectl.from_config import engine_settings, open_stapler, refresh_lock_timeout
from staplectl.table import print_table
from staplectl.targets import Problem, error_dict, start_loading, targets_of
from staplectl.terminal import Terminal

#: refreshes in flight. One process keeps them all on one thread
#: (engine.refresh.fanout), so more in flight costs little CPU; against a
#: distant responder, far fewer could not reach warm's target of 30x a
#: sequential fetcher (docs/benchmarks.md)
DEFAULT_CONCURRENCY = 64


@dataclass(frozen=True)
class Row:
    """One line of warm's table: a certificate's Outcome, or a file that did not load."""

    name: str
    outcome: Outcome | None = None
    #: why the file did not load (no outcome then)
    problem: StapleError | None = None

    @property
    def leaf(self) -> Leaf | None:
        return self.outcome.leaf if self.outcome else None

    @property
    def staple(self) -> Staple | None:
        return self.outcome.staple if self.outcome else None

    @property
    def result(self) -> str:
        return self.outcome.result if self.outcome else "failed"

    @property
    def error(self) -> StapleError | None:
        return self.outcome.error if self.outcome else self.problem

    def to_dict(self, now: float, policy: FreshnessPolicy) -> dict[str, Any]:
        return {
            "cert": self.name,
            "cert_sha1": self.leaf.cert_id if self.leaf else None,
            "serial": self.leaf.serial_hex if self.leaf else None,
            **staple_fields(self.staple, time_left(self.staple, now, policy)),
            "result": self.result,
            "error": error_dict(self.error) if self.error else None,
        }


def warm(
    ctx: typer.Context,
    paths: Annotated[
        Optional[list[str]],
        typer.Argument(
            metavar="PATH",
            help="Certificate files, directories (their *.pem, *.crt, *.cer, *.der) or globs. "
            "Default: the configuration's certificates.",
            show_default=False,
        ),
    ] = None,
    issuer: IssuerOpt = None,
    url: Annotated[
        Optional[str], typer.Option("--url", metavar="URL", help="Responder URL to use instead of each certificate's AIA one.")
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-j", metavar="N", min=1, max=1024, help="Refreshes in flight at once.")
    ] = DEFAULT_CONCURRENCY,
    processes: Annotated[
        Optional[int],
        typer.Option("--processes", metavar="N", min=1, max=256, show_default=False,
                     help="Worker processes, each with its share of --concurrency and of the certificates. "
                     "One is enough unless warm's own CPU is what limits it (a responder on "
                     "the same host, thousands of certificates). [default: 1]"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch every staple, even those still fresh.")] = False,
    timeout: Annotated[
        Optional[float],
        typer.Option("--timeout", metavar="SECONDS", min=0.1, show_default=False,
                     help="Total deadline per responder request. [default: responder.timeout, 10 s]"),
    ] = None,
    hash_name: HashOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Fetch a fresh staple into the cache for every certificate that needs one.

    Staples still fresh (before their renewal point, half their validity)
    are left alone; missing or due ones are fetched, validated and stored,
    several at once. Prints one row per certificate: status, next update,
    and the result (updated, fresh, or failed with the reason).

    Exit 0 when every certificate has a good staple, 1 when a responder said
    revoked or unknown, 2 when no certificate could be found or loaded (or
    an option is wrong), 3 when any certificate failed (including a file
    among many that could not be loaded).
    """
    with fewer_collections(), command(ctx, json_errors=json_output) as (opts, term):
        effective = opts.load_config()
        if timeout is not None:
            effective.responder.timeout = check_bound("responder.timeout", timeout, option="--timeout")
        if hash_name is not None:
            effective.responder.hash = check_hash(hash_name, f"--hash {hash_name}")
        team = Team(processes, concurrency)
        try:
            loading = start_loading(paths, issuer, url, effective)
            team.start_for(loading.files)
            # Read as the refreshes go (engine.refresh.fanout), so that the first
            # exchanges are out while the rest load.
            stream = iter(loading)
            first = next(stream, None)
            if first is None:
                targets_of([], loading)  # raises: nothing could be loaded
            stapler = open_stapler(effective)
            try:
                # One read first: an unreachable cache is one error, not one
                # per certificate after as many cache timeouts.
                stapler.cache.get(first.cert_id)
                rows = _run(term, stapler, effective, itertools.chain([first], stream), loading.files,
                            concurrency, team, force, json_output)  # fmt: skip
                actions_failed = run_actions(term, effective, stapler, [row.leaf for row in rows if row.leaf])
            finally:
                stapler.close()
        finally:
            team.stop()
        targets = targets_of([row.leaf for row in rows if row.leaf], loading)
        rows += [Row(p.name, problem=p.error) for p in targets.problems]
        rows.sort(key=lambda row: row.name)
        if json_output:
            now, policy = SYSTEM_CLOCK.now(), effective.policy()
            term.json({"cache": redact(effective.cache_uri), "certificates": [row.to_dict(now, policy) for row in rows],
                       "counts": _counts(rows)})  # fmt: skip
        else:
            _show(term, rows, targets.problems)
    raise typer.Exit(int(Exit.FAILED if actions_failed else exit_code(rows)))


def run_actions(term: Terminal, config: Any, stapler: Any, leaves: list[Leaf]) -> bool:
    """The configuration's renewal actions, once, for every warmed certificate (the
    served files brought in line with the cache); True when one failed."""
    if not config.actions:
        return False
    actions = build_actions(config.actions, lambda: stapler)
    for action in actions:
        action.load(leaves)

    def say(event: ActionEvent) -> None:
        if event.outcome == "failed":
            term.error(f"action {event.action} failed: {event.detail}")
        else:
            term.info(f"action {event.action}: {event.detail}")

    return bool(ActionRunner(actions, on_event=say).run_now(leaves))


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while warming.

    What a warm allocates lives until its table is printed (certificates,
    staples, rows) and is freed by reference counting, yet every full
    collection walked all of it, and the imports' objects too: a noticeable
    share of a large warm (docs/benchmarks.md). Collections of young objects
    still run, every 50,000 allocations instead of 700, so memory does not
    grow. Restored on the way out: tests run many commands in one process.
    """
    thresholds = gc.get_threshold()
    gc.freeze()  # the imports' objects: never garbage, never walked again
    gc.set_threshold(50_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def exit_code(rows: list[Row]) -> Exit:
    if any(row.result == "failed" for row in rows):
        return Exit.FAILED
    if any(row.staple is not None and row.staple.status != GOOD for row in rows):
        return Exit.NOT_GOOD
    return Exit.OK


def _run(
    term: Terminal, stapler: Any, config: Any, source: Iterator[Leaf], files: int, concurrency: int, team: Team,
    force: bool, json_output: bool,
) -> list[Row]:
    lock_timeout = refresh_lock_timeout(config)

    progress = None
    if term.err.is_terminal and not json_output and not term.quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn("warming"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=term.err, transient=True,
        )
        task = progress.add_task("warm", total=files)

    def done(leaf: Leaf, outcome: Outcome) -> None:
        if progress is not None:
            progress.advance(task)
        if outcome.error is not None:
            term.debug(f"{leaf.name}: {outcome.error}")

    leaves: list[Leaf] = []
    #: certificates that name no OCSP responder: nothing to fetch, listed apart
    no_ocsp: list[Leaf] = []

    def with_responder(source: Iterator[Leaf]) -> Iterator[Leaf]:
        for leaf in source:
            if leaf.has_responder:
                yield leaf
            else:
                no_ocsp.append(leaf)
                if progress is not None:
                    progress.advance(task)

    source = with_responder(source)

    def run() -> list[Outcome]:
        if team.processes > 1:
            leaves.extend(source)
            return team.refresh(stapler, engine_settings(config), leaves, force, lock_timeout, on_done=done)
        outcomes: dict[int, Outcome] = {}

        def read() -> Iterator[Leaf]:
            for leaf in source:
                leaves.append(leaf)  # its index in the fanout
                yield leaf

        def settle(index: int, result: Refresh | StapleError) -> None:
            outcomes[index] = outcome_of(stapler, leaves[index], result)
            done(leaves[index], outcomes[index])

        Fanout(stapler, concurrency, force=force, lock_timeout=lock_timeout).run(read(), settle)
        return [outcomes[index] for index in range(len(leaves))]

    if progress is None:
        outcomes = run()
    else:
        with progress:
            outcomes = run()
    rows = [Row(leaf.name, outcome) for leaf, outcome in zip(leaves, outcomes)]
    return rows + [Row(leaf.name, no_responder(leaf)) for leaf in no_ocsp]


#: how a result reads in the table (JSON keeps the result itself)
_RESULT_TEXT = {NO_OCSP: "no OCSP"}


def _counts(rows: list[Row]) -> dict[str, int]:
    """How many certificates had each result, by result's name."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.result] = counts.get(row.result, 0) + 1
    return dict(sorted(counts.items()))


def _show(term: Terminal, rows: list[Row], problems: list[Problem]) -> None:
    now = SYSTEM_CLOCK.now()
    table = []
    for row in rows:
        s = row.staple
        result = _RESULT_TEXT.get(row.result, row.result) if row.error is None else f"failed: {row.error}"
        if row.error is not None and s is not None:
            result += f" (the cached staple stays usable until {iso(s.next_update)})"
        status = s.status if s else "-"
        colour = {"good": "green", "revoked": "red", "unknown": "yellow", "-": "dim"}[status]
        table.append((row.name, (status, colour), fmt.relative(s.next_update, now) if s else "-",
                      (result, "red" if row.error else "")))
    print_table(term.out, ("CERTIFICATE", "STATUS", "NEXT UPDATE", "RESULT"), table)
    summary = ", ".join(f"{n} {_RESULT_TEXT.get(what, what)}" for what, n in _counts(rows).items())
    term.info(f"{len(rows)} certificates: {summary}")
