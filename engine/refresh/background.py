"""A few daemon threads for what would block warm's loop (engine.refresh.fanout):
a fetch lock held elsewhere, https, a lease, a host name lookup. Results
come back through a queue, and a byte on a socket pair wakes the loop's
selector.
"""

from __future__ import annotations

import queue
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

from engine.errors import StapleError, UnexpectedError


class Background:
    """A few daemon threads for what would block the loop; results come
    back through a queue, and a byte on a socket pair wakes the selector.

    Daemon threads, so that Ctrl-C need not wait for a hanging responder's
    deadline: a refresh cut short holds its certificate's fetch lock, which the
    kernel lets go when the process ends.
    """

    def __init__(self, threads: int, selector: selectors.BaseSelector) -> None:
        self._size = threads
        self._threads: list[threading.Thread] = []
        self._outstanding = 0
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Any], None], str] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[Callable[[Any], None], Any]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        selector.register(self._wake_r, selectors.EVENT_READ, self)

    @property
    def busy(self) -> bool:
        """Work submitted whose result the loop has not taken yet."""
        return self._outstanding > 0

    def submit(self, work: Callable[[], Any], then: Callable[[Any], None], name: str) -> None:
        self._outstanding += 1
        if len(self._threads) < self._size:
            thread = threading.Thread(target=self._serve, name=f"fanout-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._jobs.put((work, then, name))

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            work, then, name = job
            try:
                outcome = work()
            except StapleError as error:
                outcome = error
            except Exception as exc:
                outcome = UnexpectedError(f"{name}: unexpected {type(exc).__name__}: {exc}")
            self._done.put((then, outcome))
            try:
                self._wake_w.send(b"!")
            except BlockingIOError:
                pass  # the loop has wake-ups enough waiting

    def drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def results(self) -> list[tuple[Callable[[Any], None], Any]]:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                self._outstanding -= len(out)
                return out

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        self._wake_r.close()
        self._wake_w.close()
