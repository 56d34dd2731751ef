"""staplectl export: write the cached staples where nginx or HAProxy read them.

nginx reads ``ssl_stapling_file`` (DER) once at (re)load and serves it with
no time check, and HAProxy reads ``<cert>.ocsp`` at start: a stale file is
stapled until the next reload. So a file is written only with a usable
(current, re-validated) response, and when nothing usable is cached any
existing file is REMOVED, and the server, reloaded, staples nothing rather
than an expired response. Export reads the cache and never fetches: run
``warm`` (or the prefetch service) to fill it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from engine.api import (
    GOOD, SYSTEM_CLOCK, InputError, Leaf, Staple, StapleError, check_replaceable, iso, redact,
    remove_stale_temporaries, write_atomic,
)
from staplectl import fmt, mod_md
from staplectl.exitcodes import Exit
from staplectl.export_names import check_pattern, nginx_files
from staplectl.from_config import open_reader
from staplectl.haproxy_api import HAProxyAPIError, HAProxyUnreachableError, set_ocsp_response
from staplectl.options import IssuerOpt, JsonOpt, command
from staplectl.table import print_table
from staplectl.targets import error_dict, load_targets
from staplectl.terminal import Terminal

#: a reload command that runs longer than this is reported as failed
RELOAD_TIMEOUT = 120.0


class ExportError(StapleError):
    reason = "export_failed"


@dataclass
class Row:
    cert: str
    file: Path | None
    #: written | unchanged | removed | missing | failed
    action: str = "failed"
    staple: Staple | None = None
    error: StapleError | None = None
    #: the certificate names no OCSP responder: no staple is expected, so
    #: none cached (missing, or an old file removed) is not a failure
    no_ocsp: bool = False

    def to_dict(self) -> dict[str, Any]:
        s = self.staple
        return {
            "cert": self.cert,
            "file": str(self.file) if self.file else None,
            "action": self.action,
            "no_ocsp": self.no_ocsp,
            "status": s.status if s else None,
            "next_update": iso(s.next_update) if s else None,
            "error": error_dict(self.error) if self.error else None,
        }


#: beside each nginx staple, a one-line snippet the server block includes
#: through a glob (`include DIR/<stem>.stapling*;`): see docs/nginx.md
SNIPPET_SUFFIX = ".stapling"


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
            files = {leaf.cert_id: _target(leaf, mod_md_dir) for leaf in targets.leaves}
        clashes = _clashes(targets.leaves, files)
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
                Row(leaf.name, files[leaf.cert_id], error=clashes[leaf.cert_id])
                if leaf.cert_id in clashes
                else _export(reader, leaf, staples[leaf.cert_id], files[leaf.cert_id], now, target)
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
        _push(term, haproxy_socket, rows)
    reload_failed = False
    if reload_cmd and any(row.action in ("written", "removed") for row in rows):
        reload_failed = not _reload(term, reload_cmd)
    if json_output:
        term.json([row.to_dict() for row in rows])
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
    return row.action == "failed" or (row.action in ("missing", "removed") and not row.no_ocsp)


def _target(leaf: Leaf, mod_md_dir: Path | None) -> Path:
    """mod_md's file, else HAProxy's (beside the certificate): nginx's are export_names'."""
    assert leaf.path is not None  # loaded from a file
    if mod_md_dir is not None:
        return mod_md.entry_path(mod_md_dir, leaf.cert_id)
    return leaf.path.with_name(leaf.path.name + ".ocsp")


def _clashes(leaves: list[Leaf], files: dict[str, Path]) -> dict[str, StapleError]:
    """Certificates that would write the same file: none of them is exported,
    since whichever came last would silently win."""
    by_file: dict[Path, list[Leaf]] = {}
    for leaf in leaves:
        by_file.setdefault(files[leaf.cert_id], []).append(leaf)
    clashes: dict[str, StapleError] = {}
    for file, group in by_file.items():
        if len(group) > 1:
            names = ", ".join(leaf.name for leaf in group)
            for leaf in group:
                clashes[leaf.cert_id] = ExportError(
                    f"{file}: {len(group)} certificates would be exported to this one file ({names}); "
                    "name them apart with --name (e.g. '{dir}-{stem}'), or export them to different directories"
                )
    return clashes


def snippet_of(staple_file: Path) -> Path:
    """nginx's include snippet beside a staple file: ``<stem>.stapling``."""
    return staple_file.with_suffix(SNIPPET_SUFFIX)


