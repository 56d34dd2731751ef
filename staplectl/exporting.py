"""Writing cached staples where servers read them, for `export` and for the
prefetch service's renewal actions (staplectl/renewal_actions.py).

nginx reads ``ssl_stapling_file`` (DER) once at (re)load and serves it with
no time check, and HAProxy reads ``<cert>.ocsp`` at start: a stale file is
stapled until the next reload. So a file is written only with a usable
(current, re-validated) response, and when nothing usable is cached any
existing file is REMOVED, and the server, reloaded, staples nothing rather
than an expired response.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.api import Leaf, Staple, StapleError, check_replaceable, write_atomic
from staplectl import mod_md
from staplectl.haproxy_api import HAProxyAPIError, HAProxyUnreachableError, set_ocsp_response
from staplectl.json_output import staple_fields, time_left
from staplectl.targets import error_dict

#: a reload command that runs longer than this is reported as failed
RELOAD_TIMEOUT = 120.0


class ExportError(StapleError):
    reason = "export_failed"


@dataclass
class Row:
    cert: str
    file: Path | None
    #: written | unchanged | removed | missing | failed
    result: str = "failed"
    staple: Staple | None = None
    error: StapleError | None = None
    #: the certificate names no OCSP responder: no staple is expected, so
    #: none cached (missing, or an old file removed) is not a failure
    no_ocsp: bool = False

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "cert": self.cert,
            "file": str(self.file) if self.file else None,
            "result": self.result,
            "no_ocsp": self.no_ocsp,
            **staple_fields(self.staple, time_left(self.staple, now)),
            "error": error_dict(self.error) if self.error else None,
        }


#: beside each nginx staple, a one-line snippet the server block includes
#: through a glob (`include DIR/<stem>.stapling*;`): see docs/nginx.md
SNIPPET_SUFFIX = ".stapling"


def target_file(leaf: Leaf, mod_md_dir: Path | None) -> Path:
    """mod_md's file, else HAProxy's (beside the certificate): nginx's are export_names'."""
    assert leaf.path is not None  # loaded from a file
    if mod_md_dir is not None:
        return mod_md.entry_path(mod_md_dir, leaf.cert_id)
    return leaf.path.with_name(leaf.path.name + ".ocsp")


def clashes(leaves: list[Leaf], files: dict[str, Path]) -> dict[str, StapleError]:
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


def export_one(reader: Any, leaf: Leaf, staple: Staple | None, file: Path, now: float, target: str) -> Row:
    try:
        if staple is None or not reader.usable(staple, now):
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


def run_command(command: str, what: str, env: Mapping[str, str] | None = None) -> tuple[str | None, bytes]:
    """Run a shell command (a reload, an action's): (None, its output) when it
    succeeded, else (what went wrong, its output)."""
    try:
        done = subprocess.run(
            command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=RELOAD_TIMEOUT, env=dict(env) if env is not None else None,
        )
    except subprocess.TimeoutExpired:
        return f"{what} {command!r} did not finish within {RELOAD_TIMEOUT:g} s", b""
    except OSError as exc:
        return f"{what} {command!r} could not run: {exc.strerror or exc}", b""
    if done.returncode != 0:
        how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else f"exited with {done.returncode}"
        return f"{what} {command!r} {how}", done.stdout
    return None, done.stdout


def push(socket_path: Path, rows: list[Row]) -> None:
    """Hand each new staple to the running HAProxy: it reads the files only at (re)load.

    A refused push leaves the row `written` (the file is there for the next
    reload) with the error, and makes the exit code 3. Once the socket does
    not answer at all, the other rows get that error without trying: one
    timeout, not one per certificate.
    """
    unreachable: HAProxyUnreachableError | None = None
    for row in rows:
        if row.result != "written" or row.staple is None:
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
