"""What an exported nginx staple file is called.

By default after the certificate file's stem (``www.pem`` gives
``www.ocsp``). Where stems repeat, as in certbot's tree where every
certificate is ``live/<name>/fullchain.pem``, those certificates are named
after their directory instead (``<name>.ocsp``), and where that repeats
too, after both (``<dir>-<stem>.ocsp``). ``--name PATTERN`` names them all
explicitly.
"""

from __future__ import annotations

import string
from pathlib import Path

from engine.api import InputError, Leaf

#: the fields a pattern may use
FIELDS = {
    "stem": "the certificate file's name without its extension",
    "file": "the certificate file's name",
    "dir": "the name of the directory holding it (certbot: the certificate's name)",
    "sha1": "the certificate's SHA-1 (httpd's cache id)",
}


def check_pattern(pattern: str) -> str:
    """The pattern, or the InputError saying what is wrong with it."""
    try:
        used = [field for _, field, _, _ in string.Formatter().parse(pattern) if field is not None]
    except ValueError as exc:
        raise InputError(f"--name {pattern!r}: {exc}") from None
    unknown = [field for field in used if field not in FIELDS]
    if unknown or not used:
        known = ", ".join("{" + name + "}" for name in FIELDS)
        what = f"unknown field {{{unknown[0]}}}" if unknown else "no field"
        raise InputError(f"--name {pattern!r}: {what} (use {known})")
    return pattern


def nginx_files(leaves: list[Leaf], directory: Path, pattern: str | None = None) -> dict[str, Path]:
    """Each certificate's staple file (by cert_id); a name that is no plain file
    name is an InputError. Clashes that remain are the caller's to refuse."""
    if pattern is not None:
        names = {leaf.cert_id: _name(pattern, leaf) for leaf in leaves}
    else:
        names = _automatic(leaves)
    for leaf in leaves:
        name = names[leaf.cert_id]
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise InputError(f"{leaf.name}: --name gives {name!r}, which is not a file name")
    return {cert_id: directory / f"{name}.ocsp" for cert_id, name in names.items()}


def _automatic(leaves: list[Leaf]) -> dict[str, str]:
    names = {leaf.cert_id: _name("{stem}", leaf) for leaf in leaves}
    for fallback in ("{dir}", "{dir}-{stem}"):
        repeated = _repeated(names)
        for leaf in leaves:
            if names[leaf.cert_id] in repeated:
                names[leaf.cert_id] = _name(fallback, leaf)
    return names


def _repeated(names: dict[str, str]) -> set[str]:
    seen: dict[str, int] = {}
    for name in names.values():
        seen[name] = seen.get(name, 0) + 1
    return {name for name, count in seen.items() if count > 1}


def _name(pattern: str, leaf: Leaf) -> str:
    assert leaf.path is not None  # exported certificates come from files
    path = leaf.path
    return pattern.format(stem=path.stem, file=path.name, dir=path.parent.name, sha1=leaf.cert_id)
