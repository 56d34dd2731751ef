"""The store's and the disk's faults, as operators meet them: a damaged local
store, a read-only state directory, a full disk.

Every one-shot command says so in one line naming the file and exits 3,
never with a traceback; the prefetch service keeps running, says so once
when it starts and once when it ends (log and metrics), and renews again
as soon as it can write. The disk is a real tmpfs mounted by the test,
filled to the last byte; the read-only directory a real read-only bind
mount. Both need root's mount(2): where it is refused the tests skip,
except under CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_prefetch import log_of, wait_for, write_config
from tests.responder import Behaviour
from tests.servers import free_port

pytestmark = pytest.mark.timeout(180)
_runs = itertools.count()  # the session's PKI names each leaf once


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode == 0:
        return
    message = f"mount {' '.join(args)}: {done.stderr.strip()} (these tests need root's mount(2))"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` seen read-only through a bind mount of itself."""
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    with open(filler, "wb") as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
    with contextlib.suppress(OSError):
        with open(filler, "ab") as handle:  # the last few bytes, one at a time
            while True:
                handle.write(b"\0")
                handle.flush()
    return filler


def damage(store: Path) -> None:
    """Overwrite the store's pages after the first with junk: its header
    still says SQLite, its tables do not."""
    size = store.stat().st_size
    assert size > 3 * 4096, "the store must span several pages to be damaged past its header"
    with open(store, "r+b") as handle:
        handle.seek(4096)
        handle.write(os.urandom(size - 4096))


def one_line_error(ran, *fragments: str) -> None:
    """The outcome every command owes a store fault: exit 3, one line naming the file."""
    assert ran.exit_code == 3, (ran.exit_code, ran.stdout, ran.stderr)
    assert "Traceback" not in ran.stderr + ran.stdout
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    # a command's error line, or the service's log line of the same error
    assert lines[0].startswith("staplectl: error:") or " ERROR " in lines[0], ran.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


COMMANDS = [
    ("fetch", "{cert}"),
    ("warm", "{cert}"),
    ("inspect",),
    ("inspect", "--json"),
    ("export", "--nginx", "{out}", "{cert}"),
    # -q: the service's own info lines (what it loaded) are not the point here
    ("prefetch", "--once", "-q", "--config", "{config}"),
]


def run_each(staplectl, cert: Path, out: Path, config: Path) -> list:
    return [
        (args[0], staplectl(*(a.format(cert=cert, out=out, config=config) for a in args))) for args in COMMANDS
    ]


@pytest.fixture
def warmed(staplectl, pki, responder, home, tmp_path):
    """A local store holding staples of 40 certificates, written and closed."""
    run = next(_runs)
    leaves = [pki.leaf(f"fault-{run}-{n}") for n in range(40)]
    config = write_config(tmp_path / "c.toml", [leaf.chain_path for leaf in leaves])
    assert staplectl("warm", "-q", "--config", config).exit_code == 0
    (tmp_path / "out").mkdir()
    return leaves, config


def test_every_command_on_a_damaged_store_says_so_in_one_line(staplectl, warmed, home, tmp_path):
    leaves, config = warmed
    store = home / "staples.db"
    damage(store)
    for name, ran in run_each(staplectl, leaves[0].chain_path, tmp_path / "out", config):
        if name == "warm" and ran.exit_code == 3 and "failed" in ran.stdout:
            continue  # warm reports each certificate's failure on its own row
        one_line_error(ran, str(store))
    check = staplectl("check", "--config", config)
    assert check.exit_code == 3 and check.stdout.startswith("STAPLECTL UNKNOWN") and str(store) in check.stdout


def test_a_file_that_is_not_a_store_names_it_and_how_to_repair(staplectl, warmed, home, tmp_path):
    leaves, config = warmed
    store = home / "staples.db"
    store.write_bytes(b"not SQLite at all " * 1000)
    for _, ran in run_each(staplectl, leaves[0].chain_path, tmp_path / "out", config):
        one_line_error(ran, str(store), "file is not a database", "move it aside")


def test_in_a_read_only_state_directory_reading_works_and_writing_says_so(staplectl, warmed, home, tmp_path):
    leaves, config = warmed
    before = stored(staplectl("inspect", "--json").json())
    with read_only(home):
        for name, ran in run_each(staplectl, leaves[0].chain_path, tmp_path / "out", config):
            if name in ("inspect", "export"):
                assert ran.exit_code == 0, ran.stderr  # they only read the store
            else:
                one_line_error(ran, str(home), "Read-only file system")
        assert stored(staplectl("inspect", "--json").json()) == before
        check = staplectl("check", "--config", config, "--warn", "1m", "--crit", "10s")
        assert check.exit_code == 0 and check.stdout.startswith("STAPLECTL OK"), check.stdout


