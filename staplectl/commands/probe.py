"""staplectl probe: what a running server really staples.

A TLS handshake asking for a staple, as a client would make it: the staple
judged against the certificate and chain the server sent, and set beside
the cache's staple for that certificate, so that "the cache is fresh but
nginx was never reloaded" shows at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from engine.api import (
    GOOD, SYSTEM_CLOCK, Judgement, Staple, StapleError, Stapled, cert_sha1, handshake, iso, judge, redact,
    serial_text, split_server,
)
from staplectl import fmt
from staplectl.exitcodes import Exit
from staplectl.from_config import fetch_options, open_reader
from staplectl.json_output import staple_fields, time_left
from staplectl.options import JsonOpt, command
from staplectl.printable import printable
from staplectl.terminal import Terminal

DEFAULT_TIMEOUT = 10.0


def probe(
    ctx: typer.Context,
    server: Annotated[str, typer.Argument(metavar="SERVER", help="HOST[:PORT] (port 443 by default), or [IPv6]:PORT.", show_default=False)],
    servername: Annotated[
        Optional[str],
        typer.Option("--servername", metavar="NAME", show_default=False,
                     help="The name sent in SNI, which picks the certificate. [default: HOST]"),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", min=0.1, help="Connect and handshake, in total.")
    ] = DEFAULT_TIMEOUT,
    json_output: JsonOpt = False,
) -> None:
    """Show what a TLS server staples, and whether it is the cache's staple.

    One handshake with SNI and the status_request extension. Prints the
    certificate the server presented, what it stapled (status, thisUpdate,
    nextUpdate, time left), whether a client would accept it (checked
    against the served chain, with no grace after nextUpdate), and how it
    compares with the cached staple for that certificate. Exit 0 when the
    server staples a valid good response, 1 for a valid revoked or unknown
    one, 2 for bad input, 3 when it staples nothing, something invalid or
    expired, or the handshake failed.
    """
    with command(ctx, json_errors=json_output) as (opts, term):
        host, port = split_server(server)
        effective = opts.load_config()
        stapled = handshake(host, port, servername or host, timeout)
        now = SYSTEM_CLOCK.now()
        judgement = judge(stapled, now, fetch_options(effective).validation)
        cache = _compare(effective, judgement)
        result = to_dict(stapled, judgement, now)
        result["certificates"][0]["in_cache"] = cache
        if json_output:
            term.json({"cache": redact(effective.cache_uri), **result})
        else:
            _show(term, stapled, judgement, cache, now)
    raise typer.Exit(int(exit_code(judgement)))


def exit_code(judgement: Judgement) -> Exit:
    if not judgement.acceptable:
        return Exit.FAILED
    return Exit.OK if judgement.staple is not None and judgement.staple.status == GOOD else Exit.NOT_GOOD


def to_dict(stapled: Stapled, judgement: Judgement, now: float) -> dict[str, Any]:
    """The handshake, then the certificate presented with what was stapled for it."""
    cert = stapled.certificate
    return {
        "server": stapled.server,
        "servername": stapled.servername,
        "handshake_seconds": round(stapled.seconds, 3),
        "certificates": [{
            "cert": None,  # as served, not a file
            "cert_sha1": cert_sha1(cert),
            "serial": serial_text(cert.serial_number),
            "subject": cert.subject.rfc4514_string(),
            "stapled": stapled.der is not None,
            "acceptable": judgement.acceptable,
            "reason": judgement.reason,
            "problem": judgement.problem,
            **staple_fields(judgement.staple, time_left(judgement.staple, now)),
        }],
    }


def _compare(config: Any, judgement: Judgement) -> dict[str, Any]:
    """The cache's staple for the certificate, beside the one stapled."""
    if judgement.leaf is None:
        return {"state": "unknown", "message": "the served chain lacks the issuer: the cache's staple cannot be checked"}
    try:
        reader = open_reader(config)
        try:
            cached = reader.cached(judgement.leaf)  # validated, as every read
        finally:
            reader.close()
    except StapleError as error:
        return {"state": "unavailable", "message": str(error)}
    return {"state": _state(judgement.staple, cached), "this_update": iso(cached.this_update) if cached else None,
            "next_update": iso(cached.next_update) if cached else None}  # fmt: skip


def _state(stapled: Staple | None, cached: Staple | None) -> str:
    if cached is None:
        return "none"
    if stapled is None:
        return "not_stapled"
    if stapled.der == cached.der:
        return "same"
    if cached.age_key > stapled.age_key:
        return "newer_in_cache"
    return "older_in_cache" if cached.age_key < stapled.age_key else "other"


#: what each cache state means, for a person
CACHE_STATES = {
    "same": "the same staple",
    "newer_in_cache": "the cache holds a newer staple: the server has not picked it up (reload it, or check its export)",
    "older_in_cache": "the server staples a newer response than the cache holds",
    "other": "another response of the same age",
    "none": "the cache holds no valid staple for this certificate",
    "not_stapled": "the cache holds a staple the server does not send",
    "unknown": "cannot compare",
    "unavailable": "cannot read the cache",
}


def _show(term: Terminal, stapled: Stapled, judgement: Judgement, cache: dict[str, Any], now: float) -> None:
    s = judgement.staple
    if judgement.acceptable and s is not None:
        head = f"[{'green' if s.status == GOOD else 'red'}]{s.status}[/]"
    else:
        head = f"[red]{(judgement.reason or 'invalid').replace('_', ' ').upper()}[/]"
    term.out.print(f"{head}  stapled by {printable(stapled.server)} (SNI {printable(stapled.servername)}), "
                   f"handshake {stapled.seconds * 1000:.0f} ms", markup=True, highlight=False)  # fmt: skip
    cert = stapled.certificate
    rows = [("certificate", f"{cert.subject.rfc4514_string()} (serial {serial_text(cert.serial_number)})")]
    if s is not None:
        rows += [("status", s.status), ("this update", fmt.timestamp(s.this_update, now)),
                 ("next update", fmt.timestamp(s.next_update, now) if s.next_update else "none")]  # fmt: skip
        if s.weak:
            rows.append(("weak", "; ".join(s.weak)))
    rows.append(("accepted", "yes, against the served chain" if judgement.acceptable else f"no: {judgement.problem}"))
    detail = cache.get("message") or (f"thisUpdate {cache['this_update']}" if cache.get("this_update") else "")
    rows.append(("cache", CACHE_STATES[cache["state"]] + (f" ({detail})" if detail and cache["state"] != "same" else "")))
    for label, value in rows:
        term.out.print(f"  [dim]{label:<12}[/] {printable(str(value))}", highlight=False)
