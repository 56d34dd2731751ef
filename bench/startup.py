"""How long a command takes to start, against a bare interpreter, in one run.

staplectl is installed as an operator installs it: a wheel of this
checkout in a fresh virtual environment, bytecode compiled (its
dependencies are this checkout's .venv's, read through a .pth file, so
nothing is downloaded). Each command runs --runs times, interleaved with
`python -c pass`, and the median wall time of each is set beside the bare
interpreter's:

- `staplectl --version` and `--help`: the app alone (target: 4x at most);
- `staplectl config`: the configuration read and printed;
- `staplectl check CERT`: a cached staple read, validated and judged, as
  monitoring runs it every minute on every host (target: 6x at most), with
  its peak RSS.

    .venv/bin/python bench/startup.py [--runs 21] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.loopback import config_file  # noqa: E402
from tests.openssl_responder import OpenSSLResponder, _free_port  # noqa: E402
from tests.pki import PKI  # noqa: E402

TARGETS = {"--version": 4.0, "--help": 4.0, "check": 6.0}


def install(work: Path) -> Path:
    """A fresh environment with a wheel of this checkout; its staplectl.

    The wheel goes in with the new environment's own pip, before the .pth
    file that lends it this checkout's dependencies: a pip that saw this
    checkout's editable staplectl would uninstall it first.
    """
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True)  # fmt: skip
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    [wheel] = wheels.glob("*.whl")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())  # fmt: skip
    # the dependencies from this checkout's environment (not its editable staplectl: a .pth line adds a
    # directory to the path without running that directory's own .pth files)
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([str(python), "-m", "compileall", "-q", str(site)], check=True)
    return venv / "bin" / "staplectl"


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run."""
    started = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0), (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
    ])  # fmt: skip
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {os.waitstatus_to_exitcode(status)}")
    return elapsed


def peak_rss_kib(argv: list[str], env: dict[str, str]) -> int:
    """Peak RSS of one run, by GNU time: a child's high-water mark would
    otherwise start at this (larger) process's, which it was forked from."""
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], env=env, capture_output=True, text=True, check=True)
    return int(done.stderr.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="staplectl-startup-") as tmp:
        work = Path(tmp)
        program = install(work)
        os.chdir(work)  # not the checkout: `python -c` would import its staplectl from the working directory
        python = str(program.parent / "python")
        home = work / "home"
        env = {**os.environ, "STAPLECTL_HOME": str(home), "STAPLECTL_CONFIG": str(config_file(work)), "NO_COLOR": "1"}
        for name in ("PYTHONDONTWRITEBYTECODE", "STAPLECTL_CACHE", "PYTHONPATH"):
            env.pop(name, None)
        port = _free_port()
        pki = PKI(work / "pki", f"http://127.0.0.1:{port}/")
        leaf = pki.leaf("startup")
        responder = OpenSSLResponder(pki, work / "ocsp")
        responder.port = port
        with responder:
            subprocess.run([str(program), "warm", str(leaf.chain_path)], env=env, check=True, capture_output=True)
        cases = {
            "python -c pass": [python, "-c", "pass"],
            "--version": [str(program), "--version"],
            "--help": [str(program), "--help"],
            "config": [str(program), "config"],
            "check": [str(program), "check", str(leaf.chain_path)],
        }
        for argv in cases.values():  # one warm-up each: the page cache, not the first run, is what is measured
            timed(argv, env)
        seconds: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, argv in cases.items():
                seconds[name].append(timed(argv, env))
        rss = {name: peak_rss_kib(argv, env) for name, argv in cases.items()}
        os.chdir(ROOT)
    bare = statistics.median(seconds["python -c pass"])
    rows = []
    for name in cases:
        median = statistics.median(seconds[name])
        target = TARGETS.get(name)
        rows.append({
            "command": name, "median_ms": round(median * 1000, 1), "ratio": round(median / bare, 2),
            "target_ratio": target, "met": None if target is None else median / bare <= target,
            "peak_rss_mib": round(rss[name] / 1024, 1),
        })  # fmt: skip
    print(f"{'command':<16} {'median':>9} {'x bare':>7} {'target':>7} {'peak RSS':>9}")
    for row in rows:
        target = f"{row['target_ratio']:.0f}x" if row["target_ratio"] else "-"
        print(f"{row['command']:<16} {row['median_ms']:>7.1f}ms {row['ratio']:>6.2f}x {target:>7} "
              f"{row['peak_rss_mib']:>6.1f} MiB")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "rows": rows}, indent=2) + "\n")
    if not all(row["met"] is not False for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
