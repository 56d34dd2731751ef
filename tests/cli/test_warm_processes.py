"""staplectl warm --processes: worker processes sharing the certificates out
by stripe give the same rows and exit code as one process; a worker that
dies, fails to start or outlives its parent costs its own rows and leaves
nothing running or held. Also how many processes a run gets and how the
certificates are shared among them.

The worker processes are found under their parent in /proc.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from engine.ocsp.certs import load_leaf
from tests.cli.warm_helpers import DUE, cert_id_of, certs_dir, fresh_leaf, rows_by_name
from tests.responder import Behaviour
from tests.servers import free_port


def leaves_for_two_workers(pki, count=6):
    """Fresh leaves whose stripes (of the default 64) fall to both of two workers."""
    from engine.locks.fetchlocks import stripe_of

    leaves, parities = [], set()
    while len(leaves) < count or parities != {0, 1}:
        leaf = fresh_leaf(pki, "mp")
        leaves.append(leaf)
        parities.add(stripe_of(cert_id_of(leaf), 64) % 2)
    return leaves


# Times the responder takes from its clock at each answer (a revoked answer's
# revocation time too: "an hour ago"), so two runs may differ by a second.
_TIMES = ("this_update", "next_update", "produced_at", "time_left_seconds", "revocation_time")


def without_times(rows):
    return {
        row["cert"].rsplit("/", 1)[-1]: {k: v for k, v in row.items() if k not in _TIMES}
        for row in rows
    }


def _stat_fields(pid):
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def worker_pids(parent: int) -> list[int]:
    """The staplectl worker processes whose parent is ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(entry)
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(fields[1]) == parent and b"engine.processes" in cmdline:
            found.append(int(entry))
    return found


def running(pid: int) -> bool:
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, ValueError):
        return False


def wait_for(predicate, seconds=20.0):
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()


def start_warm(*args, env=None, cwd=None):
    """The installed staplectl warm as a running process (to signal it and its workers)."""
    from tests.cli.conftest import _env, staplectl_path

    return subprocess.Popen(
        [staplectl_path(), "warm", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **_env(env)}, cwd=cwd,
    )  # fmt: skip


