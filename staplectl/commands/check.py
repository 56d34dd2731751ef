"""staplectl check: a monitoring check in the Nagios plugin convention.

Exactly one line on stdout, ``STAPLECTL <STATE> - <summary> | <perfdata>``,
and the plugin exit codes (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), so
that Nagios, Icinga, Sensu, Zabbix' agent or a cron job can run it as it
is. It reads the cache and never fetches: a check must not change what it
measures, nor hang on a responder.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from engine.api import (
    GOOD, SYSTEM_CLOCK, InputError, Leaf, Staple, StapleError, StateStore, iso, redact, seconds_left,
)
from staplectl import fmt
from staplectl.from_config import open_reader, validation_options
from staplectl.json_output import error_fields, staple_fields
from staplectl.options import IssuerOpt, JsonOpt, settings
from staplectl.printable import printable
from staplectl.targets import load_targets
from staplectl.thresholds import DEFAULT_CRIT, DEFAULT_WARN, Threshold, check_order, parse_threshold
from staplectl.terminal import Terminal



class State(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


#: which state wins when certificates disagree (monitoring-plugins' max_state)
_SEVERITY = {State.OK: 0, State.UNKNOWN: 1, State.WARNING: 2, State.CRITICAL: 3}


@dataclass
class Finding:
    name: str
    state: State
    #: why, in a few words ("revoked", "5 h left"); "" when OK
    why: str
    leaf: Leaf | None = None
    staple: Staple | None = None
    left: float | None = None
    #: the certificate names no OCSP responder (judged by --no-ocsp)
    no_ocsp: bool = False
    #: --warn and --crit for this staple, in seconds left (for the perfdata)
    warn: float | None = None
    crit: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cert": self.name,
            "cert_sha1": self.leaf.cert_id if self.leaf else None,
            "serial": self.leaf.serial_hex if self.leaf else None,
            "state": self.state.name,
            # left: as the thresholds judged it; none for a staple not judged by time (invalid)
            **staple_fields(self.staple, self.left),
            "must_staple": self.leaf.must_staple if self.leaf else None,
            "no_ocsp": self.no_ocsp,
            "message": self.why,
        }


def check(
    ctx: typer.Context,
    certs: Annotated[
        Optional[list[str]],
        typer.Argument(metavar="CERT", help="Certificate files, directories or globs. Default: the configuration's certificates.", show_default=False),
    ] = None,
    warn: Annotated[
        str, typer.Option("--warn", "-w", metavar="DURATION|N%",
                          help="WARNING when a staple has less than this left until nextUpdate: a duration (30m, 12h, "
                          "1d) or a share of its validity (40%: the prefetch service is behind).")
    ] = DEFAULT_WARN,
    crit: Annotated[
        str, typer.Option("--crit", "-c", metavar="DURATION|N%",
                          help="CRITICAL when a staple has less than this left (10%: about to lapse).")
    ] = DEFAULT_CRIT,
    no_ocsp: Annotated[
        str, typer.Option("--no-ocsp", metavar="ok|warning|critical",
                          help="The state of a certificate that names no OCSP responder (several CAs dropped "
                          "OCSP in 2025). A must-staple one is CRITICAL whatever this says.")
    ] = "ok",
    probe: Annotated[
        Optional[list[str]],
        typer.Option("--probe", metavar="HOST[:PORT]", show_default=False,
                     help="Also check what this server staples, by a TLS handshake (repeatable): nothing, an "
                     "invalid or expired response is CRITICAL whatever the cache holds. With --probe and no "
                     "CERT, only the servers are checked."),
    ] = None,
    servername: Annotated[
        Optional[str],
        typer.Option("--servername", metavar="NAME", show_default=False,
                     help="The SNI name for --probe. [default: each HOST]"),
    ] = None,
    issuer: IssuerOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Check the cached staples, for Nagios, Icinga and friends. Never fetches.

    Prints one status line with perfdata (seconds left per certificate) and
    exits 0 OK, 1 WARNING (a staple has less than --warn left), 2 CRITICAL
    (a staple missing, expired, revoked or unknown, or less than --crit
    left; a must-staple certificate without one), 3 UNKNOWN (bad input, an
    unloadable certificate, the cache unreachable). A certificate that names
    no OCSP responder has no staple to check: --no-ocsp says its state (OK
    by default), except a must-staple one, which is CRITICAL.
    """
    opts = settings(ctx)
    term = Terminal(verbose=opts.verbose, quiet=opts.quiet, command="check")
    try:
        warn_s = parse_threshold(warn, "--warn")
        crit_s = parse_threshold(crit, "--crit")
        check_order(warn_s, crit_s)
        without_ocsp = _NO_OCSP_STATES.get(no_ocsp.lower())
        if without_ocsp is None:
            raise InputError(f"--no-ocsp {no_ocsp!r}: expected ok, warning or critical")
        effective = opts.load_config()
        now = SYSTEM_CLOCK.now()
        validation = validation_options(effective)
        policy = effective.policy()
        findings = [_probe(server, servername, now, warn_s, crit_s, validation, policy) for server in probe or []]
        problems = []
        if certs or not probe:
            targets = load_targets(certs, issuer, None, effective)
            problems = targets.problems
            reader = open_reader(effective)
            planned = _planned(effective)
            try:
                findings += [
                    _lapsing(_judge(reader, leaf, now, warn_s, crit_s), planned.get(leaf.cert_id), now)
                    if leaf.has_responder else _no_ocsp(leaf, without_ocsp)
                    for leaf in targets.leaves
                ]  # fmt: skip
            finally:
                reader.close()
    except (StapleError, ValueError) as error:
        # Every failure to check is UNKNOWN, never the 2 (CRITICAL) that
        # bad input means to the other commands.
        _unknown(term, str(error), json_output, getattr(error, "reason", "bad_input"))
    except Exception as exc:  # a bug: still UNKNOWN, not the 1 (WARNING) of a traceback
        _unknown(term, f"internal error: {term.internal_error(exc)}", json_output, "internal_error", said=True)
    findings += [Finding(p.name, State.UNKNOWN, _without_name(p.name, str(p.error))) for p in problems]
    findings.sort(key=lambda f: f.name)
    state = max((f.state for f in findings), key=_SEVERITY.__getitem__)
    perfdata = _perfdata(findings)
    line = f"STAPLECTL {state.name} - {_clean(_summary(findings, state))}" + (f" | {perfdata}" if perfdata else "")
    if json_output:
        read = certs or not probe  # the cache was read (--probe alone reads none)
        term.json({"cache": redact(effective.cache_uri) if read else None, "state": state.name, "code": int(state),
                   "summary": line, "certificates": [f.to_dict() for f in findings]})  # fmt: skip
    else:
        sys.stdout.write(line + "\n")  # the plugin line: plain, whatever -q says
    for finding in findings:
        term.debug(f"{finding.state.name:<8} {finding.name}: {finding.why or 'ok'}")
    raise typer.Exit(int(state))


