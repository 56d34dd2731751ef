"""Responder health, shared by every process on the host.

When a CA's responder goes down, it goes down for all of its certificates
at once. Without a shared view, every certificate then waits its own full
timeout, in every process (the prefetch service, a warm, the dashboard's
refresh), one after another. So a responder that timed out or refused a
connection is marked down in a small file beside the locks, where every
process looks before asking it:

- while it is down, one probe at a time goes to it (whoever takes its
  probe lock, an open file description lock on ``responders.lock`` that
  excludes threads and processes alike and vanishes with a crashed
  holder); every other certificate of it fails at once ("responder ...
  down since ..., last error ..."), without a byte on the network, and
  keeps its cached staple;
- probes are spaced by the responder's own backoff (PROBE_BASE doubling,
  +- half, at most PROBE_CAP), on top of each certificate's own;
- except for a staple that would run out before the next probe: its
  request may be the probe now (still one at a time, and at most one per
  PROBE_BASE), since a responder back from a short outage would otherwise
  be found only after staples that it could have renewed had lapsed;
- the first answer from it, to anyone, marks it up again.

The file (``responders.json``) is small and rewritten whole (temporary
file and rename) only when a responder's state changes; readers look at it
again only when its modification time changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.locks import ofd
from engine.atomic import write_atomic
from engine.clock import SYSTEM_CLOCK, Clock, iso
from engine.errors import FetchError, StapleError

STATE_FILE = "responders.json"
PROBE_LOCK_FILE = "responders.lock"
#: seconds between probes of a down responder, doubling from the base; the
#: cap is what "back within a minute" allows: once it answers again, the
#: next probe finds out within PROBE_CAP
PROBE_BASE = 5.0
PROBE_CAP = 60.0
#: what a failure must be to mark its responder down: it did not answer at all
DOWN_REASONS = frozenset({"timeout", "unreachable"})
#: the failures that say a responder is not answering, its down state included
RESPONDER_SILENT = DOWN_REASONS | {"responder_down"}
#: a down responder not heard of for this long is forgotten (it may be gone)
FORGET_AFTER = 7 * 86400.0

class ResponderDownError(FetchError):
    """Another probe is out, or the next is not due: failed at once, nothing sent."""

    reason = "responder_down"
    temporary = True


@dataclass(frozen=True)
class ResponderState:
    key: str
    down_since: float
    last_error: str
    #: consecutive failed probes
    failures: int
    next_probe: float
    #: when the last failure was recorded (0: a file written before this field)
    failed_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "down_since": iso(self.down_since), "next_probe": iso(self.next_probe),
                "failed_at": iso(self.failed_at) if self.failed_at else None}  # fmt: skip


@lru_cache(maxsize=4096)  # a few responders serve most certificates
def responder_key(url: str | None) -> str:
    """What the per-responder limit counts by: scheme, host and port.

    Two URLs on one host (``/ca1``, ``/ca2``) hang together when that host
    hangs, so they share the limit.
    """
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    if not parts.hostname:
        return url
    port = port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}:{port}"


def probe_delay(failures: int, rand: float) -> float:
    """PROBE_BASE doubling per failed probe, spread +- half, never over PROBE_CAP."""
    raw = PROBE_BASE * 2.0 ** min(failures - 1, 32)
    return min(raw * (0.5 + rand), PROBE_CAP)


def _probe_early(state: ResponderState, expires: float | None, now: float) -> bool:
    """May a request whose staple is servable until ``expires`` probe before the next probe is due?

    Only when the staple would lapse first, and PROBE_BASE has passed
    since the last failure: however many staples near their end, the
    responder sees at most one probe per PROBE_BASE.
    """
    return expires is not None and now < expires <= state.next_probe and now >= state.failed_at + PROBE_BASE


class ResponderHealth:
    """The down responders of one lock directory, as this process sees them."""

    def __init__(
        self, directory: Path, *, clock: Clock = SYSTEM_CLOCK, rand: Callable[[], float] = random.random
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self.clock = clock
        self.rand = rand
        self._lock = threading.Lock()
        self._down: dict[str, ResponderState] = {}
        self._mtime: int | None = None

    # -- reading --------------------------------------------------------------

    def down(self) -> dict[str, ResponderState]:
        """Every responder marked down now (by any process)."""
        with self._lock:
            self._reload()
            return dict(self._down)

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            self._down, self._mtime = {}, None
            return
        if mtime == self._mtime:
            return
        self._down, self._mtime = _read(self.path), mtime

    # -- asking a responder -----------------------------------------------------

    def ask(self, key: str, expires: float | None = None) -> Asking:
        """Leave to send one request to the responder ``key`` (scheme://host:port).

        ``expires``: when the staple this request would renew stops being
        servable (None: nothing usable is cached). Raises ResponderDownError
        at once when it is down and this request may not be its probe
        (another probe is out, or the next is not due and the staple
        outlasts it). Report the outcome with ``Asking.done``.
        """
        with self._lock:
            self._reload()
            state = self._down.get(key)
        if state is None:
            return Asking(self, key, None)
        now = self.clock.now()
        if now < state.next_probe and not _probe_early(state, expires, now):
            raise self._refusal(state, f"next probe at {iso(state.next_probe)}")
        probe = self._take_probe(key)
        if probe is None:
            raise self._refusal(state, "another probe is out")
        return Asking(self, key, probe)

    @contextmanager
    def asking(self, key: str, expires: float | None = None) -> Iterator[None]:
        """``ask`` around a block that sends the request; its FetchError is the outcome."""
        asking = self.ask(key, expires)
        try:
            yield
        except FetchError as error:
            asking.done(error)
            raise
        except StapleError:
            asking.done(None)  # it answered; what it said was wrong
            raise
        except BaseException:
            asking.done(None, answered=False)
            raise
        asking.done(None)

    def _refusal(self, state: ResponderState, why: str) -> ResponderDownError:
        return ResponderDownError(
            f"responder {state.key} down since {iso(state.down_since)}, last error: {state.last_error} "
            f"({why}); the cached staple is kept"
        )

    def _take_probe(self, key: str) -> int | None:
        """An open file description holding the probe lock of ``key``, or None."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / PROBE_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        offset = int.from_bytes(hashlib.sha1(key.encode()).digest()[:7], "big")
        try:
            if ofd.try_lock(fd, offset):
                return fd
        except OSError:
            os.close(fd)
            raise
        os.close(fd)
        return None

    # -- writing --------------------------------------------------------------

    def _failed(self, key: str, error: FetchError, *, probe: bool) -> None:
        """It did not answer: down now, or (a probe) down for longer."""
        now = self.clock.now()

        def change(down: dict[str, ResponderState]) -> None:
            before = down.get(key)
            if before is not None and not probe:
                return  # requests sent before it was marked down: they say nothing new
            failures = before.failures + 1 if before else 1
            since = before.down_since if before else now
            down[key] = ResponderState(
                key, since, str(error), failures, now + probe_delay(failures, self.rand()), failed_at=now
            )

        self._update(change)

    def _answered(self, key: str) -> None:
        self._update(lambda down: down.pop(key, None))

    def _update(self, change: Callable[[dict[str, ResponderState]], Any]) -> None:
        """Read, change, write back: serialised among processes by the state file's own flock."""
        self.directory.mkdir(parents=True, exist_ok=True)
        guard = os.open(self.directory / PROBE_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            down = _read(self.path)
            change(down)
            now = self.clock.now()
            down = {k: v for k, v in down.items() if now - v.down_since < FORGET_AFTER}
            _write(self.path, down)
            with self._lock:
                self._down, self._mtime = down, None  # read again next time: the mtime may not have moved
        finally:
            os.close(guard)


class Asking:
    """One request's leave from ResponderHealth.ask; ``done`` once with what came of it."""

    def __init__(self, health: ResponderHealth, key: str, probe: int | None) -> None:
        self.health = health
        self.key = key
        #: the probe lock's descriptor when this request is the down responder's probe
        self.probe = probe

    def done(self, error: FetchError | None, *, answered: bool = True) -> None:
        """``error``: the request's FetchError, None when the responder answered.
        ``answered=False``: it ended without an outcome (cancelled)."""
        try:
            if error is not None and error.reason in DOWN_REASONS:
                self.health._failed(self.key, error, probe=self.probe is not None)
            elif answered and self.probe is not None:
                self.health._answered(self.key)  # the probe got an answer, however bad
        finally:
            if self.probe is not None:
                os.close(self.probe)
                self.probe = None


def _read(path: Path) -> dict[str, ResponderState]:
    try:
        data = json.loads(path.read_text())
        return {key: ResponderState(**value) for key, value in data.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, AttributeError):
        return {}  # a damaged file: start over rather than stop fetching


def _write(path: Path, down: dict[str, ResponderState]) -> None:
    write_atomic(path, json.dumps({key: asdict(state) for key, state in down.items()}).encode(), 0o640)
