"""Which certificates a bulk command works on, and the cache it reads.

``warm``, ``check`` and ``export`` all take the same input: PATH arguments
(files, directories, globs) with ``--issuer`` and ``--url`` applying to
every certificate they find, or else the configuration's ``certificates``.
A file that cannot be loaded is a *problem*, reported on its own row and
never fatal to the others (one stray key in a directory must not keep the
other certificates from being warmed); only when nothing at all can be
loaded is the whole run bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.api import CertSpec, InputError, Leaf, Loading, StapleError
from staplectl.config import Config


class NoCertificatesError(InputError):
    reason = "no_certificates"


@dataclass
class Problem:
    """A file (or a pattern that matched nothing) and why it was not loaded."""

    name: str
    error: StapleError

    def error_dict(self) -> dict[str, str]:
        return error_dict(self.error)


@dataclass
class Targets:
    leaves: list[Leaf] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def error_dict(error: StapleError) -> dict[str, str]:
    """An error as every JSON output shows it."""
    return {"reason": error.reason, "message": str(error)}


def specs_for(
    paths: Sequence[str] | None, issuer: Path | None, url: str | None, config: Config
) -> list[CertSpec]:
    """The PATH arguments, else the configuration's certificates.

    ``--issuer``/``--url`` apply to every PATH; with the configuration's
    certificates they fill in where an entry names none of its own.
    """
    if url is not None:
        from engine.api import check_url  # the transport's: only for --url

        check_url(url)  # a bad --url is one error, not one per certificate
    if paths:
        return [CertSpec(str(p), issuer=issuer, url=url) for p in paths]
    return [
        replace(spec, issuer=spec.issuer or issuer, url=spec.url or url) for spec in config.certificates
    ]


def start_loading(paths: Sequence[str] | None, issuer: Path | None, url: str | None, config: Config) -> Loading:
    """The certificates to work on, to be loaded as they are asked for.

    Raises InputError at once when nothing names any (no PATH and no
    certificates in the configuration) or ``--url`` is bad.
    """
    specs = specs_for(paths, issuer, url, config)
    if not specs:
        where = f"under 'certificates' in {config.path}" if config.path else "in a configuration file (--config)"
        raise NoCertificatesError(
            "no certificates to work on: name them as arguments (files, directories or globs) "
            f"or {where}"
        )
    return Loading(specs)


def targets_of(leaves: list[Leaf], loading: Loading) -> Targets:
    """What was loaded; raise InputError only when nothing could be.

    With a single problem (one bad file) its own error is raised, so that
    ``warm bad.pem`` says exactly what ``fetch bad.pem`` says.
    """
    targets = Targets(leaves=leaves, problems=[Problem(str(name), error) for name, error in loading.problems])
    if not targets.leaves:
        if len(targets.problems) == 1:
            raise targets.problems[0].error
        first = targets.problems[0]
        raise NoCertificatesError(
            f"no certificate could be loaded from {len(targets.problems)} files or patterns "
            f"(first: {first.error})"
        )
    return targets


def load_targets(
    paths: Sequence[str] | None,
    issuer: Path | None,
    url: str | None,
    config: Config,
    *,
    on_files: Callable[[int], None] | None = None,
) -> Targets:
    """Load every certificate (see start_loading and targets_of).

    ``on_files``: see engine.ocsp.certfiles.load_all.
    """
    loading = start_loading(paths, issuer, url, config)
    if on_files is not None:
        on_files(loading.files)
    return targets_of(list(loading), loading)


def leaf_dict(leaf: Leaf) -> dict[str, Any]:
    return {"cert": leaf.name, "cert_sha1": leaf.cert_id, "serial": leaf.serial_hex}
