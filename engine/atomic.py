"""Writing files so that a reader sees the old content or the new, never half.

A temporary file in the same directory, fsync, rename: what nginx and
HAProxy need, since they may read a staple file at any moment.

A rename replaces whatever has the name, so it is done only over a regular
file (or nothing): a device node, a FIFO or a symlink in a staple's place
was put there by someone, and is never swapped for a file of ours
(``/dev/null`` replaced by a regular file breaks the host).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import time
from pathlib import Path

#: readable by the server's user, writable by nobody but us
FILE_MODE = 0o644
#: a temporary file of ours this old was left by a writer that died (kill -9)
STALE_AFTER = 600.0
_TMP_SUFFIX = ".tmp"
#: what write_atomic names its temporary files, for the staple files we write
_OUR_TEMPORARY = re.compile(r"^\..+\.(ocsp|stapling|json)\.[A-Za-z0-9_]{8}\.tmp$")


class NotRegularFileError(OSError):
    """The path names something other than a regular file, which we never replace."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(errno.EEXIST, f"{what}, not a regular file: refusing to replace it", str(path))


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
    ):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def check_replaceable(path: Path) -> None:
    """Raise NotRegularFileError unless ``path`` is a regular file or nothing."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(path, _kind(mode))


def write_atomic(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace the regular file ``path`` (or create it) with ``data``, atomically."""
    check_replaceable(path)
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=directory)
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


def check_output(path: Path) -> None:
    """Raise OSError now if ``write_output(path, ...)`` could not write there."""
    _output_target(path)


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` where the operator pointed (``--out``), as the shell's ``>`` would.

    A symbolic link is followed; a regular file (or nothing) is replaced
    atomically; a character device (/dev/stdout, /dev/null) or a FIFO is
    written through; anything else is refused.
    """
    target, mode = _output_target(path)
    if mode is None or stat.S_ISREG(mode):
        write_atomic(target, data)
        return
    # O_NONBLOCK: a FIFO nobody reads is an error now, not a hang
    fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.set_blocking(fd, True)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _output_target(path: Path) -> tuple[Path, int | None]:
    """Where ``write_output`` writes (symlinks followed) and the mode found there."""
    target = Path(os.path.realpath(path))
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        if not target.parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such directory", str(target.parent)) from None
        return target, None
    if stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return target, mode
    raise NotRegularFileError(target, _kind(mode))


def remove_stale_temporaries(directory: Path, older_than: float = STALE_AFTER) -> list[Path]:
    """Remove the temporary files write_atomic left beside staple files in
    ``directory`` when its writer was killed; returns them. A young one may
    be another writer's, mid-write, and is left alone."""
    removed = []
    limit = time.time() - older_than
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not _OUR_TEMPORARY.match(name):
            continue
        path = directory / name
        try:
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_mtime < limit:
                os.unlink(path)
                removed.append(path)
        except OSError:
            continue
    return removed