class TestProcesses:
    def test_same_rows_and_exit_code_as_one_process(self, cli, pki, responder, tmp_path):
        leaves = leaves_for_two_workers(pki)
        responder.script(leaves[0], Behaviour(cert_status="revoked"))
        directory = certs_dir(tmp_path, *leaves)
        one = cli("warm", directory, "--processes", "1", "--cache", f"local:{tmp_path / 'one.db'}", "--json")
        two = cli("warm", directory, "--processes", "2", "--cache", f"local:{tmp_path / 'two.db'}", "--json")
        assert one.exit_code == two.exit_code == 1, two.stderr
        assert without_times(two.rows()) == without_times(one.rows())
        assert [row["cert"] for row in two.rows()] == sorted(str(directory / leaf.chain_path.name) for leaf in leaves)
        assert {row["result"] for row in two.rows()} == {"updated"}
        for leaf in leaves:
            assert responder.requests_for(leaf) == 2  # once per run, never twice in one
        assert two.stderr == ""
        again = cli("warm", directory, "--processes", "2", "--cache", f"local:{tmp_path / 'two.db'}", "--json")
        assert {row["result"] for row in again.rows()} == {"fresh"}

    def test_a_failure_in_a_worker_is_its_row(self, cli, pki, responder, tmp_path):
        leaves = leaves_for_two_workers(pki)
        responder.script(leaves[1], Behaviour(http_status=500))
        directory = certs_dir(tmp_path, *leaves)
        (directory / "junk.pem").write_text("not a certificate\n")  # a problem of the parent's
        ran = cli("warm", directory, "--processes", "2", "--json")
        assert ran.exit_code == 3
        rows = rows_by_name(ran)
        failed = rows[leaves[1].chain_path.name]
        assert failed["result"] == "failed"
        assert failed["error"]["reason"] == "http_status"
        assert "HTTP 500" in failed["error"]["message"] and str(responder.url) in failed["error"]["message"]
        assert rows["junk.pem"]["error"]["reason"] == "bad_certificate_file"
        assert [rows[leaf.chain_path.name]["result"] for leaf in leaves if leaf is not leaves[1]] == ["updated"] * (len(leaves) - 1)

    def test_a_worker_failure_keeps_and_shows_the_usable_staple(self, cli, pki, responder, tmp_path):
        leaves = leaves_for_two_workers(pki)
        directory = certs_dir(tmp_path, *leaves)
        responder.script(leaves[0], DUE)
        assert cli("warm", directory, "--processes", "2").exit_code == 0
        responder.script(leaves[0], Behaviour(http_status=503))
        ran = cli("warm", directory, "--processes", "2")
        assert ran.exit_code == 3
        [line] = [line for line in ran.stdout.splitlines() if line.startswith(str(directory / leaves[0].chain_path.name))]
        assert "HTTP 503" in line and "the cached staple stays usable until" in line

    def test_table_and_summary(self, cli, pki, responder, tmp_path):
        leaves = leaves_for_two_workers(pki)
        directory = certs_dir(tmp_path, *leaves)
        ran = cli("warm", directory, "--processes", "2")
        assert ran.exit_code == 0
        lines = ran.stdout.splitlines()
        assert lines[0].split() == ["CERTIFICATE", "STATUS", "NEXT", "UPDATE", "RESULT"]
        assert len(lines) == len(leaves) + 1 and all(line.endswith("updated") for line in lines[1:])
        assert f"{len(leaves)} certificates: {len(leaves)} updated" in ran.stderr

    def test_a_killed_worker_fails_its_rows_and_the_rest_go_on(self, staplectl, pki, responder, home, tmp_path):
        leaves = leaves_for_two_workers(pki)
        for leaf in leaves:
            responder.script(leaf, Behaviour(delay=3))  # the workers wait for their answers
        directory = certs_dir(tmp_path, *leaves)
        asked_before = responder.request_count
        warm = start_warm(directory, "--processes", "2", "--json")
        try:
            workers = wait_for(lambda: len(worker_pids(warm.pid)) == 2 and worker_pids(warm.pid))
            assert workers, "the two worker processes did not start"
            # every request out, each answer 3 s away: the kill comes mid-refresh
            assert wait_for(lambda: responder.request_count - asked_before >= len(leaves))
            os.kill(workers[0], signal.SIGKILL)
            out, err = warm.communicate(timeout=60)
        finally:
            warm.kill()
        assert warm.returncode == 3, err
        rows = json.loads(out)["certificates"]
        assert len(rows) == len(leaves)
        killed = [row for row in rows if row["result"] == "failed"]
        assert killed, rows
        for row in killed:
            assert row["error"]["reason"] == "internal_error"
            assert f"worker process {workers[0]} was killed by SIGKILL before refreshing it" in row["error"]["message"]
        assert {row["result"] for row in rows if row not in killed} == {"updated"}
        assert not any(running(pid) for pid in workers)
        # nothing left held: the next run takes every stripe and fetches what was lost
        for leaf in leaves:
            responder.script(leaf, None)
        again = staplectl("warm", directory, "--processes", "2", "--json")
        assert again.exit_code == 0, again.stderr
        results = {row["cert"]: row["result"] for row in again.rows()}
        assert {results[row["cert"]] for row in killed} == {"updated"}
        assert {results[row["cert"]] for row in rows if row not in killed} == {"fresh"}

    def test_workers_go_when_the_parent_is_killed(self, pki, responder, home, tmp_path):
        leaves = leaves_for_two_workers(pki)
        for leaf in leaves:
            responder.script(leaf, Behaviour(delay=30))
        directory = certs_dir(tmp_path, *leaves)
        warm = start_warm(directory, "--processes", "2", "--json")
        try:
            workers = wait_for(lambda: len(worker_pids(warm.pid)) == 2 and worker_pids(warm.pid))
            assert workers, "the two worker processes did not start"
        finally:
            warm.kill()
            warm.communicate()
        # long before the responder's 30 s: they notice their parent is gone
        assert wait_for(lambda: not any(running(pid) for pid in workers))

    def test_workers_import_what_warm_imports_not_the_working_directory(self, pki, home, tmp_path):
        elsewhere = tmp_path / "project"
        (elsewhere / "engine").mkdir(parents=True)
        (elsewhere / "engine" / "__init__.py").write_text("raise ImportError('not our engine')\n")
        directory = certs_dir(tmp_path, *leaves_for_two_workers(pki))
        warm = start_warm(directory, "--processes", "2", "--json", cwd=elsewhere)
        out, err = warm.communicate(timeout=60)
        assert warm.returncode == 0, err
        assert {row["result"] for row in json.loads(out)["certificates"]} == {"updated"}

    def test_a_worker_that_cannot_start_fails_its_rows(self, cli, pki, tmp_path, monkeypatch):
        from engine import processes as workers

        monkeypatch.setattr(workers.sys, "executable", shutil.which("false"))
        leaves = leaves_for_two_workers(pki)
        ran = cli("warm", certs_dir(tmp_path, *leaves), "--processes", "2", "--json")
        assert ran.exit_code == 3
        rows = ran.rows()
        assert len(rows) == len(leaves)
        for row in rows:
            assert row["result"] == "failed" and row["error"]["reason"] == "internal_error"
            assert "exited with status 1 before refreshing it" in row["error"]["message"]
        assert worker_pids(os.getpid()) == []

    def test_processes_are_bounded_by_concurrency(self, cli, pki, tmp_path):
        leaves = leaves_for_two_workers(pki)
        directory = certs_dir(tmp_path, *leaves)
        ran = cli("warm", directory, "--processes", "4", "--concurrency", "1", "--json")
        assert ran.exit_code == 0
        assert {row["result"] for row in ran.rows()} == {"updated"}

    def test_nothing_loadable_stops_the_workers_started_for_it(self, cli, pki):
        ran = cli("warm", pki.good.cert_path, pki.rsa.cert_path, "--processes", "2")  # no chain, no --issuer
        assert ran.exit_code == 2
        assert "no certificate could be loaded from 2" in ran.stderr
        assert worker_pids(os.getpid()) == []

    def test_an_unreachable_cache_stops_the_workers(self, cli, pki, tmp_path):
        port = free_port()  # nothing listens there
        directory = certs_dir(tmp_path, *leaves_for_two_workers(pki))
        ran = cli("warm", directory, "--processes", "2", "--cache", f"memcache://127.0.0.1:{port}?timeout=0.5")
        assert ran.exit_code == 3
        assert ran.stderr.count(f"127.0.0.1:{port}") == 1
        assert worker_pids(os.getpid()) == []

    def test_bad_processes(self, cli, pki):
        ran = cli("warm", pki.good.chain_path, "--processes", "0")
        assert ran.exit_code == 2
        assert "--processes" in ran.stderr


class TestProcessCount:
    def test_default_is_one_process(self):
        from engine import processes as workers

        assert workers.process_count(None, 100_000, 64) == 1
        assert workers.process_count(8, 100_000, 64) == 8

    def test_never_more_than_threads_or_certificates(self):
        from engine.processes import process_count

        assert process_count(4, 1000, 2) == 2
        assert process_count(4, 3, 16) == 3
        assert process_count(1, 100_000, 16) == 1

    def test_each_stripe_goes_to_one_worker(self, pki):
        from engine.processes import _shares

        leaves = [load_leaf(fresh_leaf(pki, "share").chain_path) for _ in range(40)]
        shares = _shares(leaves, 3, 64)
        assert sorted(i for share in shares for i in share) == list(range(40))
        stripes = [{int(leaves[i].cert_id[:8], 16) % 64 for i in share} for share in shares]
        for a, b in itertools.combinations(stripes, 2):
            assert not a & b
