"""staplectl fetch: ask a certificate's responder once, validate, store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from engine.api import (
    DEFAULT_NAMESPACE, GOOD, SYSTEM_CLOCK, Cache, FreshnessPolicy, InputError, Leaf, Staple, check_bound, check_output,
    check_url, fetch_staple, iso, load_leaf, redact, staple_key, write_output,
)
from staplectl import fmt
from staplectl.exitcodes import Exit
from staplectl.config import check_hash
from staplectl.options import HashOpt, JsonOpt, command
from staplectl.printable import printable
from staplectl.from_config import fetch_options, open_stapler
from staplectl.json_output import staple_fields, time_left
from staplectl.terminal import Terminal


def fetch(
    ctx: typer.Context,
    cert: Annotated[Path, typer.Argument(metavar="CERT", help="Leaf certificate (PEM, may hold its chain; or DER).", show_default=False)],
    issuer: Annotated[
        Optional[Path], typer.Option("--issuer", metavar="FILE", help="Issuer certificate, when the leaf's file holds no chain.")
    ] = None,
    url: Annotated[
        Optional[str], typer.Option("--url", metavar="URL", help="Responder URL to use instead of the certificate's AIA one.")
    ] = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Fetch and validate only; leave the cache alone.")] = False,
    out: Annotated[
        Optional[Path], typer.Option("--out", metavar="FILE", help="Also write the response DER here: a regular file is replaced atomically, a symlink followed, a device or FIFO written through (as the shell's > would); anything else is refused.")
    ] = None,
    timeout: Annotated[
        Optional[float],
        typer.Option("--timeout", metavar="SECONDS", min=0.1, help="Total deadline for the responder: connect, send and read. [default: responder.timeout, 10 s]", show_default=False),
    ] = None,
    max_size: Annotated[
        Optional[int],
        typer.Option("--max-size", metavar="BYTES", min=512, help="Largest response accepted. [default: responder.max_size, 65536]", show_default=False),
    ] = None,
    nonce: Annotated[bool, typer.Option("--nonce", help="Send a nonce and require it back.")] = False,
    get: Annotated[bool, typer.Option("--get", help="Use an RFC 5019 GET when the request is small enough.")] = False,
    hash_name: HashOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Fetch, validate and store one certificate's OCSP response.

    Exit 0 when the responder says good, 1 for revoked or unknown, 2 for bad
    input, 3 when the responder, the response or the cache failed (the cache
    is then unchanged).
    """
    with command(ctx, json_errors=json_output) as (opts, term):
        if url is not None:
            check_url(url)
        if out is not None:
            try:
                check_output(out)  # before anything is fetched or stored
            except OSError as exc:
                raise InputError(f"--out {out}: {_os_error(exc, out)}") from None
        effective = opts.load_config()
        responder = effective.responder
        if timeout is not None:
            responder.timeout = check_bound("responder.timeout", timeout, option="--timeout")
        if max_size is not None:
            responder.max_size = int(check_bound("responder.max_size", max_size, option="--max-size"))
        responder.nonce = nonce or responder.nonce
        responder.get = get or responder.get
        if hash_name is not None:
            responder.hash = check_hash(hash_name, f"--hash {hash_name}")
        leaf = load_leaf(cert, issuer_path=issuer, url_override=url)
        responder_url = leaf.responder_url()
        term.debug(f"asking {responder_url} about serial {leaf.serial_hex} ({leaf.cert_id})")
        stapler = None if no_store else open_stapler(effective)
        try:
            if stapler is None:
                staple, ttl, what = fetch_staple(leaf, fetch_options(effective)), 0, "fetched"
            else:
                # the same path as every refresh: the certificate's fetch lock,
                # so a concurrent prefetch service does not fetch it too
                result = stapler.refresh(leaf, force=True, lock_timeout=responder.timeout)
                staple, ttl, what = result.staple, result.ttl, result.action
        finally:
            if stapler is not None:
                stapler.close()
        now = SYSTEM_CLOCK.now()
        if out is not None:
            try:
                write_output(out, staple.der)
            except OSError as exc:
                raise InputError(f"--out {out}: cannot write the response: {_os_error(exc, out)}") from None
        result_data = _result(leaf, staple, responder_url, stapler.cache if stapler else None, ttl > 0, now,
                              effective.policy(), what)  # fmt: skip
        if json_output:
            term.json({"cache": result_data.pop("cache"), "certificates": [result_data]})
        else:
            _show(term, leaf, staple, result_data, now)
    raise typer.Exit(int(Exit.OK if staple.status == GOOD else Exit.NOT_GOOD))


def _result(
    leaf: Leaf, staple: Staple, responder: str, cache: Cache | None, stored: bool, now: float,
    policy: FreshnessPolicy, what: str,
) -> dict[str, Any]:
    namespace = getattr(cache.provider, "namespace", DEFAULT_NAMESPACE) if cache else DEFAULT_NAMESPACE
    return {
        "cert": str(leaf.path) if leaf.path else None,
        "cert_sha1": leaf.cert_id,
        "serial": leaf.serial_hex,
        "subject": leaf.subject,
        "must_staple": leaf.must_staple,
        **staple_fields(staple, time_left(staple, now, policy)),
        "result": what,
        "responder": responder,
        "cache": redact(cache.provider.uri) if cache else None,
        "cache_key": staple_key(namespace, leaf.cert_id),
        "stored": stored,
    }


def _show(term: Terminal, leaf: Leaf, staple: Staple, result: dict[str, Any], now: float) -> None:
    colour = {"good": "green", "revoked": "red"}.get(staple.status, "yellow")
    term.out.print(f"[bold {colour}]{staple.status}[/]  {escape(printable(leaf.subject))}")
    rows = [
        ("certificate", result["cert"] or "-"),
        ("serial", result["serial"]),
        ("this update", fmt.timestamp(staple.this_update, now)),
        ("next update", fmt.timestamp(staple.next_update, now) if staple.next_update else "none (kept at most 1 h)"),
        ("produced at", iso(staple.produced_at)),
        ("responder", result["responder"]),
        ("cache key", result["cache_key"]),
        ("stored", f"yes, in {result['cache']}" if result["stored"] else ("no (--no-store)" if result["cache"] is None else "no (already expired)")),
    ]
    if staple.revocation_time is not None:
        rows.insert(2, ("revoked", f"{iso(staple.revocation_time)} ({staple.revocation_reason or 'no reason given'})"))
    if leaf.must_staple:
        rows.append(("must-staple", "yes: a server without this staple will fail handshakes"))
    if staple.weak:
        rows.append(("weak", "; ".join(staple.weak) + " (accepted; responder.refuse_weak refuses)"))
    for label, value in rows:
        term.out.print(f"  [dim]{label:<12}[/] {escape(printable(str(value)))}")


def _os_error(exc: OSError, path: Path) -> str:
    """The reason, and the file it is about when that is not ``path`` itself."""
    reason = exc.strerror or str(exc)
    if exc.filename and exc.filename != str(path):
        return f"{reason}: {exc.filename}"
    return reason