def _without_name(name: str, message: str) -> str:
    """The label already names the file: "junk.pem: not a certificate", not the path twice."""
    return message[len(name) + 2 :] if message.startswith(f"{name}: ") else message


def _clean(text: str) -> str:
    """One line, and no "|": that starts the perfdata. Whatever a file name
    or a responder put in it (a newline, ESC), it stays one plain line."""
    return printable(" ".join(text.replace("|", "/").split()))


def _unknown(term: Terminal, message: str, json_output: bool, reason: str, *, said: bool = False) -> NoReturn:
    """The UNKNOWN line; ``said``: stderr has had its line already (an internal error's)."""
    line = f"STAPLECTL UNKNOWN - {_clean(message)}"
    if not said:
        term.error(message)
    if json_output:
        term.json({"state": "UNKNOWN", "code": 3, "summary": line, "certificates": [],
                   **error_fields(reason, message)})  # fmt: skip
    else:
        sys.stdout.write(line + "\n")
    raise typer.Exit(int(State.UNKNOWN))


_NO_OCSP_STATES = {"ok": State.OK, "warning": State.WARNING, "critical": State.CRITICAL}


def _no_ocsp(leaf: Leaf, state: State) -> Finding:
    """Nothing to check: no staple is expected, unless the certificate demands one."""
    if leaf.must_staple:
        return Finding(leaf.name, State.CRITICAL, "must-staple, yet no OCSP responder: no server can staple it",
                       leaf, no_ocsp=True)  # fmt: skip
    return Finding(leaf.name, state, "" if state == State.OK else "no OCSP responder", leaf, no_ocsp=True)


def _planned(config: Any) -> dict[str, float]:
    """The prefetch worker's next attempt per certificate, from its state, read-only;
    nothing when there is no state (no worker ran) or it cannot be read."""
    path = config.state_path()
    if not path.exists():
        return {}
    try:
        store = StateStore(path, read_only=True)
        try:
            return {s.cert_id: s.next_attempt for s in store.all() if s.next_attempt is not None}
        finally:
            store.close()
    except StapleError:
        return {}


def _lapsing(found: Finding, next_attempt: float | None, now: float) -> Finding:
    """CRITICAL when a staple still servable runs out before the worker next tries
    to renew it: however long it has left, nothing will replace it in time."""
    staple = found.staple
    if found.state == State.CRITICAL or staple is None or next_attempt is None or next_attempt <= now:
        return found  # a planned time already past: a worker that is not running, said by its own check
    end = staple.next_update
    if end is not None and found.left and end < next_attempt:
        found.state = State.CRITICAL
        found.why = f"lapses at {iso(end)}, before the prefetch worker's next attempt at {iso(next_attempt)}"
    return found


#: how long a --probe handshake may take
PROBE_TIMEOUT = 10.0