def _export(reader: Any, leaf: Leaf, staple: Staple | None, file: Path, now: float, target: str) -> Row:
    try:
        if not reader.usable(staple, now):
            # Never leave a file behind that nginx would keep stapling. The
            # snippet goes first: nginx must never include a directive that
            # names a missing file (its reload would fail and it would go on
            # stapling the expired response it has loaded).
            if target == "nginx":
                removed = _unlink(snippet_of(file))
                removed = _unlink(file) or removed
            elif target == "mod_md":
                removed = _unlink(file)
            else:
                # HAProxy refuses to start on a missing .ocsp of a bundle it
                # once had, and takes runtime pushes only for certificates
                # that had one: an empty file keeps both working, staples
                # nothing, and it drops an expired response on its own.
                check_replaceable(file)
                removed = file.exists() and file.stat().st_size > 0
                if removed:
                    write_atomic(file, b"")
            return Row(leaf.name, file, "removed" if removed else "missing")
        changed = False
        data = mod_md.entry_json(staple) if target == "mod_md" else staple.der
        if not _same(file, data):
            if target == "mod_md":
                file.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            write_atomic(file, data)
            changed = True
        if target == "nginx":
            # after the staple: the directive appears only once its file exists
            line = f"ssl_stapling_file {file.absolute()};\n".encode()
            if not _same(snippet_of(file), line):
                write_atomic(snippet_of(file), line)
                changed = True
        return Row(leaf.name, file, "written" if changed else "unchanged", staple)
    except OSError as exc:
        return Row(leaf.name, file, staple=staple,
                   error=ExportError(f"{file}: cannot write or remove: {exc.strerror or exc}"))


def _unlink(path: Path) -> bool:
    """Remove a staple file of ours; anything but a regular file is left alone (an error)."""
    check_replaceable(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _same(file: Path, data: bytes) -> bool:
    """Does the regular file ``file`` hold ``data``? Never reads anything else
    (a FIFO would hang us, /dev/zero fill our memory): write_atomic refuses those."""
    try:
        info = os.lstat(file)
        if not stat.S_ISREG(info.st_mode) or info.st_size != len(data):
            return False
        return file.read_bytes() == data
    except OSError:
        return False  # missing or unreadable: write it


def _reload(term: Terminal, command: str) -> bool:
    """Run the reload command; its output goes to stderr, stdout stays data."""
    term.debug(f"running the reload command: {command}")
    try:
        done = subprocess.run(
            command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=RELOAD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        term.error(f"reload command {command!r} did not finish within {RELOAD_TIMEOUT:g} s; the files stay exported")
        return False
    except OSError as exc:
        term.error(f"reload command {command!r} could not run: {exc.strerror or exc}; the files stay exported")
        return False
    if done.stdout:
        sys.stderr.write(done.stdout.decode(errors="replace"))
        sys.stderr.flush()
    if done.returncode != 0:
        how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else f"exited with {done.returncode}"
        term.error(f"reload command {command!r} {how}; the files stay exported")
        return False
    return True


def _push(term: Terminal, socket_path: Path, rows: list[Row]) -> None:
    """Hand each new staple to the running HAProxy: it reads the files only at (re)load.

    A refused push leaves the row `written` (the file is there for the next
    reload) with the error, and makes the exit code 3. Once the socket does
    not answer at all, the other rows get that error without trying: one
    timeout, not one per certificate.
    """
    unreachable: HAProxyUnreachableError | None = None
    for row in rows:
        if row.action != "written" or row.staple is None:
            continue
        if unreachable is not None:
            row.error = unreachable
            continue
        try:
            set_ocsp_response(socket_path, row.staple.der)
        except HAProxyUnreachableError as error:
            row.error = unreachable = error
        except HAProxyAPIError as error:
            row.error = error
        else:
            term.debug(f"{row.cert}: staple handed to HAProxy at {socket_path}")


def _show(term: Terminal, rows: list[Row]) -> None:
    now = SYSTEM_CLOCK.now()
    styles = {"written": "green", "unchanged": "", "removed": "yellow", "missing": "red", "failed": "red"}
    table = []
    for row in rows:
        s = row.staple
        action = row.action if row.error is None else f"failed: {row.error}"
        style = styles[row.action]
        if row.no_ocsp and row.error is None and row.action in ("missing", "removed"):
            action, style = ("no OCSP" if row.action == "missing" else "removed (no OCSP)"), "dim"
        table.append((row.cert, str(row.file) if row.file else "-", (action, style),
                      s.status if s else "-", fmt.relative(s.next_update, now) if s else "-"))
    print_table(term.out, ("CERTIFICATE", "FILE", "ACTION", "STATUS", "NEXT UPDATE"), table)
