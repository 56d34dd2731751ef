"""The embedded SQLite store: the contract, plus file modes, crashes and bad paths."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from engine.clock import FrozenClock
from engine.errors import CacheUnavailableError
from engine.store.providers.local import LocalProvider
from tests.providers.contract import ProviderContract, cert_id, der_for


class TestLocalProvider(ProviderContract):
    @pytest.fixture
    def clock(self) -> FrozenClock:
        return FrozenClock(time.time())

    @pytest.fixture
    def uri(self, tmp_path: Path) -> str:
        return f"local:{tmp_path / 'state' / 'staples.db'}"

    @pytest.fixture
    def provider(self, uri: str, clock: FrozenClock) -> Iterator[LocalProvider]:
        provider = LocalProvider(Path(uri.removeprefix("local:")), clock=clock)
        self._clock = clock
        yield provider
        provider.close()

    def now(self) -> float:
        return self._clock.now()

    def age(self, provider: LocalProvider, seconds: float) -> None:
        self._clock.advance(seconds)


def _rows(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT cert_id FROM staples ORDER BY cert_id")]


def test_expired_rows_are_purged_on_a_later_write(tmp_path: Path) -> None:
    clock = FrozenClock(1_700_000_000)
    path = tmp_path / "staples.db"
    with LocalProvider(path, clock=clock) as provider:
        provider.set(cert_id("old"), der_for("old"), 10)
        clock.advance(120)  # past the ttl and past the purge interval
        provider.set(cert_id("new"), der_for("new"), 600)
    assert _rows(path) == [cert_id("new")]


def test_files_are_not_world_accessible(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "state" / "staples.db"
        with LocalProvider(path) as provider:
            provider.set(cert_id(1), der_for("one"), 600)
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
            assert stat.S_IMODE(path.stat().st_mode) == 0o640
            # SQLite gives its -wal and -shm files the database file's mode.
            extras = list(path.parent.glob("staples.db-*"))
            assert {p.name for p in extras} == {"staples.db-wal", "staples.db-shm"}
            for extra in extras:
                assert stat.S_IMODE(extra.stat().st_mode) == 0o640, extra
    finally:
        os.umask(old_umask)


def test_a_path_under_a_file_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a directory")
    path = tmp_path / "plain-file" / "staples.db"
    with pytest.raises(CacheUnavailableError, match=str(path)):
        LocalProvider(path)


def test_a_file_that_is_not_a_database_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "staples.db"
    path.write_bytes(b"this is not SQLite, " * 100)
    with pytest.raises(CacheUnavailableError, match="not a database") as info:
        LocalProvider(path)
    assert str(path) in str(info.value)


def _open_error(path: Path, results: Any) -> None:
    if os.geteuid() == 0:
        os.setuid(65534)  # root writes anywhere: try it as nobody
    try:
        LocalProvider(path)
        results.put("opened")
    except CacheUnavailableError as exc:
        results.put(str(exc))


def test_a_directory_without_write_permission_names_the_path() -> None:
    # Outside tmp_path, whose parents only root may enter.
    top = Path(tempfile.mkdtemp(prefix="staplectl-locked-"))
    try:
        top.chmod(0o755)
        locked = top / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        ctx = multiprocessing.get_context("fork")  # the child drops root, not us
        results = ctx.Queue()
        child = ctx.Process(target=_open_error, args=(locked / "staples.db", results))
        child.start()
        message = results.get(timeout=30)
        child.join()
        assert str(locked / "staples.db") in message
        assert "Permission denied" in message
    finally:
        shutil.rmtree(top)


_WRITER = """
import sys
from pathlib import Path
from engine.store.providers.local import LocalProvider
from tests.providers.contract import cert_id, der_for

provider = LocalProvider(Path(sys.argv[1]))
n = 0
while True:
    provider.set(cert_id(n), der_for(f"crash-{n}"), 3600, meta={"n": n})
    print(n, flush=True)  # after the commit: every number printed is stored
    n += 1
"""


def test_a_crash_mid_write_keeps_every_committed_entry(tmp_path: Path) -> None:
    path = tmp_path / "staples.db"
    root = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert writer.stdout is not None
    committed = []
    for line in writer.stdout:
        committed.append(int(line))
        if len(committed) == 200:
            break
    os.kill(writer.pid, signal.SIGKILL)
    committed += [int(line) for line in writer.stdout]  # printed before the kill
    writer.wait()
    assert writer.returncode == -signal.SIGKILL

    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with LocalProvider(path) as provider:
        found = provider.get_many(cert_id(n) for n in committed)
        assert len(found) == len(committed)
        for n in committed:
            entry = found[cert_id(n)]
            assert entry.der == der_for(f"crash-{n}") and entry.meta == {"n": n}
        provider.set(cert_id("after"), der_for("after"), 600)  # still writable
        assert provider.get(cert_id("after"))


def test_threads_share_one_provider(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "staples.db")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                provider.set(cert_id((t, i)), der_for(f"{t}-{i}"), 600)
                assert provider.get(cert_id((t, i)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(provider.entries())) == 400
    provider.close()
