"""One object per lock file (or lock directory) for all of this process's
users, and what becomes of them in a forked child.

The cache mutex (engine.store.mutex) and the fetch locks
(engine.locks.fetchlocks) both keep one descriptor per path and process,
shared by every user in the process, because two descriptors of one file
in one process would not exclude each other's threads. After a fork the
child must not use the parent's: the registry's lock may have been held
by a thread that does not exist in the child, and an inherited descriptor
shares the parent's locks. ``after_fork`` says, for each object, whether
the child keeps it (remade for itself) or forgets it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    def __init__(self, after_fork: Callable[[T], bool]) -> None:
        """``after_fork(obj)`` runs in a forked child for each object: True keeps it."""
        self._after_fork = after_fork
        self._lock = threading.Lock()
        self.objects: dict[str, T] = {}
        os.register_at_fork(after_in_child=self._forked)

    @contextmanager
    def locked(self) -> Iterator[dict[str, T]]:
        """The objects by key, while no other thread changes them."""
        with self._lock:
            yield self.objects

    def _forked(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at fork
        self.objects = {key: obj for key, obj in self.objects.items() if self._after_fork(obj)}
