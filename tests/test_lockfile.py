"""Lock files found in our place: a FIFO must not hang us, a symlink must not lead us elsewhere."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest

from engine.locks.fetchlocks import LOCK_FILE
from engine.locks.lockfile import LockFileError, open_lock_file
from tests.cli.conftest import staplectl_path


def test_a_missing_lock_file_is_created_with_its_mode(tmp_path):
    old = os.umask(0o077)
    try:
        fd = open_lock_file(str(tmp_path / "x.lock"))
    finally:
        os.umask(old)
    os.close(fd)
    assert stat.S_IMODE(os.stat(tmp_path / "x.lock").st_mode) == 0o640


def test_an_existing_regular_file_is_opened(tmp_path):
    (tmp_path / "x.lock").write_bytes(b"")
    os.close(open_lock_file(str(tmp_path / "x.lock")))


def test_a_fifo_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "x.lock")
    with pytest.raises(LockFileError, match="is a FIFO: remove it"):
        open_lock_file(str(tmp_path / "x.lock"))  # a plain open() would block here for ever


def test_a_symlink_is_never_followed_nor_its_target_created(tmp_path):
    target = tmp_path / "elsewhere" / "victim"
    target.parent.mkdir()
    (tmp_path / "x.lock").symlink_to(target)
    with pytest.raises(LockFileError, match="is a symbolic link"):
        open_lock_file(str(tmp_path / "x.lock"))
    assert not target.exists()


def test_fetch_with_a_fifo_planted_as_its_lock_file_says_so_and_does_not_hang(pki, home):
    locks = home / "locks"
    locks.mkdir(parents=True, mode=0o750)
    fifo = locks / LOCK_FILE
    os.mkfifo(fifo)
    started = time.monotonic()
    done = subprocess.run(
        [staplectl_path(), "fetch", str(pki.good.chain_path), "--timeout", "3"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "STAPLECTL_HOME": str(home)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"lock file {fifo} is a FIFO" in done.stderr
    assert time.monotonic() - started < 30


def test_the_dbm_providers_lock_file_is_not_followed(tmp_path, pki, home):
    target = tmp_path / "not-a-lock"
    (tmp_path / "c.db.lock").symlink_to(target)
    done = subprocess.run(
        [staplectl_path(), "fetch", str(pki.good.chain_path), "--cache", f"dbm:{tmp_path / 'c.db'}"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "STAPLECTL_HOME": str(home)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "c.db.lock is a symbolic link" in done.stderr
    assert not target.exists()
