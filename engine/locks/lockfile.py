"""Opening a lock file that someone else may have put in our place.

A lock file is only ever locked (flock, or OFD byte-range locks, which need
it open for writing), never read or written. What we find at its path
may not be ours: a FIFO would hang a plain open() until a writer comes
(forever, whatever the command's timeout), a symlink would make us create
or lock a file elsewhere, a device is nobody's lock. So: O_NOFOLLOW,
O_NONBLOCK (a FIFO opens at once, then is refused), and a regular file or
nothing.
"""

from __future__ import annotations

import errno
import os
import stat

from engine.errors import InputError

FILE_MODE = 0o640


class LockFileError(InputError):
    """A lock file's path holds something we refuse to lock (or a link to it)."""

    reason = "bad_lock_file"


def open_lock_file(path: str, mode: int = FILE_MODE, *, writable: bool = False) -> int:
    """A descriptor of the regular file ``path``, created ``mode`` exactly when missing.

    ``writable``: open it for writing too, as a write lock by fcntl needs.
    """
    access = os.O_RDWR if writable else os.O_RDONLY
    flags = access | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, mode)  # exactly, whatever the umask
        return fd
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockFileError(f"lock file {path} is a symbolic link: remove it (staplectl makes its own)") from None
        raise
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        what = "a FIFO" if stat.S_ISFIFO(kind) else "a directory" if stat.S_ISDIR(kind) else "not a regular file"
        raise LockFileError(f"lock file {path} is {what}: remove it (staplectl makes its own)")
    return fd
