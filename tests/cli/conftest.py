"""Running staplectl: in-process with Typer's CliRunner, or as the installed program."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from staplectl.app import app


@dataclass
class Ran:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        """The whole --json output, after checking the envelope every command shares."""
        data = json.loads(self.stdout)
        assert isinstance(data, dict) and data["schema"] == 1 and data["command"], data
        assert "checked_at" in data and "error" in data, data
        return data

    def rows(self, field: str = "certificates") -> list:
        """The envelope's list of certificates (inspect: ``entries``)."""
        return self.json()[field]

    def row(self, field: str = "certificates") -> dict:
        """The one certificate (fetch, probe, inspect CERT)."""
        rows = self.rows(field)
        assert len(rows) == 1, rows
        return rows[0]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"}
    env.update(extra or {})
    return env


@pytest.fixture
def cli(home):
    """Run staplectl in-process: cli("fetch", path, ...) -> Ran."""
    runner = CliRunner()

    def run(*args: str | Path, env: dict[str, str] | None = None) -> Ran:
        result = runner.invoke(app, [str(a) for a in args], env=_env(env), catch_exceptions=False)
        return Ran(result.exit_code, result.stdout, result.stderr)

    return run


def staplectl_path() -> str:
    beside = Path(sys.executable).with_name("staplectl")
    found = str(beside) if beside.exists() else shutil.which("staplectl")
    if not found:
        pytest.fail("the staplectl console script is not installed (pip install -e .)")
    return found


@pytest.fixture
def staplectl(home):
    """Run the installed staplectl as a real process."""
    program = staplectl_path()

    def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 60) -> Ran:
        full_env = dict(os.environ)
        full_env.update(_env(env))
        done = subprocess.run(
            [program, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout
        )
        return Ran(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def service(tmp_path, home):
    procs: list[subprocess.Popen] = []

    def start(config: Path, *args: str, state: Path | None = None) -> subprocess.Popen:
        """The service on ``config``; ``state``: its $STAPLECTL_HOME, if not the test's home."""
        env = {**os.environ, "NO_COLOR": "1", "STAPLECTL_HOME": str(state or home)}
        # "a+": the service's writes append whatever offset log_of's reads
        # left the shared file description at (with "w+" a read racing a
        # write put the service's next line over the start of the file)
        log = open(tmp_path / f"prefetch-{len(procs)}.log", "a+")
        proc = subprocess.Popen(
            [staplectl_path(), "prefetch", "--config", str(config), *args],
            stdout=subprocess.DEVNULL, stderr=log, env=env, text=True,
        )
        proc.log = log  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