def test_a_full_disk_fails_in_one_line_and_loses_nothing_stored(staplectl, warmed, pki, home, tmp_path):
    leaves, config = warmed
    with tmpfs(tmp_path / "small", "1m") as disk:
        env = {"STAPLECTL_HOME": str(disk)}
        assert staplectl("warm", "-q", "--config", config, env=env).exit_code == 0
        before = staplectl("inspect", "--json", env=env).json()
        filler = fill(disk)
        one_line_error(staplectl("fetch", leaves[0].chain_path, env=env), str(disk / "staples.db"),
                       "No space left on device")  # fmt: skip
        reading = staplectl("inspect", "--json", env=env)  # reading needs no space
        assert reading.exit_code == 0 and stored(reading.json()) == stored(before)
        filler.unlink()
        after = staplectl("inspect", "--json", env=env)
        assert after.exit_code == 0 and stored(after.json()) == stored(before)  # nothing stored was lost
        assert staplectl("fetch", leaves[0].chain_path, env=env).exit_code == 0


def stored(listing: dict) -> dict[str, tuple]:
    """What inspect --json says is stored: each entry's staple, not its age."""
    entries = {e["cert_sha1"]: (e["status"], e["this_update"], e["next_update"]) for e in listing["entries"]}
    assert len(entries) == 40
    return entries


def events(proc) -> list[dict]:
    return [json.loads(line) for line in log_of(proc).splitlines()]


def metrics(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        name: float(value) for name, value in (line.rsplit(" ", 1) for line in body.splitlines() if line[:1] != "#")
    }


def test_the_service_rides_out_a_full_disk_and_says_so_once(service, pki, responder, tmp_path):
    # 6-second staples: renewals keep coming while the disk is full
    leaves = [pki.leaf(f"svc-full-{n}") for n in range(5)]
    for leaf in leaves:
        responder.script(leaf, Behaviour(this_update_offset=0, next_update_offset=6))
    config = write_config(
        tmp_path / "c.toml", [leaf.chain_path for leaf in leaves],
        '[prefetch]\nmin_delay = "1s"\nbackoff_base = "1s"\nbackoff_cap = "2s"\n',
    )  # fmt: skip
    port = free_port()
    with tmpfs(tmp_path / "small", "1m") as disk:
        proc = service(config, "--log-format", "json", "--metrics", f"127.0.0.1:{port}", state=disk)
        wait_for(lambda: sum(e["event"] == "updated" for e in events(proc)) >= 5, 30, "the first renewals")
        filler = fill(disk)
        wait_for(lambda: any(e["event"] == "cache_down" for e in events(proc)), 30, "the outage's line")
        wait_for(lambda: any(e["event"] == "state_down" for e in events(proc)), 30, "the state's outage line")
        # while it is full: still running, said once, counted
        seen = events(proc)
        down = [e for e in seen if e["event"] == "cache_down"]
        assert len(down) == 1 and down[0]["reason"] == "cache_unwritable" and down[0]["level"] == "error"
        assert str(disk / "staples.db") in down[0]["message"] and "disk is full" in down[0]["message"]
        figures = metrics(port)
        assert figures["staplectl_cache_up"] == 0
        assert figures['staplectl_cache_outages_total{reason="cache_unwritable"}'] == 1
        assert figures["staplectl_state_up"] == 0
        assert proc.poll() is None
        # space again: it says so once and renews
        filler.unlink()
        wait_for(lambda: any(e["event"] == "cache_up" for e in events(proc)), 30, "the end of the outage")
        ended = len(events(proc))
        wait_for(lambda: sum(e["event"] == "updated" for e in events(proc)[ended:]) >= 5, 30, "renewals again")
        seen = events(proc)
        assert [e["event"] for e in seen].count("cache_down") == 1
        assert [e["event"] for e in seen].count("cache_up") == 1
        assert [e["event"] for e in seen].count("state_up") == 1
        assert not [e for e in seen if e["event"] == "failed" and e["reason"] == "cache_unwritable"]
        figures = metrics(port)
        assert figures["staplectl_cache_up"] == 1 and figures["staplectl_state_up"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert "Traceback" not in log_of(proc)


def test_the_service_on_a_damaged_store_keeps_running_and_says_so_once(service, warmed, home, tmp_path):
    _, config = warmed
    damage(home / "staples.db")
    port = free_port()
    proc = service(config, "--log-format", "json", "--metrics", f"127.0.0.1:{port}")
    wait_for(lambda: any(e["event"] == "cache_down" for e in events(proc)), 30, "the damage's line")
    def damaged() -> float:  # summed over responders
        prefix = 'staplectl_fetch_failures_total{reason="cache_damaged"'
        return sum(value for key, value in metrics(port).items() if key.startswith(prefix))

    wait_for(lambda: damaged() >= 40, 30, "every certificate tried")
    seen = events(proc)
    down = [e for e in seen if e["event"] == "cache_down"]
    assert len(down) == 1 and down[0]["reason"] == "cache_damaged"
    assert "move it aside" in down[0]["message"] and str(home / "staples.db") in down[0]["message"]
    assert not [e for e in seen if e["event"] in ("cache_up", "failed")]  # no flapping, no line per certificate
    assert metrics(port)["staplectl_cache_up"] == 0
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert "Traceback" not in log_of(proc)
