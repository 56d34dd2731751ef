"""staplectl export: write the cached staples where nginx or HAProxy read them.

The files, and why an expired staple's file is removed rather than left,
are staplectl/exporting.py's; this is the command. Export reads the cache
and never fetches: run ``warm`` (or the prefetch service) to fill it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from engine.api import GOOD, SYSTEM_CLOCK, InputError, Leaf, redact, remove_stale_temporaries
from staplectl import fmt
from staplectl.exitcodes import Exit
from staplectl.export_names import check_pattern, nginx_files
from staplectl.exporting import ExportError, Row, clashes, export_one, push, run_command, target_file
from staplectl.from_config import open_reader
from staplectl.options import IssuerOpt, JsonOpt, command
from staplectl.table import print_table
from staplectl.targets import load_targets
from staplectl.terminal import Terminal


def export(
    ctx: typer.Context,
    paths: Annotated[
        Optional[list[str]],
        typer.Argument(metavar="PATH", help="Certificate files, directories or globs. Default: the configuration's certificates.", show_default=False),
    ] = None,
    nginx: Annotated[
        Optional[Path],
        typer.Option("--nginx", metavar="DIR", help="Write DIR/<certificate file stem>.ocsp (DER) for nginx's ssl_stapling_file, and DIR/<stem>.stapling, a snippet holding that directive, for the server block to include. Where stems repeat (certbot's live/<name>/fullchain.pem), those are named after their directory: <name>.ocsp."),
    ] = None,
    name_pattern: Annotated[
        Optional[str],
        typer.Option("--name", metavar="PATTERN", show_default=False,
                     help="With --nginx: name each staple PATTERN.ocsp, from {stem}, {file}, {dir} (the directory's "
                     "name) and {sha1}, e.g. '{dir}' for certbot's tree."),
    ] = None,
    haproxy: Annotated[
        bool, typer.Option("--haproxy", help="Write <certificate file>.ocsp next to each certificate, where HAProxy loads it at start.")
    ] = False,
    mod_md_dir: Annotated[
        Optional[Path],
        typer.Option("--mod-md", metavar="DIR", help="Write mod_md's OCSP store (MDStapling on) under httpd's MDStoreDir DIR: ocsp/other/ocsp-<sha1>.json."),
    ] = None,
    haproxy_socket: Annotated[
        Optional[Path],
        typer.Option("--haproxy-socket", metavar="PATH", help="With --haproxy: also hand each written staple to the running HAProxy through its admin socket (set ssl ocsp-response), no reload needed."),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Remove the exported staples even when the cache holds no entry for any of the certificates (otherwise refused: a wrong --cache must not wipe them)."),
    ] = False,
    reload_cmd: Annotated[
        Optional[str],
        typer.Option("--reload-cmd", metavar="CMD", help="Shell command run once after any file changed (e.g. 'systemctl reload nginx')."),
    ] = None,
    issuer: IssuerOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Export the cached staples as files for nginx (--nginx DIR) or HAProxy (--haproxy).

    Only a usable response is written (atomically, mode 0644, only when the
    bytes changed); when none is cached an existing file is removed, since
    nginx would staple it past its nextUpdate. --reload-cmd runs after any
    change; --haproxy-socket hands each written staple to a running HAProxy.
    Exit 0 when every certificate was exported, 1 when a staple says
    revoked or unknown, 2 for bad input, 3 when any staple is missing or a
    file, a push to HAProxy or the reload command failed. A certificate that
    names no OCSP responder has no staple to miss ("no OCSP"), unless it is
    must-staple.
    """
    with command(ctx, json_errors=json_output) as (opts, term):
        if [nginx is not None, haproxy, mod_md_dir is not None].count(True) != 1:
            raise InputError("export needs exactly one target: --nginx DIR, --haproxy or --mod-md DIR")
        if haproxy_socket is not None and not haproxy:
            raise InputError("--haproxy-socket goes with --haproxy")
        if nginx is not None and not nginx.is_dir():
            raise InputError(f"--nginx {nginx}: no such directory")
        if mod_md_dir is not None and not mod_md_dir.is_dir():
            raise InputError(f"--mod-md {mod_md_dir}: no such directory (give httpd's MDStoreDir)")
        effective = opts.load_config()
        targets = load_targets(paths, issuer, None, effective)
        target = "nginx" if nginx is not None else "mod_md" if mod_md_dir is not None else "haproxy"
        if name_pattern is not None and nginx is None:
            raise InputError("--name names nginx's staple files: it needs --nginx")
        if nginx is not None:
            pattern = check_pattern(name_pattern) if name_pattern is not None else None
            files = nginx_files(targets.leaves, nginx, pattern)
        else:
            files = {leaf.cert_id: target_file(leaf, mod_md_dir) for leaf in targets.leaves}
        clashing = clashes(targets.leaves, files)
        for directory in sorted({file.parent for file in files.values()}):
            for stale in remove_stale_temporaries(directory):
                term.debug(f"removed {stale}, left by an export that was killed")
        reader = open_reader(effective)
        try:
            # One read for all, re-validated (a shared cache may hold
            # anything). A store that fails is one error for the whole
            # export, and no file is touched.
            entries = reader.cache.get_many([leaf.cert_id for leaf in targets.leaves])
            if not entries and not prune:
                # those without OCSP have no entry anyway: their files go
                asking = [leaf for leaf in targets.leaves if leaf.has_responder]
                _refuse_to_wipe(reader.cache.uri, asking, files, target)
            staples = reader.cached_many(targets.leaves, entries)
            now = SYSTEM_CLOCK.now()
            rows = [
                Row(leaf.name, files[leaf.cert_id], error=clashing[leaf.cert_id])
                if leaf.cert_id in clashing
                else export_one(reader, leaf, staples[leaf.cert_id], files[leaf.cert_id], now, target)
                for leaf in targets.leaves
            ]
            for row, leaf in zip(rows, targets.leaves):
                # a must-staple one stays a failure: no server can serve it without a staple
                row.no_ocsp = not leaf.has_responder and not leaf.must_staple
        finally:
            reader.close()
    rows += [Row(p.name, None, error=p.error) for p in targets.problems]
    rows.sort(key=lambda row: row.cert)
    if haproxy_socket is not None:
        push(haproxy_socket, rows)
    reload_failed = False
    if reload_cmd and any(row.result in ("written", "removed") for row in rows):
        reload_failed = not _reload(term, reload_cmd)
    if json_output:
        now = SYSTEM_CLOCK.now()
        term.json({"cache": redact(effective.cache_uri), "target": target,
                   "certificates": [row.to_dict(now) for row in rows]})  # fmt: skip
    else:
        _show(term, rows)
    raise typer.Exit(int(Exit.FAILED if reload_failed else exit_code(rows)))


