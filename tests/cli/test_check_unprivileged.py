"""check as the monitoring agent runs it: another user, with read access to
the store and the worker's state and nothing more (docs/check.md).

Python itself may live where only root can read (pyenv under /root), so
the process starts as root, loads what check uses, and then becomes
``nobody`` before it runs check: from there on it can do no more than an
agent with read access could. The root run reads only, like the other: it
must change nothing either.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from engine.api import CertState, StateStore, load_leaf
from engine.store.providers import open_provider
from tests.cli.test_check import status_line

NOBODY = 65534

#: runs the command line given once as root on a copy of the state
#: ($REHEARSAL_HOME), its output dropped, so that every module it imports
#: (Typer and the standard library import lazily) is loaded; then becomes
#: nobody and runs it for real, on $STAPLECTL_HOME
AS_NOBODY = """
import contextlib, io, os, sys
import staplectl.app

def run():
    try:
        staplectl.app.main()
    except SystemExit as done:
        return done.code

sys.argv = ["staplectl", *sys.argv[1:]]
real = os.environ["STAPLECTL_HOME"]
os.environ["STAPLECTL_HOME"] = os.environ["REHEARSAL_HOME"]
with contextlib.redirect_stdout(io.StringIO()):
    run()
os.environ["STAPLECTL_HOME"] = real
os.setgroups([])
os.setgid({uid})
os.setuid({uid})
assert os.geteuid() == {uid} and os.getegid() == {uid}
sys.exit(run())
"""


@pytest.fixture
def shared(tmp_path):
    """A directory anyone may read (pytest's own is root's alone)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to become another user")
    path = Path(tempfile.mkdtemp(prefix="staplectl-unprivileged-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def readable_only(root: Path) -> None:
    """Everything under ``root`` root's, readable by others, writable by none but root."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize("service", ["idle", "running"])
def test_check_as_another_user_with_read_access_only(cli, pki, responder, shared, service):
    """``idle``: no process has the store open (no -shm file, and nobody may
    make one); ``running``: the prefetch service holds both files open, as
    root, their -wal and -shm files root's too."""
    home = shared / "state"
    home.mkdir()
    chain = shared / "www.pem"
    shutil.copyfile(pki.good.chain_path, chain)
    env = {"STAPLECTL_HOME": str(home)}
    warmed = cli("warm", chain, env=env)
    assert warmed.exit_code == 0, warmed.stderr
    leaf = load_leaf(chain)
    with StateStore(home / "worker.db") as state:  # a prefetch worker's state beside it
        state.put(CertState(leaf.cert_id, str(chain), str(chain), responder.url, next_attempt=time.time() + 3600))
    held = []
    if service == "running":
        held = [open_provider(f"local:{home / 'staples.db'}"), StateStore(home / "worker.db")]
        held[0].get(leaf.cert_id)
        held[1].get(leaf.cert_id)
        assert (home / "staples.db-shm").exists() and (home / "worker.db-shm").exists()
    rehearsal = Path(tempfile.mkdtemp(prefix="staplectl-rehearsal-"))
    shutil.copytree(home, rehearsal, dirs_exist_ok=True)
    readable_only(shared)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in shared.rglob("*")}

    ran = subprocess.run(
        [sys.executable, "-c", AS_NOBODY.format(uid=NOBODY), "check", str(chain), "--config", "/dev/null"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, **env, "REHEARSAL_HOME": str(rehearsal), "HOME": str(home), "NO_COLOR": "1",
             "COLUMNS": "200"},
    )  # fmt: skip
    shutil.rmtree(rehearsal)
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in shared.rglob("*")}
    for store in held:
        store.close()
    assert ran.returncode == 0, ran.stdout + ran.stderr
    state, summary, _ = status_line(ran)
    assert state == "OK", ran.stdout
    assert "1 staple good" in summary and ran.stderr == ""
    # nothing written, nothing created: it could not have, and it did not try
    assert after == before
    assert not [p for p in shared.rglob("*") if p.stat().st_uid == NOBODY]
    assert all(not p.stat().st_mode & stat.S_IWOTH for p in shared.rglob("*"))
