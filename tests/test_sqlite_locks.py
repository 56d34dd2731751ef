"""SQLite's locks survive everything a long-running service does.

The prefetch service keeps connections to the local store and to the
worker's state on several threads for days, while one-shot commands in
other processes open and close the same files. A POSIX lock SQLite holds is
dropped when any descriptor of the file is closed in the process; when
that happened (a thread opening its connection closed a descriptor of its
own), the next command to close its connection deleted the WAL under the
service, and every write the service made after it vanished for everybody
else. These tests run that exact sequence with real processes.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.store.providers.local import LocalProvider
from engine.refresh.worker_state import CertState, StateStore
from tests.providers.contract import cert_id, der_for

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str) -> str:
    """Run ``code`` in a new interpreter (another process, as a one-shot command is)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# What another process does to each database: open it, read, close.
_OPEN_AND_CLOSE = {
    "local": "import sys; from pathlib import Path; from engine.store.providers.local import LocalProvider\n"
    "p = LocalProvider(Path(sys.argv[1])); p.get('0' * 40); p.close()",
    "state": "import sys; from pathlib import Path; from engine.refresh.worker_state import StateStore\n"
    "s = StateStore(Path(sys.argv[1])); s.all(); s.close()",
}
# What a third process reads: is the service's last write there?
_SEES = {
    "local": "import sys; from pathlib import Path; from engine.store.providers.local import LocalProvider\n"
    "print(bool(LocalProvider(Path(sys.argv[1])).get(sys.argv[2])))",
    "state": "import sys; from pathlib import Path; from engine.refresh.worker_state import StateStore\n"
    "print(StateStore(Path(sys.argv[1])).get(sys.argv[2]) is not None)",
}


class _Local:
    name = "local"

    def __init__(self, path: Path) -> None:
        self.store = LocalProvider(path)

    def write(self, key: str) -> None:
        self.store.set(key, der_for(key), 3600)

    def read(self) -> None:
        self.store.get(cert_id("anything"))

    def close(self) -> None:
        self.store.close()


class _State:
    name = "state"

    def __init__(self, path: Path) -> None:
        self.store = StateStore(path)

    def write(self, key: str) -> None:
        self.store.put(CertState(key, f"/certs/{key}.pem"))

    def read(self) -> None:
        self.store.all()

    def close(self) -> None:
        self.store.close()


@pytest.fixture(params=[_Local, _State], ids=["staples.db", "worker.db"])
def service_store(request, tmp_path):
    store = request.param(tmp_path / "state" / f"{request.param.name}.db")
    yield store
    store.close()


def test_a_write_after_another_process_closed_the_store_is_seen_by_a_third(service_store) -> None:
    path = str(service_store.store.path)
    # The service: a connection on one thread, then on another (a worker
    # thread taking its first job), both left open as a service leaves them.
    service_store.write(cert_id("first"))
    other_thread = threading.Thread(target=service_store.read)
    other_thread.start()
    other_thread.join()
    # A one-shot command in another process opens and closes the store.
    _python(_OPEN_AND_CLOSE[service_store.name], path)
    assert Path(path + "-wal").exists(), "the WAL was deleted while the service had the store open"
    # The service's next write reaches everybody.
    key = cert_id("after the other process closed")
    service_store.write(key)
    assert _python(_SEES[service_store.name], path, key) == "True"


def test_a_forked_child_neither_uses_nor_closes_the_parents_connections(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "staples.db")
    provider.set(cert_id("parent"), der_for("parent"), 3600)
    with provider._lent() as parent_conn:
        pass
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()

    def child() -> None:
        try:
            # the child gets a connection of its own, writes, and closes
            # everything it owns: the parent's connection is not among them
            with provider._lent() as conn:
                results.put(conn is not parent_conn)
            provider.set(cert_id("child"), der_for("child"), 3600)
            provider.close()
            parent_conn.total_changes  # noqa: B018 - raises if the child closed it
            results.put("closed")
        except BaseException as exc:
            results.put(repr(exc))

    process = ctx.Process(target=child)
    process.start()
    assert results.get(timeout=30) is True
    assert results.get(timeout=30) == "closed"
    process.join(timeout=30)
    assert process.exitcode == 0
    # The parent's connection still works, and its writes still reach others.
    key = cert_id("parent after the fork")
    provider.set(key, der_for("after"), 3600)
    with provider._lent() as conn:
        assert conn is parent_conn
    assert _python(_SEES["local"], str(provider.path), key) == "True"
    assert _python(_SEES["local"], str(provider.path), cert_id("child")) == "True"
    provider.close()