def _refuse_to_wipe(uri: str, leaves: list[Leaf], files: dict[str, Path], target: str) -> None:
    """A cache with no entry for any certificate is a wrong --cache or a new
    store far more often than a real loss of every staple: removing what is
    exported would leave every server stapling nothing. Refuse (exit 3)."""
    exported = [files[leaf.cert_id] for leaf in leaves if _holds_staple(files[leaf.cert_id], target)]
    if exported:
        raise ExportError(
            f"cache {redact(uri)} has no entry for any of the {len(leaves)} certificates: refusing to remove "
            f"{len(exported)} exported staples (is --cache or the configuration wrong?); --prune removes them"
        )


def _holds_staple(file: Path, target: str) -> bool:
    try:
        info = os.lstat(file)
    except FileNotFoundError:
        return False
    # HAProxy's emptied .ocsp is no staple (see _export)
    return target != "haproxy" or info.st_size > 0


def exit_code(rows: list[Row]) -> Exit:
    if any(_failed(row) for row in rows):
        return Exit.FAILED
    if any(row.staple is not None and row.staple.status != GOOD for row in rows):
        return Exit.NOT_GOOD
    return Exit.OK


def _failed(row: Row) -> bool:
    if row.error is not None:
        return True
    return row.result == "failed" or (row.result in ("missing", "removed") and not row.no_ocsp)


def _reload(term: Terminal, command: str) -> bool:
    """Run the reload command; its output goes to stderr, stdout stays data."""
    term.debug(f"running the reload command: {command}")
    error, output = run_command(command, "reload command")
    if output:
        sys.stderr.write(output.decode(errors="replace"))
        sys.stderr.flush()
    if error is not None:
        term.error(f"{error}; the files stay exported")
        return False
    return True


def _show(term: Terminal, rows: list[Row]) -> None:
    now = SYSTEM_CLOCK.now()
    styles = {"written": "green", "unchanged": "", "removed": "yellow", "missing": "red", "failed": "red"}
    table = []
    for row in rows:
        s = row.staple
        action = row.result if row.error is None else f"failed: {row.error}"
        style = styles[row.result]
        if row.no_ocsp and row.error is None and row.result in ("missing", "removed"):
            action, style = ("no OCSP" if row.result == "missing" else "removed (no OCSP)"), "dim"
        table.append((row.cert, str(row.file) if row.file else "-", (action, style),
                      s.status if s else "-", fmt.relative(s.next_update, now) if s else "-"))
    print_table(term.out, ("CERTIFICATE", "FILE", "RESULT", "STATUS", "NEXT UPDATE"), table)
