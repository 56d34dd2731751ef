"""The worker's state store: round trips, history, heartbeats, file modes, and
readers in other processes while a writer works."""

from __future__ import annotations

import multiprocessing
import os
import stat
import sqlite3

import pytest

from engine.refresh.worker_state import (
    HISTORY,
    CertState,
    Heartbeat,
    HistoryEntry,
    StateStore,
    StateStoreError,
    default_path,
)

FORK = multiprocessing.get_context("fork")
PATIENCE = 30.0
T0 = 1_700_000_000.0


def state(n: int, **changes) -> CertState:
    fields = dict(
        cert_id=f"{n:040x}", name=f"/etc/ssl/site{n}.pem", path=f"/etc/ssl/site{n}.pem",
        responder="http://ocsp.example.test/", status="good", this_update=T0, next_update=T0 + 86400,
        last_attempt=T0 + 1, last_success=T0 + 1, failures=0, last_error=None, last_reason=None,
        next_attempt=T0 + 43200,
    )  # fmt: skip
    fields.update(changes)
    return CertState(**fields)


@pytest.fixture
def store(tmp_path):
    with StateStore(tmp_path / "state" / "worker.db") as opened:
        yield opened


class TestCertificates:
    def test_round_trip(self, store):
        written = state(1, failures=3, last_error="HTTP 503 from http://ocsp.example.test/", last_reason="http_status")
        store.put(written)
        assert store.get(written.cert_id) == written
        assert store.get("f" * 40) is None

    def test_put_replaces(self, store):
        store.put(state(1))
        store.put(state(1, failures=1, status=None))
        assert store.get(state(1).cert_id).failures == 1
        assert len(store.all()) == 1

    def test_put_many_and_all(self, store):
        store.put_many(state(n) for n in range(1000))
        rows = store.all()
        assert rows == sorted(rows, key=lambda row: row.name)
        assert {row.cert_id: row for row in rows} == {state(n).cert_id: state(n) for n in range(1000)}

    def test_remove_takes_history_too(self, store):
        store.put_many(state(n) for n in range(1200))  # more than one chunk of parameters
        store.put(state(7), HistoryEntry(T0, "updated", "good"))
        store.remove(state(n).cert_id for n in range(1100))
        assert len(store.all()) == 100
        assert store.get(state(7).cert_id) is None
        assert store.history(state(7).cert_id) == []

    def test_to_dict_has_iso_times(self):
        data = state(1, last_success=None).to_dict()
        assert data["this_update"] == "2023-11-14T22:13:20Z"
        assert data["last_success"] is None
        assert data["failures"] == 0 and data["cert_sha1"] == state(1).cert_id


class TestHistory:
    def test_last_events_oldest_first(self, store):
        cert = state(1)
        for n in range(HISTORY + 5):
            store.put(cert, HistoryEntry(T0 + n, "failed" if n % 2 else "updated", f"attempt {n}"))
        store.put(state(2), HistoryEntry(T0, "added", "due now"))
        events = store.history(cert.cert_id)
        assert len(events) == HISTORY
        assert [e.detail for e in events] == [f"attempt {n}" for n in range(5, HISTORY + 5)]
        assert events[-1].to_dict() == {"when": "2023-11-14T22:13:44Z", "event": "updated", "detail": "attempt 24"}
        assert len(store.history(state(2).cert_id)) == 1

    def test_put_many_keeps_the_last_events_of_each_certificate(self, store):
        """A load writes one event per certificate for all of them at once:
        those over the limit are trimmed, the others keep what they had."""
        full, roomy = state(1), state(2)
        for n in range(HISTORY):
            store.put(full, HistoryEntry(T0 + n, "updated", f"attempt {n}"))
        store.put(roomy, HistoryEntry(T0, "updated", "attempt 0"))
        store.put_many([full, roomy], [(c.cert_id, HistoryEntry(T0 + 100, "fresh", "restart")) for c in (full, roomy)])
        assert [e.detail for e in store.history(full.cert_id)] == [f"attempt {n}" for n in range(1, HISTORY)] + ["restart"]
        assert [e.detail for e in store.history(roomy.cert_id)] == ["attempt 0", "restart"]


