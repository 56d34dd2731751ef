"""staplectl locks: figures after real fetches, a holder in another process
(alive, then killed), contention, --all, --watch until Ctrl-C, and the states
with nothing or something broken to read."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pty
import select
import signal
import subprocess
import time
import threading

import pytest

from engine.locks.fetchlocks import DEFAULT_STRIPES, LOCK_FILE, FetchLocks, stripe_of
from engine.locks.stats import STATS_FILE
from tests.blocked import wait_for_blocked_lock
from tests.cli.conftest import _env, staplectl_path
from tests.loopback import CONFIG_ALLOW
from tests.test_inspection import sha1

SPAWN = multiprocessing.get_context("spawn")


def sha1_of_text(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()
PATIENCE = 30.0


def hold_certificate(directory: str, cert_id: str, ready, release) -> None:
    """In a child process: hold a certificate's fetch lock until told to let go."""
    with FetchLocks(directory).hold(cert_id):
        ready.set()
        release.wait(PATIENCE)


class Holder:
    """A child process holding one certificate's fetch lock."""

    def __init__(self, directory, cert_id):
        self.ready, self.release = SPAWN.Event(), SPAWN.Event()
        self.process = SPAWN.Process(target=hold_certificate, args=(str(directory), cert_id, self.ready, self.release))

    def __enter__(self):
        self.process.start()
        assert self.ready.wait(PATIENCE), "the child never took the lock"
        return self

    def __exit__(self, *exc):
        # Event.set() waits for sleepers to wake: never set it for a killed child
        if self.process.is_alive():
            self.release.set()
            self.process.join(PATIENCE)
        if self.process.is_alive():
            self.process.kill()


def row_of(data, cert_id):
    stripe = stripe_of(cert_id, DEFAULT_STRIPES)
    return next(r for r in data["rows"] if r["stripe"] == stripe)


def test_fetches_show_up_as_acquisitions(cli, pki):
    for issued in (pki.good, pki.other, pki.rsa):
        assert cli("fetch", issued.chain_path).exit_code == 0
    ran = cli("locks", "--json")
    assert ran.exit_code == 0, ran.stderr
    data = ran.json()
    assert data["stripes"] == DEFAULT_STRIPES and data["acquisitions"] >= 3
    for issued in (pki.good, pki.other, pki.rsa):
        row = row_of(data, sha1(issued))
        assert row["acquisitions"] >= 1 and row["holder_pid"] is None and row["holder_alive"] is False
        assert row["max_hold_seconds"] > 0 and row["avg_hold_seconds"] > 0
    # only stripes that were used, unless --all
    assert all(r["acquisitions"] for r in data["rows"])
    assert len(cli("locks", "--json", "--all").json()["rows"]) == DEFAULT_STRIPES
    table = cli("locks").stdout
    assert "acquired" in table and "contended" in table and f"{data['acquisitions']} acquisitions" in table


def test_holder_in_another_process(cli, home, pki):
    directory = home / "locks"
    cert_id = sha1(pki.good)
    with Holder(directory, cert_id) as holder:
        data = cli("locks", "--json").json()
        row = row_of(data, cert_id)
        assert row["holder_pid"] == holder.process.pid and row["holder_alive"] is True
        assert row["holder_cert_sha1"] == cert_id and row["held_for_seconds"] >= 0 and row["holder_since"].endswith("Z")
        assert data["held"] == 1
        line = next(line for line in cli("locks").stdout.splitlines() if cert_id in line)
        assert str(holder.process.pid) in line and "yes" in line
    row = row_of(cli("locks", "--json").json(), cert_id)
    assert row["holder_pid"] is None and row["acquisitions"] == 1


