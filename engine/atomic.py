"""Writing files so that a reader sees the old content or the new, never half.

A temporary file in the same directory, fsync, rename: what nginx and
HAProxy need, since they may read a staple file at any moment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: readable by the server's user, writable by nobody but us
FILE_MODE = 0o644


def write_atomic(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode & 0o755)  # never world-writable, whatever we are asked
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
