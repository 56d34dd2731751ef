"""The renewal actions the configuration names, as the engine's ActionRunner
runs them (engine/refresh/actions.py: batching, min_interval, retries,
expiry): each brings what a server staples in line with the cache.

- nginx: the staple files and their snippets, as ``export --nginx`` writes
  them, then the reload command, only when a file changed;
- haproxy: ``<cert>.ocsp`` beside each certificate (``export --haproxy``)
  and/or each new staple pushed through the admin socket, which needs no
  reload (HAProxy drops an expired staple by itself);
- command: any command, with the certificates in its environment.

A run re-reads each certificate's staple from the cache, so whatever
happened meanwhile (another renewal, an expiry) is what gets written; a
staple no longer servable has its file removed at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.api import (
    SYSTEM_CLOCK, ActionError, ActionResult, Leaf, StapleError, StapleReader, expires_at, remove_stale_temporaries,
    staple_end,
)
from staplectl.action_config import ActionSpec
from staplectl.export_names import nginx_files
from staplectl.exporting import Row, clashes, export_one, push, run_command, target_file

#: a certificate list longer than this goes into the environment cut, with a note
ENV_LIMIT = 64 * 1024


class FileAction:
    """nginx's or HAProxy's files (and HAProxy's pushes), then a reload if any changed."""

    def __init__(self, spec: ActionSpec, reader: Callable[[], StapleReader]) -> None:
        self.spec = spec
        self.name = spec.name
        self.min_interval = spec.min_interval
        self._reader = reader
        #: cert_id -> its file, for every loaded certificate (nginx's names depend on them all)
        self._files: dict[str, Path] = {}
        self._clashes: dict[str, Any] = {}

    def load(self, leaves: list[Leaf]) -> None:
        """Every certificate the service keeps: file names are chosen among all of them."""
        with_files = [leaf for leaf in leaves if leaf.path is not None]
        if self.spec.type == "nginx":
            assert self.spec.directory is not None
            self._files = nginx_files(with_files, self.spec.directory, self.spec.naming)
        else:
            self._files = {leaf.cert_id: target_file(leaf, None) for leaf in with_files}
        self._clashes = clashes(with_files, self._files)

    def run(self, leaves: list[Leaf]) -> ActionResult:
        if self.spec.type == "nginx" and not (self.spec.directory and self.spec.directory.is_dir()):
            raise ActionError(f"action {self.name}: directory {self.spec.directory}: no such directory")
        reader = self._reader()
        now = SYSTEM_CLOCK.now()
        ours = [leaf for leaf in leaves if leaf.cert_id in self._files]
        rows: list[Row] = []
        if self.spec.files:
            for directory in {self._files[leaf.cert_id].parent for leaf in ours}:
                remove_stale_temporaries(directory)
            try:
                staples = reader.cached_many(ours)
            except StapleError as error:
                raise ActionError(f"action {self.name}: cannot read the cache ({error}); "
                                  f"{self._drop_expired(ours, now)}") from None  # fmt: skip
            for leaf in ours:
                if leaf.cert_id in self._clashes:
                    rows.append(Row(leaf.name, self._files[leaf.cert_id], error=self._clashes[leaf.cert_id]))
                else:
                    target = "nginx" if self.spec.type == "nginx" else "haproxy"
                    rows.append(export_one(reader, leaf, staples[leaf.cert_id], self._files[leaf.cert_id], now, target))
        else:
            rows = [_pushable(reader, leaf, now) for leaf in ours]
        if self.spec.socket is not None:
            push(self.spec.socket, rows)
        changed = [row for row in rows if row.result in ("written", "removed")]
        errors = [f"{row.cert}: {row.error}" for row in rows if row.error is not None]
        if changed and self.spec.reload:
            error, _ = run_command(self.spec.reload, f"action {self.name}: reload command")
            if error is not None:
                errors.append(error)
        expires = {leaf.cert_id: _end(row) for leaf, row in zip(ours, rows)}
        if errors:
            raise ActionError("; ".join(errors[:3]) + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""))
        written = sum(row.result == "written" for row in rows)
        removed = sum(row.result == "removed" for row in rows)
        reloaded = " and reloaded" if changed and self.spec.reload else ""
        pushed = ", pushed to HAProxy" if self.spec.socket is not None and written else ""
        return ActionResult(f"{written} written, {removed} removed of {len(ours)}{pushed}{reloaded}", expires)


    def _drop_expired(self, leaves: list[Leaf], now: float) -> str:
        """With the cache unreadable, what is served and expired goes all the same:
        the staple in each file is judged from the file itself."""
        target = "nginx" if self.spec.type == "nginx" else "haproxy"
        removed = [
            export_one(None, leaf, None, self._files[leaf.cert_id], now, target)
            for leaf in leaves
            if leaf.cert_id not in self._clashes and _expired_file(self._files[leaf.cert_id], now)
        ]
        removed = [row for row in removed if row.result == "removed"]
        if removed and self.spec.reload:
            error, _ = run_command(self.spec.reload, f"action {self.name}: reload command")
            if error is not None:
                return f"{len(removed)} expired staples removed, but {error}"
        return f"{len(removed)} expired staples removed all the same"