def test_two_certificates_of_one_stripe_held_at_once_are_both_shown(cli, home):
    directory = home / "locks"
    first = sha1_of_text("first")
    second = next(c for c in (sha1_of_text(f"n{n}") for n in range(10_000))
                  if stripe_of(c, DEFAULT_STRIPES) == stripe_of(first, DEFAULT_STRIPES))  # fmt: skip
    with Holder(directory, first) as one, Holder(directory, second) as two:
        data = cli("locks", "--json").json()
        row = row_of(data, first)
        assert data["held"] == 2 and row["held"] == 2
        assert [(h["cert_sha1"], h["pid"], h["alive"]) for h in row["holders"]] == [
            (first, one.process.pid, True), (second, two.process.pid, True),
        ]  # fmt: skip
        assert row["holder_cert_sha1"] == first  # the longest held
        line = next(line for line in cli("locks").stdout.splitlines() if first in line)
        assert " 2 " in line


def test_a_killed_holder_is_shown_as_crashed(cli, home, pki):
    directory = home / "locks"
    cert_id = sha1(pki.other)
    holder = Holder(directory, cert_id)
    with holder:
        os.kill(holder.process.pid, signal.SIGKILL)
        holder.process.join(PATIENCE)
        row = row_of(cli("locks", "--json").json(), cert_id)
        assert row["holder_pid"] == holder.process.pid and row["holder_alive"] is False
        assert "no (crashed)" in cli("locks").stdout


def test_contention_is_counted(cli, home, pki):
    directory = home / "locks"
    cert_id = sha1(pki.good)
    waited = []
    with Holder(directory, cert_id) as holder:
        locks = FetchLocks(directory)

        def wait_for_it():
            with locks.hold(cert_id) as held:  # no timeout: it waits in the kernel, where /proc/locks shows it
                waited.append(held.waited)

        thread = threading.Thread(target=wait_for_it)
        thread.start()
        wait_for_blocked_lock(directory / LOCK_FILE, "OFDLCK")
        holder.release.set()
        thread.join(PATIENCE)
        locks.close()
    row = row_of(cli("locks", "--json").json(), cert_id)
    assert row["acquisitions"] == 2 and row["contended"] == 1 and row["contended_percent"] == 50.0
    assert waited and row["max_wait_seconds"] >= waited[0] > 0


def test_no_stats_yet_is_an_empty_table(cli, home):
    ran = cli("locks")
    assert ran.exit_code == 0
    assert "no stripe statistics in" in ran.stderr and str(home / "locks") in ran.stderr
    data = cli("locks", "--json").json()
    assert data["rows"] == [] and data["stripes"] == 0 and data["acquisitions"] == 0
    assert not (home / "locks").exists()  # looking never creates it


def test_a_broken_stats_file_names_the_file(cli, home):
    (home / "locks").mkdir(parents=True)
    (home / "locks" / STATS_FILE).write_bytes(b"not stats")
    ran = cli("locks")
    assert ran.exit_code == 3
    assert f"{home / 'locks' / STATS_FILE}: not a fetch lock stats file" in ran.stderr


def test_lock_directory_from_the_configuration(cli, tmp_path, pki):
    elsewhere = tmp_path / "elsewhere"
    config = tmp_path / "c.toml"
    config.write_text(f'[locks]\ndirectory = "{elsewhere}"\n' + CONFIG_ALLOW)
    assert cli("fetch", pki.good.chain_path, "--config", config).exit_code == 0
    data = cli("locks", "--config", config, "--json").json()
    assert data["directory"] == str(elsewhere) and data["acquisitions"] == 1


def test_watch_and_json_do_not_mix(cli):
    ran = cli("locks", "--watch", "--json")
    assert ran.exit_code == 2 and "--watch redraws a table" in ran.stderr


@pytest.mark.parametrize("interval", ["0", "soon"])
def test_bad_interval(cli, interval):
    assert cli("locks", "--watch", "--interval", interval).exit_code == 2


