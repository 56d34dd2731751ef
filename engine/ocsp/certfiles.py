"""Where certificates come from: files, directories and globs.

An operator names certificates the way their server configuration does: a
chain file, a directory of them (``/etc/haproxy/certs``), or a glob
(``/etc/letsencrypt/live/*/fullchain.pem``). A directory holds other things
too (private keys, ``.ocsp`` staples, README files): only the usual
certificate suffixes are read from it, and a file among those that holds no
certificate (a key saved as ``.pem``) is reported, never fatal, so that one
stray file does not keep 100,000 certificates from being renewed.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from engine.ocsp.certs import Leaf, load_leaf
from engine.ocsp.certspec import CertSpec
from engine.errors import InputError, StapleError

#: what a directory is searched for (not recursively)
CERT_SUFFIXES = (".pem", ".crt", ".cer", ".der")
_GLOB_CHARS = frozenset("*?[")


class NoMatchError(InputError):
    """A certificate spec that names no certificate file at all."""

    reason = "no_match"


@dataclass
class LoadResult:
    leaves: list[Leaf] = field(default_factory=list)
    #: (file, or the pattern when it matched nothing; the error saying why)
    problems: list[tuple[Path | str, StapleError]] = field(default_factory=list)


def _candidates(path: str) -> list[str]:
    """A file is itself; a directory is its certificate files.

    On strings, not Paths: pathlib's parsing cost more than the stat, at
    tens of thousands of files.
    """
    if not os.path.isdir(path):
        return [path] if os.path.isfile(path) else []
    try:
        # scandir, not listdir and isfile: the directory says which entries
        # are regular files, a stat per file did (4 µs of 11 per file)
        with os.scandir(path) as entries:
            return [entry.path for entry in entries if entry.name.lower().endswith(CERT_SUFFIXES) and _is_file(entry)]
    except OSError:
        return []  # reported as "matches no file" with the reason below


def _is_file(entry: os.DirEntry[str]) -> bool:
    """os.path.isfile's answer (a symlink is its target), False where it would be."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _why_nothing(spec: CertSpec) -> str:
    path = Path(spec.pattern).expanduser()
    if set(spec.pattern) & _GLOB_CHARS:
        return f"{spec.pattern}: matches no file"
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            return f"{spec.pattern}: matches no file (the directory cannot be read)"
        suffixes = ", ".join(f"*{s}" for s in CERT_SUFFIXES)
        return f"{spec.pattern}: matches no file (a directory with no {suffixes} file in it)"
    return f"{spec.pattern}: matches no file (no such file or directory)"


def _expand(specs: Iterable[CertSpec]) -> tuple[list[tuple[str, CertSpec]], list[CertSpec]]:
    """Every file with the first spec that found it (sorted), and the specs that found none.

    Files as strings: a Path each, and its str() again in the Leaf, cost 4 µs
    per file, at 100,000 of them.
    """
    found: dict[str, CertSpec] = {}
    empty = []
    for spec in specs:
        pattern = os.path.expanduser(spec.pattern)
        matches = glob.glob(pattern) if set(pattern) & _GLOB_CHARS else [pattern]
        files = [f for m in matches for f in _candidates(m)]
        if not files:
            empty.append(spec)
        for file in files:
            # abspath, not resolve(): letsencrypt's live/ names are symlinks
            # whose targets change at every renewal; the operator knows the
            # name they gave.
            found.setdefault(os.path.abspath(file), spec)
    # in the order of Paths (component by component), as files were always
    # listed: with NUL, which no name holds, for the separator, the strings
    # compare as their lists of components do, for a third of the cost
    ordered = sorted(found, key=lambda file: file.replace(os.sep, "\0"))
    return [(file, found[file]) for file in ordered], empty


def expand(specs: Iterable[CertSpec]) -> list[Path]:
    """The certificate files the specs name: absolute, de-duplicated, sorted."""
    return [Path(path) for path, _ in _expand(specs)[0]]


class Loading:
    """The certificates the specs name, loaded one file at a time as they
    are asked for (iterate it), so that a caller can start on the first
    ones while the rest load: warm fetches while it reads.

    ``files`` is known at once; ``problems`` fills as the files are read
    (those of the patterns that matched nothing are there from the start).
    A certificate found in two files is loaded once (from the first file in
    sorted order). Issuers equal by DER are one shared object: with 100,000
    leaves from one CA, one intermediate in memory instead of 100,000.
    """

    def __init__(self, specs: Iterable[CertSpec], verified: Mapping[str, bytes] = {}, keep_der: bool = True) -> None:
        """``verified``: cert_id -> fingerprint of the issuer this host
        verified the leaf with before (engine.ocsp.issuers.find_issuer).
        ``keep_der=False``: leaves without their DER, for a holder of many
        that never sends them anywhere (the prefetch service; engine.ocsp.certs.Leaf)."""
        self._verified = verified
        self._keep_der = keep_der
        self._files, empty = _expand(specs)
        self.files = len(self._files)
        #: (file, or the pattern when it matched nothing; the error saying why)
        self.problems: list[tuple[Path | str, StapleError]] = [
            (spec.pattern, NoMatchError(_why_nothing(spec))) for spec in empty
        ]

    def __iter__(self) -> Iterator[Leaf]:
        # cryptography's certificates hash and compare by their DER
        issuers: dict[x509.Certificate, x509.Certificate] = {}
        seen: set[str] = set()  # cert_ids: the Leaf's own string, not a certificate object each
        for path, spec in self._files:
            try:
                leaf = load_leaf(path, issuer_path=spec.issuer, url_override=spec.url, issuers=issuers,
                                 verified=self._verified, keep_der=self._keep_der)  # fmt: skip
            except StapleError as error:
                self.problems.append((Path(path), error))
                continue
            if leaf.cert_id in seen:
                continue
            seen.add(leaf.cert_id)
            yield leaf


def load_all(
    specs: Iterable[CertSpec],
    *,
    on_files: Callable[[int], None] | None = None,
    verified: Mapping[str, bytes] = {},
    keep_der: bool = True,
) -> LoadResult:
    """Load every leaf the specs name; what cannot be loaded becomes a problem.

    ``on_files`` is told how many files there are before any is read (warm
    starts its worker processes then, to have them ready when loading ends).
    ``verified`` and ``keep_der``: as Loading's.
    """
    loading = Loading(specs, verified, keep_der)
    if on_files is not None:
        on_files(loading.files)
    leaves = list(loading)
    return LoadResult(leaves, loading.problems)