def test_a_forked_child_leaves_the_worker_states_connection_alone(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "worker.db")
    store.put(CertState(cert_id("parent"), "parent.pem"))
    parent_conn = store._conn
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()

    def child() -> None:
        try:
            store.put(CertState(cert_id("child"), "child.pem"))
            results.put(store._conn is not parent_conn)
            store.close()
            parent_conn.total_changes  # noqa: B018 - raises if the child closed it
            results.put("closed")
        except BaseException as exc:
            results.put(repr(exc))

    process = ctx.Process(target=child)
    process.start()
    assert results.get(timeout=30) is True
    assert results.get(timeout=30) == "closed"
    process.join(timeout=30)
    key = cert_id("parent after the fork")
    store.put(CertState(key, "after.pem"))
    assert store._conn is parent_conn
    assert _python(_SEES["state"], str(store.path), key) == "True"
    assert _python(_SEES["state"], str(store.path), cert_id("child")) == "True"
    store.close()


def _open_at_once(path: Path, barrier, results) -> None:
    barrier.wait()
    try:
        LocalProvider(path).set(cert_id(os.getpid()), der_for("x"), 3600)
        results.put("ok")
    except Exception as exc:
        results.put(repr(exc))


def test_processes_creating_the_store_at_once_all_open_it(tmp_path: Path) -> None:
    # SQLite answers SQLITE_BUSY at once, without its busy timeout, to some
    # of the connections that make a new file WAL together
    ctx = multiprocessing.get_context("fork")
    for round_ in range(8):
        path = tmp_path / f"round-{round_}" / "staples.db"
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier, results)) for _ in range(6)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        assert outcomes == ["ok"] * 6, outcomes


def _descriptors_of(path: Path) -> int:
    """Descriptors this process holds on the database and its -wal and -shm files."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(path))
    return count


def test_threads_that_end_leave_no_connection_open(tmp_path: Path) -> None:
    """The prefetch worker starts threads for each load's first look: each
    thread's connection left open held its page cache and three descriptors
    until the store closed (84 MiB at 100,000 certificates)."""
    provider = LocalProvider(tmp_path / "staples.db")
    provider.set(cert_id("one"), der_for("one"), 3600)
    before = _descriptors_of(provider.path)
    for _ in range(12):
        thread = threading.Thread(target=provider.get_many, args=([cert_id("one")],))
        thread.start()
        thread.join()
    assert _descriptors_of(provider.path) == before
    provider.close()
    assert _descriptors_of(provider.path) == 0


def test_operations_at_once_get_connections_of_their_own_and_surplus_ones_close(tmp_path: Path) -> None:
    from engine.store.sqlitedb import Connections

    conns = Connections()
    opened: list = []

    def open_one():
        opened.append(conn := __import__("sqlite3").connect(":memory:", check_same_thread=False))
        return conn

    many = Connections.IDLE + 2
    inside = threading.Barrier(many + 1)
    done = threading.Event()
    lent: list = []

    def operation() -> None:
        with conns.lend(open_one) as conn:
            lent.append(conn)
            inside.wait(timeout=30)  # every one lent at once
            done.wait(timeout=30)

    threads = [threading.Thread(target=operation) for _ in range(many)]
    for thread in threads:
        thread.start()
    inside.wait(timeout=30)
    assert len({id(conn) for conn in lent}) == many  # never one connection for two operations
    done.set()
    for thread in threads:
        thread.join()
    assert len(conns._idle) == Connections.IDLE
    closed = [conn for conn in opened if conn not in conns._idle]
    assert len(closed) == 2
    for conn in closed:
        with pytest.raises(Exception, match="closed"):
            conn.execute("SELECT 1")
    with conns.lend(open_one) as again:
        assert again in opened  # an idle one, not a new one
    assert len(opened) == many


def test_a_connection_lent_when_the_store_closes_is_closed_not_taken_back(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "staples.db")
    with provider._lent() as conn:
        provider.close()
    assert provider._conns._idle == []
    with pytest.raises(Exception, match="closed"):
        conn.execute("SELECT 1")
    provider.set(cert_id("after"), der_for("after"), 3600)  # a closed store opens again on use, as before
    assert provider.get(cert_id("after")).der == der_for("after")
    provider.close()