def _as_from_a_terminal() -> None:
    """A command started as from a terminal, SIGINT at its default. A suite
    run in the background (`nohup ... &`: a non-interactive shell ignores
    SIGINT for background jobs) passes that ignored SIGINT on across exec,
    and the watch then never saw its Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_watch_until_ctrl_c_exits_0(home, pki):
    with FetchLocks(home / "locks").hold(sha1(pki.good)):
        pass
    env = dict(os.environ)
    env.update(_env({"TERM": "xterm"}))
    # On a terminal, as an operator watches it: the first table drawn is
    # what says the watch loop runs, and only then comes Ctrl-C.
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [staplectl_path(), "locks", "--watch", "--interval", "0.1"],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=_as_from_a_terminal,
    )  # fmt: skip
    os.close(slave)
    drawn = b""
    try:
        while b"acquisitions" not in drawn:
            ready, _, _ = select.select([master], [], [], PATIENCE)
            assert ready, f"nothing drawn within {PATIENCE} s: {drawn!r}"
            drawn += os.read(master, 65536)
        process.send_signal(signal.SIGINT)
        # Read on while it stops, as a terminal does: a full pty would block
        # its last redraw (and its exit) on a write nobody reads.
        deadline = time.monotonic() + PATIENCE
        while process.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    drawn += os.read(master, 65536)
                except OSError:  # the other side closed
                    break
        _, stderr = process.communicate(timeout=PATIENCE)
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    stdout = drawn.decode(errors="replace")
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "acquired" in stdout and "1 acquisitions" in stdout


def test_responders_down_are_shown(cli, tmp_path, pki, responder, home):
    from engine.ocsp.certs import load_leaf
    from tests.responder import Behaviour

    leaf = load_leaf(pki.leaf("locks-down").chain_path)
    responder.script(leaf.serial, Behaviour(hang=True))
    assert cli("fetch", leaf.path, "--timeout", "0.5").exit_code == 3  # times out: marked down
    data = cli("locks", "--json").json()
    [down] = data["responders_down"]
    assert down["key"] == f"http://127.0.0.1:{responder.port}" and "no complete answer" in down["last_error"]
    assert down["failures"] == 1 and down["down_since"].endswith("Z")
    table = cli("locks")
    assert f"responder http://127.0.0.1:{responder.port} down since" in table.stdout
    # and the next fetch fails at once, saying why
    again = cli("fetch", pki.leaf("locks-down-2").chain_path)
    assert again.exit_code == 3 and "down since" in again.stderr


def test_inspect_says_which_responders_are_down(cli, pki, responder, home):
    from engine.ocsp.certs import load_leaf
    from tests.responder import Behaviour

    fine = load_leaf(pki.leaf("inspect-down-fine").chain_path)
    stuck = load_leaf(pki.leaf("inspect-down-stuck").chain_path)
    assert cli("fetch", fine.path).exit_code == 0
    responder.script(stuck.serial, Behaviour(hang=True))
    assert cli("fetch", stuck.path, "--timeout", "0.5").exit_code == 3  # the responder is down now
    [row] = [e for e in cli("inspect", "--json").json()["entries"] if e["cert_sha1"] == fine.cert_id]
    assert row["responder_down"]["key"] == f"http://127.0.0.1:{responder.port}"
    assert "responder-down" in cli("inspect").stdout
    assert "responder down since" in cli("inspect", fine.path).stdout


def test_piped_every_column_whole_and_in_a_terminal_what_fits_80_columns(cli, home, pki):
    """`locks | cat` squeezed headers to `st... acqui...`; 80 columns wrapped rows."""
    from rich.console import Console

    from engine.api import read_stats
    from staplectl.commands.locks import HEADERS, render

    with FetchLocks(home / "locks").hold(sha1(pki.good)):
        piped = cli("locks", "--all")
        narrow = Console(width=80, record=True, color_system=None)
        narrow.print(render(home / "locks", read_stats(home / "locks"), False, time.time(), 80))
    header = piped.stdout.splitlines()[0]
    assert header.split("  ")[0] == "stripe" and all(name in header for name in HEADERS)
    lines = narrow.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert "longest held" in lines[0] and sha1(pki.good)[:12] in "\n".join(lines)  # the holder, shortened
