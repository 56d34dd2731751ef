"""Open file description locks on byte ranges (Linux ``F_OFD_*``).

Why these and not flock or POSIX record locks:

- a record lock (``F_SETLK``) belongs to the process and is dropped when any
  descriptor of the file is closed, by any code (SQLite's own locks die
  that way: see docs/design.md); an OFD lock belongs to the open file
  description, like a flock, and is dropped only when its last descriptor
  closes, or its holder dies;
- unlike a flock, it locks a byte range: one file holds a lock per
  certificate, per responder or per slot, each independent of the others.

The threads of one process that share a descriptor share its locks: two of
them never exclude each other through it. Callers put a thread lock in
front (engine.locks.fetchlocks) or give each holder its own descriptor
(engine.responders.health).

A range may lie far past the end of the file: nothing is written there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

#: struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks)
_FLOCK = struct.Struct("hh4xqqi4x")
_BUSY = (errno.EAGAIN, errno.EACCES)


def try_lock(fd: int, offset: int, length: int = 1) -> bool:
    """Take the write lock on ``[offset, offset + length)`` if no other description holds it."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, length, 0))
    except OSError as exc:
        if exc.errno in _BUSY:
            return False
        raise
    return True


def lock(fd: int, offset: int, length: int = 1) -> None:
    """Wait, in the kernel and without the GIL, for the write lock on the range."""
    fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, length, 0))


def unlock(fd: int, offset: int, length: int = 1) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, offset, length, 0))
