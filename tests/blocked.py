"""Waiting until a thread or process is blocked on a lock, so that tests order
events by what happened, not by sleeping and hoping.

- ``wait_for_blocked_lock(path, kind)``: until /proc/locks shows a waiter
  (a line with "->") on a lock of ``path``: "FLOCK" for flock, "OFDLCK" for
  open file description locks. Only a wait in the kernel shows there.
- ``wait_until_blocked_at(thread, line)``: until ``thread`` is on a source
  line containing ``line`` (a blocking call, such as a thread lock's
  acquire). Python cannot say a thread sleeps in a C call, but it can say
  which line it is on; a thread that got through would be past it.
"""

from __future__ import annotations

import linecache
import os
import sys
import threading
import time
from pathlib import Path

PATIENCE = 30.0


def wait_for_blocked_lock(path: Path, kind: str) -> None:
    inode = os.stat(path).st_ino
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        with open("/proc/locks") as handle:
            for line in handle:
                fields = line.split()
                if "->" in fields and fields[fields.index("->") + 1] == kind:
                    if int(fields[-3].rsplit(":", 1)[1]) == inode:
                        return
        os.sched_yield()
    raise AssertionError(f"no one blocked on a {kind} lock of {path} within {PATIENCE} s")


def is_blocked_at(thread: threading.Thread, line: str) -> bool:
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if line in linecache.getline(frame.f_code.co_filename, frame.f_lineno):
            return True
        frame = frame.f_back
    return False


def wait_until_blocked_at(thread: threading.Thread, line: str, *, unless: threading.Event | None = None) -> bool:
    """True once ``thread`` is on ``line``; False if ``unless`` is set first (it got through)."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if unless is not None and unless.is_set():
            return False
        if is_blocked_at(thread, line):
            return True
        os.sched_yield()
    raise AssertionError(f"{thread.name} never reached {line!r} within {PATIENCE} s")
