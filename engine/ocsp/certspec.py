"""What an operator names as certificates: a file, a directory or a glob.

Apart from engine.ocsp.certfiles, which loads them, so that a
configuration can be read (staplectl config) without loading cryptography.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertSpec:
    """One operator-given source: a file, a directory or a glob.

    ``issuer`` and ``url`` apply to every certificate the pattern finds
    (``--issuer`` and ``--url`` of the command line).
    """

    pattern: str
    issuer: Path | None = None
    url: str | None = None
