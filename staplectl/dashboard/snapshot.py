"""What the dashboard shows, read in one go: a plain ``Snapshot``.

Reading and showing are kept apart (dolphie's collector and panels): the
``Collector`` reads the cache, the prefetch worker's state and the fetch
locks' figures (per stripe) into a Snapshot, and the app only renders it.
No textual and no rich here, so all of it is tested without a terminal.

The cache is read on ONE thread that the Collector owns, whoever calls
``collect``. The local store keeps one SQLite connection per thread and
closes them only with the provider, so reading from a new thread every
two seconds (what a Textual thread worker is) would leak a connection
per read.

A cache that fails (memcached stopped, a file gone) never ends the
dashboard: the snapshot says so, keeps the last entries it read (marked
with when), and the next read opens the cache afresh, so it recovers on
its own when the cache comes back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from engine.api import (
    DEFAULT_POLICY, STORE_ERRORS, SYSTEM_CLOCK, ActionState, Cache, CacheURIError, CertState, Clock, Entry, Found,
    FreshnessPolicy, Heartbeat, HistoryEntry, Inspection, KnownCertificates, Leaf, ResponderHealth, ResponderState,
    StapleError, StateStore, StripeStats, ValidationOptions, inspect_entry, open_provider, read_stats, redact,
)


@dataclass(frozen=True)
class Item:
    """One certificate: configured, found in the cache, or known to the worker."""

    cert_id: str
    #: what an operator calls it: its file, else its subject, else its id
    name: str
    configured: bool
    #: what a refresh needs; None for an entry whose certificate we cannot load
    leaf: Leaf | None = None
    cert: x509.Certificate | None = None
    #: None: nothing in the cache for it
    inspection: Inspection | None = None
    der: bytes = b""
    state: CertState | None = None
    #: why the certificate is not (fully) known, e.g. its file moved
    note: str | None = None


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    cache_uri: str
    items: tuple[Item, ...] = ()
    policy: FreshnessPolicy = DEFAULT_POLICY
    workers: tuple[Heartbeat, ...] = ()
    #: the prefetch service's renewal actions, as it last saved them
    actions: tuple[ActionState, ...] = ()
    stripes: tuple[StripeStats, ...] = ()
    lock_dir: str = ""
    #: the cache failed at this read: items are those of ``data_at``
    cache_error: str | None = None
    #: when the items were read from the cache (None: never)
    data_at: float | None = None
    state_path: str = ""
    #: False until a prefetch worker has ever written its state file
    state_exists: bool = False
    state_error: str | None = None
    stripes_error: str | None = None
    #: responders marked down (engine.responders.health), shared by every process on the host
    responders_down: tuple[ResponderState, ...] = ()
    #: configured files that could not be loaded, with why
    problems: tuple[str, ...] = ()
    #: prefetch.enabled: whether a worker is expected at all
    prefetch_expected: bool = True
    #: the dashboard runs the worker itself (--prefetch)
    in_process: bool = False
    #: the worker's history of ``history_for`` (the detail screen's certificate)
    history_for: str | None = None
    history: tuple[HistoryEntry, ...] = ()
    #: seconds the read took (wall): a slow cache shows here first
    read_seconds: float = 0.0

    def item(self, cert_id: str | None) -> Item | None:
        return next((i for i in self.items if i.cert_id == cert_id), None)


#: what an Inspection of an unchanged entry is worth keeping: re-verifying
#: every signature at every read would cost 100,000 verifications a tick
Memo = dict[str, tuple[tuple[bytes, int, str | None], Inspection]]


def _inspect(entry: Entry, found: Found, now: float, policy: FreshnessPolicy,
             options: ValidationOptions, memo: Memo | None) -> Inspection:  # fmt: skip
    # Only what does not change with the clock is reused: rows.py judges
    # the times (expired, due) against each snapshot's own time.
    key = (entry.der, entry.flag, found.path if found.leaf or found.cert else None)
    if memo is not None and entry.der:
        hit = memo.get(entry.cert_id)
        if hit is not None and hit[0] == key:
            return replace(hit[1], meta=entry.meta, expires_at=entry.expires_at)
    inspection = inspect_entry(entry, now, found=found, policy=policy, options=options)
    if memo is not None and entry.der:
        memo[entry.cert_id] = (key, inspection)
    return inspection


def build_items(
    now: float,
    *,
    leaves: Iterable[Leaf],
    entries: Iterable[Entry] | None,
    states: Mapping[str, CertState] | None = None,
    known: KnownCertificates | None = None,
    policy: FreshnessPolicy = DEFAULT_POLICY,
    options: ValidationOptions = ValidationOptions(),
    memo: Memo | None = None,
    paths_from_cache: bool = False,
) -> tuple[Item, ...]:
    """Configured leaves, cache entries and worker states, as one item per certificate.

    ``paths_from_cache``: an entry's metadata may name the certificate's
    file. Only for a store nobody else writes (the local store, a dbm
    file): a path from a shared cache is never opened (a FIFO would hang
    us, /dev/zero fill our memory, a planted PEM vouch for a forgery).

    Pure but for ``known`` loading a certificate file that an entry's
    metadata names (an entry httpd or another host wrote).
    """
    leaves = list(leaves)
    states = states or {}
    known = known or KnownCertificates(leaves)
    configured = {leaf.cert_id: leaf for leaf in leaves}
    by_id = {e.cert_id: e for e in entries or ()}
    items = []
    for cert_id in dict.fromkeys([*configured, *by_id, *states]):
        entry, state = by_id.get(cert_id), states.get(cert_id)
        meta = (entry.meta if entry else None) or {}
        named = meta.get("cert_path")
        from_cache, unopened = (named, None) if paths_from_cache else (None, named)
        found = known.find(cert_id, [from_cache, state.path if state else None], unopened=unopened)
        inspection = _inspect(entry, found, now, policy, options, memo) if entry else None
        leaf = found.leaf
        cert = leaf.cert if leaf else found.cert
        name = (
            leaf.name if leaf else found.path or (state.name if state else None)
            or (inspection.subject if inspection else None) or f"unknown certificate {cert_id[:16]}"
        )  # fmt: skip
        items.append(Item(
            cert_id=cert_id, name=name, configured=cert_id in configured, leaf=leaf, cert=cert,
            inspection=inspection, der=entry.der if entry else b"", state=state, note=found.note,
        ))  # fmt: skip
    return tuple(sorted(items, key=lambda i: (i.name, i.cert_id)))


class Collector:
    """Reads everything a Snapshot holds; one read at a time, on its own thread."""

    def __init__(
        self,
        *,
        cache_uri: str,
        leaves: list[Leaf],
        lock_dir: Path,
        state_path: Path,
        policy: FreshnessPolicy = DEFAULT_POLICY,
        options: ValidationOptions = ValidationOptions(),
        problems: tuple[str, ...] = (),
        prefetch_expected: bool = True,
        in_process: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        read_stripes: Callable[[Path], list[StripeStats]] = read_stats,
    ) -> None:
        self.cache_uri = cache_uri
        self.leaves = leaves
        self.lock_dir = lock_dir
        self.state_path = state_path
        self.policy = policy
        self.options = options
        self.problems = problems
        self.prefetch_expected = prefetch_expected
        self.in_process = in_process
        self.clock = clock
        self._read_stripes = read_stripes
        self._known = KnownCertificates(leaves)
        self._memo: Memo = {}
        self._cache: Cache | None = None
        self._state: StateStore | None = None
        self._last_entries: list[Entry] | None = None
        self._data_at: float | None = None
        self._io = ThreadPoolExecutor(1, thread_name_prefix="dashboard-read")
        self._lock = threading.Lock()
        # A URI that cannot work is the operator's mistake: say so now, before
        # any screen; a cache that is merely down is shown, and retried.
        try:
            self._io.submit(self._open_cache).result()
        except CacheURIError:
            self._io.shutdown(wait=False)
            raise
        except (StapleError, *STORE_ERRORS):
            pass

    def _open_cache(self) -> Cache:
        if self._cache is None:
            self._cache = Cache(open_provider(self.cache_uri, read_only=True))
        return self._cache

    def collect(self, detail: str | None = None) -> Snapshot:
        """A fresh Snapshot; ``detail`` also reads that certificate's history."""
        with self._lock:  # never two reads at once, whoever asks
            return self._io.submit(self._collect, detail).result()

    def _collect(self, detail: str | None) -> Snapshot:
        started = time.monotonic()
        now = self.clock.now()
        cache_error = None
        try:
            self._last_entries = self._open_cache().entries()
            self._data_at = now
        except (StapleError, *STORE_ERRORS) as error:
            cache_error = str(error) or type(error).__name__
            self._drop_cache()
        states, workers, history, state_error = self._read_state(detail)
        try:
            stripes, stripes_error = tuple(self._read_stripes(self.lock_dir)), None
        except (StapleError, OSError) as error:
            stripes, stripes_error = (), str(error)
        responders_down = tuple(ResponderHealth(self.lock_dir).down().values())
        actions = self._read_actions() if state_error is None else ()
        items = build_items(
            now, leaves=self.leaves, entries=self._last_entries, states=states, known=self._known,
            policy=self.policy, options=self.options, memo=self._memo,
            paths_from_cache=self._cache is not None and not self._cache.shared,
        )  # fmt: skip
        return Snapshot(
            taken_at=now, cache_uri=redact(self.cache_uri), items=items, policy=self.policy,
            workers=tuple(workers), actions=actions, stripes=stripes, lock_dir=str(self.lock_dir), responders_down=responders_down,
            cache_error=cache_error, data_at=self._data_at, state_path=str(self.state_path),
            state_exists=self._state is not None, state_error=state_error, stripes_error=stripes_error,
            problems=self.problems, prefetch_expected=self.prefetch_expected, in_process=self.in_process,
            history_for=detail, history=tuple(history), read_seconds=time.monotonic() - started,
        )  # fmt: skip

    def _read_state(
        self, detail: str | None
    ) -> tuple[dict[str, CertState], list[Heartbeat], list[HistoryEntry], str | None]:
        # Never created here (as inspect): before any worker ran there is
        # nothing to show, and the dashboard may run as a reader only.
        if self._state is None and self.state_path.exists():
            try:
                self._state = StateStore(self.state_path, read_only=True)
            except StapleError as error:
                return {}, [], [], str(error)
        if self._state is None:
            return {}, [], [], None
        try:
            states = {s.cert_id: s for s in self._state.all()}
            history = self._state.history(detail) if detail else []
            return states, self._state.workers(), history, None
        except StapleError as error:
            return {}, [], [], str(error)

    def _read_actions(self) -> tuple[ActionState, ...]:
        if self._state is None:
            return ()
        try:
            return tuple(self._state.actions())
        except StapleError:
            return ()  # shown as the state's error on the next read, if it lasts

    def _drop_cache(self) -> None:
        cache, self._cache = self._cache, None
        if cache is not None:
            try:
                cache.close()
            except (StapleError, *STORE_ERRORS):
                pass  # it is broken already; a new one is opened next time

    def close(self) -> None:
        def close_all() -> None:
            self._drop_cache()
            if self._state is not None:
                self._state.close()

        try:
            # A read stuck on a dead server ends with the cache's own
            # timeout; quitting does not wait for it longer than this.
            self._io.submit(close_all).result(timeout=5)
        except TimeoutError:
            pass
        finally:
            self._io.shutdown(wait=False)


class StaticCollector:
    """Hands out given snapshots, one per read, the last one again and again.

    For tests and screenshots: fixed data, and a sequence of reads (the
    lock figures' history needs more than one) without any I/O.
    """

    def __init__(self, *snapshots: Snapshot, histories: Mapping[str, tuple[HistoryEntry, ...]] | None = None) -> None:
        self.snapshots = list(snapshots)
        self.histories = dict(histories or {})
        self.calls = 0

    def collect(self, detail: str | None = None) -> Snapshot:
        snapshot = self.snapshots[min(self.calls, len(self.snapshots) - 1)]
        self.calls += 1
        return replace(snapshot, history_for=detail, history=self.histories.get(detail or "", ()))

    def close(self) -> None:
        pass