def _probe(
    server: str, servername: str | None, now: float, warn: Threshold, crit: Threshold, options: Any, policy: Any
) -> Finding:
    """What the server staples, judged as a client would, then by time left as a cached staple."""
    from engine.api import ProbeError, handshake, judge, split_server  # pyOpenSSL: only with --probe

    host, port = split_server(server)
    try:
        stapled = handshake(host, port, servername or host, PROBE_TIMEOUT)
    except ProbeError as error:
        return Finding(server, State.UNKNOWN, str(error))
    judgement = judge(stapled, now, options)
    staple = judgement.staple
    if not judgement.acceptable or staple is None:
        return Finding(server, State.CRITICAL, f"the server staples: {judgement.problem}", judgement.leaf, staple)
    found = _timed(Finding(server, State.OK, "", judgement.leaf, staple), now, warn, crit, policy)
    if staple.status != GOOD:
        found.state, found.why = State.CRITICAL, f"the server staples {staple.status}"
    elif found.why:
        found.why = f"the server's staple has {found.why}"
    return found


def _timed(found: Finding, now: float, warn: Threshold, crit: Threshold, policy: Any) -> Finding:
    """``found`` (with its staple) judged by its time left against --warn and --crit."""
    staple = found.staple
    assert staple is not None
    left = seconds_left(staple.this_update, staple.next_update, now, policy)
    found.left, found.warn, found.crit = max(left, 0.0), warn.for_staple(staple, policy), crit.for_staple(staple, policy)
    if left < found.crit:
        found.state, found.why = State.CRITICAL, f"{fmt.duration(left)} left"
    elif left < found.warn:
        found.state, found.why = State.WARNING, f"{fmt.duration(left)} left"
    return found


def _judge(reader: Any, leaf: Leaf, now: float, warn: Threshold, crit: Threshold) -> Finding:
    staple = reader.cached(leaf)  # re-validated: signature, responder, CertID
    must = " (must-staple: handshakes fail)" if leaf.must_staple else ""
    if staple is None:
        return Finding(leaf.name, State.CRITICAL, f"no staple cached{must}", leaf)
    found = _timed(Finding(leaf.name, State.OK, "", leaf, staple), now, warn, crit, reader.policy)
    if not reader.usable(staple, now):
        left = seconds_left(staple.this_update, staple.next_update, now, reader.policy)
        found.state, found.why = State.CRITICAL, f"staple expired {fmt.duration(left)} ago{must}"
        if left > 0:  # thisUpdate in the future beyond the allowed skew
            found.why = f"staple not yet valid (thisUpdate {iso(staple.this_update)}){must}"
    elif staple.status != GOOD:
        found.state, found.why = State.CRITICAL, f"{staple.status}"
    return found


def _summary(findings: list[Finding], state: State) -> str:
    good = [f for f in findings if f.state == State.OK and not f.no_ocsp]
    apart = sum(f.state == State.OK and f.no_ocsp for f in findings)
    without = [f"{apart} without OCSP"] if apart else []
    if state == State.OK:
        if not good:
            return "; ".join(without)
        shortest = min(f.left for f in good if f.left is not None)
        noun = "staple" if len(good) == 1 else "staples"
        return "; ".join([f"{len(good)} {noun} good, shortest {fmt.duration(shortest)} left", *without])
    # The worst first, so that a truncated line still names them.
    bad = sorted((f for f in findings if f.state != State.OK), key=lambda f: -_SEVERITY[f.state])
    label = labels([f.name for f in findings])
    parts = [f"{label[f.name]}: {f.why}" for f in bad]
    if good:
        parts.append(f"{len(good)} good")
    return "; ".join(parts + without)


def labels(names: list[str]) -> dict[str, str]:
    """Each file's name, or as much of its path as tells it apart from the
    others (Let's Encrypt names every chain fullchain.pem)."""
    parts = {name: Path(name).parts for name in names}
    depth = dict.fromkeys(names, 1)
    while True:
        by_tail: dict[str, list[str]] = {}
        for name in names:
            by_tail.setdefault(os.path.join(*parts[name][-depth[name]:]), []).append(name)
        clashing = [n for group in by_tail.values() if len(group) > 1 for n in group if depth[n] < len(parts[n])]
        if not clashing:
            return {n: tail for tail, group in by_tail.items() for n in group}
        for name in clashing:
            depth[name] += 1


def _perfdata(findings: list[Finding]) -> str:
    """'label'=VALUEs;WARN:;CRIT:;0 per staple: in the plugin range syntax
    "N:" alerts below N, as fits time left (lower is worse)."""
    items = []
    label = labels([f.name for f in findings])
    for f in findings:
        if f.no_ocsp:
            continue  # no staple to measure
        quoted = printable(label[f.name]).replace("'", "''").replace("|", "/")
        # U: "value could not be determined" (plugin guidelines)
        value = f"{int(f.left)}s" if f.left is not None else "U"
        warn = f"{int(f.warn)}:" if f.warn is not None else ""
        crit = f"{int(f.crit)}:" if f.crit is not None else ""
        items.append(f"'{quoted}'={value};{warn};{crit};0")
    return " ".join(items)
