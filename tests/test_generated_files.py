"""The committed completions and man page are exactly what the app generates.

When this fails after a change to a command, an option or a help text, run
``scripts/generate-docs`` and commit the files it rewrites.

Also: the generated files cover every command and option, the man page
renders without groff warnings, and the completion scripts complete in the
real shells (bash always; zsh and fish where installed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from staplectl.app import app
from staplectl.completion import command_tree
from staplectl.exitcodes import EXIT_TABLE
from staplectl.manpage import generated_files, render
from tests.servers import find_binary

ROOT = Path(__file__).resolve().parent.parent
FILES = generated_files(app)
ROOT_CMD, COMMANDS = command_tree(app)
HOW = "out of date: run scripts/generate-docs and commit the result"


@pytest.mark.parametrize("name", sorted(FILES))
def test_committed_file_matches_the_app(name):
    path = ROOT / name
    assert path.exists(), f"{name} is missing: run scripts/generate-docs"
    assert path.read_text() == FILES[name], f"{name} is {HOW}"


def test_generate_docs_check_agrees():
    done = subprocess.run(
        [str(ROOT / "scripts" / "generate-docs"), "--check"],
        capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_output_is_deterministic():
    assert render(app) == render(app)
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", FILES["man/staplectl.1"])


def test_every_command_and_option_is_covered():
    assert {c.name for c in COMMANDS} >= {"fetch", "inspect", "locks", "config"}
    for command in COMMANDS:
        for name in ("completions/staplectl.bash", "completions/_staplectl", "completions/staplectl.fish"):
            assert command.name in FILES[name]
        for option in command.options:
            for flag in option.names:
                assert flag in FILES["completions/staplectl.bash"]
                assert flag.replace("-", "\\-") in FILES["man/staplectl.1"], (command.name, flag)


def test_man_page_sections_and_exit_codes():
    page = FILES["man/staplectl.1"]
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", '"EXIT STATUS"', "ENVIRONMENT", "FILES", "EXAMPLES"):
        assert f"\n.SH {section}\n" in page
    for code, meaning in EXIT_TABLE:
        assert f".B {int(code)}\n{meaning.replace('-', chr(92) + '-')}" in page
    assert "Nagios" in page
    for variable in ("STAPLECTL_HOME", "STAPLECTL_CACHE", "STAPLECTL_CONFIG", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "NO_COLOR"):
        assert f".B {variable}\n" in page


@pytest.mark.skipif(not shutil.which("groff"), reason="groff is not installed")
def test_man_page_renders_without_warnings():
    done = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(ROOT / "man" / "staplectl.1")], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr


# -- the scripts in their shells ------------------------------------------------


def bash_complete(line: str, cwd: Path = ROOT) -> list[str]:
    """What bash offers for ``line`` (completing its last word; a trailing space starts a new one)."""
    script = f"""
source {ROOT / 'completions' / 'staplectl.bash'}
COMP_LINE={line!r}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
_staplectl
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return [word for word in done.stdout.splitlines() if word]


def test_bash_completes_commands_options_and_files(tmp_path):
    assert bash_complete("staplectl ") == [c.name for c in COMMANDS]
    assert bash_complete("staplectl in") == ["inspect"]
    assert "--watch" in bash_complete("staplectl locks --")
    assert "--text" in bash_complete("staplectl --cache local: inspect --")
    assert bash_complete("staplectl --cache local: ins") == ["inspect"]
    (tmp_path / "www.pem").write_text("x")
    (tmp_path / "www.key").write_text("x")
    assert sorted(bash_complete("staplectl fetch ww", cwd=tmp_path)) == ["www.key", "www.pem"]
    assert bash_complete("staplectl inspect --issuer www.p", cwd=tmp_path) == ["www.pem"]
    assert bash_complete("staplectl --config www.p", cwd=tmp_path) == ["www.pem"]
    assert bash_complete("staplectl locks --interval ") == []


def test_zsh_script_parses():
    done = subprocess.run([shell("zsh"), "-n", str(ROOT / "completions" / "_staplectl")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_fish_completes():
    script = f"source {ROOT / 'completions' / 'staplectl.fish'}; complete -C 'staplectl '; echo ---; complete -C 'staplectl locks --w'"
    done = subprocess.run([shell("fish"), "--no-config", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    commands, options = done.stdout.split("---\n")
    assert [line.split("\t")[0] for line in commands.splitlines()] == sorted(c.name for c in COMMANDS)
    assert options.startswith("--watch\tRedraw the table")


def shell(name: str) -> str:
    """The shell's path; missing, the test skips, or fails under CI=true (scripts/test.sh installs it)."""
    return find_binary(name, name)