class TestWorkers:
    def test_heartbeats(self, store):
        store.heartbeat("host:1/1", 1, T0, T0 + 5, 100)
        store.heartbeat("host:2/1", 2, T0 + 1, T0 + 6, 3)
        store.heartbeat("host:1/1", 1, T0, T0 + 15, 101)  # the same worker beats again
        beats = {b.worker_id: b for b in store.workers()}
        assert beats["host:1/1"] == Heartbeat("host:1/1", 1, T0, T0 + 15, 101)
        assert len(beats) == 2
        store.forget_worker("host:2/1")
        assert [b.worker_id for b in store.workers()] == ["host:1/1"]

    def test_alive_is_a_pure_function_of_the_beat(self):
        beat = Heartbeat("w", 1, T0, T0 + 100, 5)
        assert beat.alive(T0 + 100)
        assert beat.alive(T0 + 130, max_age=30)
        assert not beat.alive(T0 + 131, max_age=30)
        assert beat.to_dict()["beat"] == "2023-11-14T22:15:00Z"

    def test_long_dead_workers_are_forgotten(self, store):
        store.heartbeat("old", 1, T0, T0, 1)
        store.heartbeat("new", 2, T0, T0 + 2 * 86400, 1)
        assert [b.worker_id for b in store.workers()] == ["new"]


class TestFiles:
    def test_default_path_is_in_the_state_directory(self, home):
        assert default_path() == home / "worker.db"

    def test_modes_whatever_the_umask(self, tmp_path):
        old = os.umask(0o077)
        try:
            with StateStore(tmp_path / "fresh" / "worker.db") as fresh:
                fresh.put(state(1))
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(tmp_path / "fresh").st_mode) == 0o750
        for name in ("worker.db", "worker.db-wal", "worker.db-shm"):
            path = tmp_path / "fresh" / name
            if path.exists():  # -wal and -shm exist while a connection is open
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o640, name

    def test_wal_mode(self, store):
        store.put(state(1))
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_closed_store_says_so(self, tmp_path):
        closed = StateStore(tmp_path / "worker.db")
        closed.close()
        with pytest.raises(StateStoreError, match="after close"):
            closed.get("0" * 40)

    def test_unopenable_path_is_a_state_error(self, tmp_path):
        (tmp_path / "file").write_text("")
        with pytest.raises(StateStoreError, match="cannot|failed"):
            StateStore(tmp_path / "file" / "worker.db")


# -- readers in other processes while one writes --------------------------------


def _writer(path, rounds, ready, done):
    with StateStore(path) as store:
        for generation in range(rounds):
            # every row of one round carries the same failure count: a reader
            # that sees two different counts saw half a transaction
            store.put_many(state(n, failures=generation) for n in range(300))
            if generation == 0:
                ready.set()
    done.set()


def _reader(path, ready, done, results):
    ready.wait(PATIENCE)
    reads = 0
    try:
        with StateStore(path) as store:
            while not done.is_set() or reads < 3:
                rows = store.all()
                counts = {row.failures for row in rows}
                if len(rows) != 300 or len(counts) != 1:
                    results.put(f"torn read: {len(rows)} rows, failure counts {sorted(counts)}")
                    return
                reads += 1
        results.put(f"ok {reads}")
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(f"error {exc!r}")


def test_two_processes_read_while_one_writes(tmp_path):
    path = tmp_path / "worker.db"
    StateStore(path).close()
    ready, done, results = FORK.Event(), FORK.Event(), FORK.Queue()
    readers = [FORK.Process(target=_reader, args=(path, ready, done, results)) for _ in range(2)]
    writer = FORK.Process(target=_writer, args=(path, 200, ready, done))
    for process in (*readers, writer):
        process.start()
    outcomes = [results.get(timeout=PATIENCE) for _ in readers]
    for process in (*readers, writer):
        process.join(PATIENCE)
        assert process.exitcode == 0
    assert all(outcome.startswith("ok") for outcome in outcomes), outcomes


def test_read_only_shows_what_a_writer_wrote_and_never_writes(tmp_path):
    """inspect and the dashboard show the worker's state with read access alone."""
    path = tmp_path / "worker.db"
    writer = StateStore(path)
    writer.put(CertState("a" * 40, "www.pem", "/etc/ssl/www.pem", "http://ocsp.example/", failures=2))
    writer.heartbeat("host:1/1", 1, 1000.0, 1010.0, 1)
    reader = StateStore(path, read_only=True)
    assert reader.get("a" * 40).failures == 2 and [w.worker_id for w in reader.workers()] == ["host:1/1"]
    assert reader.actions() == []
    with pytest.raises(StateStoreError, match="opened read-only"):
        reader.put(CertState("b" * 40, "api.pem", None, None))
    writer.close()
    reader.close()
    os.chmod(path, 0o444)  # root reads it anyway; the point: no write is even tried
    again = StateStore(path, read_only=True)
    assert again.get("a" * 40) is not None
    again.close()
    with pytest.raises(StateStoreError):
        StateStore(tmp_path / "never-made.db", read_only=True)
    assert not (tmp_path / "never-made.db").exists()
