"""The shipped systemd units pass `systemd-analyze verify` after the
documented install (the program at /usr/local/bin, the man page where man
finds it), and their hardening keeps `systemd-analyze security` under 3.0."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import staplectl_path
from tests.servers import find_binary

ROOT = Path(__file__).resolve().parent.parent
UNITS = ["staplectl-prefetch.service", "staplectl-warm.service"]


@pytest.fixture
def installed(tmp_path):
    """The units as the README installs them, the program path pointing at
    this test run's staplectl, and the man page on a MANPATH of their own."""
    (tmp_path / "man" / "man1").mkdir(parents=True)
    (tmp_path / "man" / "man1" / "staplectl.1").write_bytes((ROOT / "man" / "staplectl.1").read_bytes())
    for unit in UNITS:
        text = (ROOT / "examples" / unit).read_text()
        assert "ExecStart=/usr/local/bin/staplectl " in text  # where the README installs it
        (tmp_path / unit).write_text(text.replace("/usr/local/bin/staplectl", staplectl_path()))
    return tmp_path


@pytest.mark.parametrize("unit", UNITS)
def test_verify_passes(installed, unit):
    analyze = find_binary("systemd-analyze", "systemd")
    done = subprocess.run([analyze, "verify", str(installed / unit)], capture_output=True, text=True,
                          env={"MANPATH": str(installed / "man"), "PATH": "/usr/bin:/bin"}, timeout=60)  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_hardening_keeps_exposure_under_3(installed, unit):
    analyze = find_binary("systemd-analyze", "systemd")
    done = subprocess.run([analyze, "security", "--offline=yes", str(installed / unit)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert level, done.stdout + done.stderr
    assert float(level.group(1)) < 3.0, done.stdout


def test_the_user_comes_from_sysusers():
    line = (ROOT / "examples" / "staplectl.sysusers").read_text().splitlines()[-1]
    assert line.split()[:2] == ["u", "staplectl"] and line.split()[-1] == "/var/lib/staplectl"
    for unit in UNITS:
        text = (ROOT / "examples" / unit).read_text()
        assert "User=staplectl" in text and "Environment=STAPLECTL_HOME=/var/lib/staplectl" in text