def _expired_file(file: Path, now: float) -> bool:
    """Does this staple file hold a response past its nextUpdate (or none we can read)?"""
    try:
        data = file.read_bytes() if file.is_file() and not file.is_symlink() else b""
    except OSError:
        return False
    if not data:
        return False  # nothing served (HAProxy's emptied file)
    try:
        end = staple_end(data)
    except StapleError:
        return True  # not even a response: nothing a server should staple
    return end is not None and now >= end


def _pushable(reader: StapleReader, leaf: Leaf, now: float) -> Row:
    """A push-only HAProxy action's row: the staple to hand over, if it is servable."""
    staple = reader.cached(leaf)
    if not reader.usable(staple, now):
        return Row(leaf.name, None, "missing")
    return Row(leaf.name, None, "written", staple)


def _end(row: Row) -> float | None:
    staple = row.staple
    if staple is None or row.result not in ("written", "unchanged"):
        return None
    return expires_at(staple.this_update, staple.next_update)


class CommandAction:
    """A command, with the certificates whose staples changed in its environment:
    STAPLECTL_CERTS (their files, one per line) and STAPLECTL_CERT_SHA1S."""

    def __init__(self, spec: ActionSpec, reader: Callable[[], StapleReader]) -> None:
        self.spec = spec
        self.name = spec.name
        self.min_interval = spec.min_interval
        self._reader = reader

    def load(self, leaves: list[Leaf]) -> None:
        pass

    def run(self, leaves: list[Leaf]) -> ActionResult:
        assert self.spec.command is not None
        env = dict(os.environ)
        env["STAPLECTL_CERTS"] = _capped("\n".join(leaf.name for leaf in leaves))
        env["STAPLECTL_CERT_SHA1S"] = _capped("\n".join(leaf.cert_id for leaf in leaves))
        env["STAPLECTL_ACTION"] = self.name
        error, _ = run_command(self.spec.command, f"action {self.name}: command", env)
        if error is not None:
            raise ActionError(error)
        reader, now = self._reader(), SYSTEM_CLOCK.now()
        staples = reader.cached_many(leaves)
        expires = {leaf.cert_id: (expires_at(s.this_update, s.next_update) if reader.usable(s, now) else None)
                   for leaf, s in ((leaf, staples[leaf.cert_id]) for leaf in leaves)}  # fmt: skip
        return ActionResult(f"ran for {len(leaves)} certificates", expires)


def _capped(text: str) -> str:
    if len(text) <= ENV_LIMIT:
        return text
    return text[:ENV_LIMIT].rsplit("\n", 1)[0] + "\n...(cut: too many certificates for the environment)"


def build_actions(specs: list[ActionSpec], reader: Callable[[], StapleReader]) -> list[FileAction | CommandAction]:
    return [CommandAction(spec, reader) if spec.type == "command" else FileAction(spec, reader) for spec in specs]
