#!/usr/bin/env python3
"""100,000 certificates in one prefetch worker (docs/design.md, "Targets": scale).

Generates N leaves (one EC key shared by all, one issuer) as PEM chain files
in a temporary directory, and pre-fills the local store with a current,
issuer-signed response for each, so every staple is fresh and no responder
is needed (the leaves' AIA points at a closed port: a fetch would fail).
Generation runs in a child process of its own. Then the service's cold
start is measured twice, each in a fresh process (its own peak RSS):

  first start   an empty worker state: every staple is validated in full
  restart       the state the first start left: staples this host validated
                before are not verified again (their digest is remembered)

and in each:

  sources    engine.ocsp.certfiles.load_all of the directory (read, parse, find the
             issuer; at a restart, a leaf's signature verified before is not verified again)
  load       PrefetchWorker.load of the leaves (the first look at every cached
             staple, the schedule, the state written)
  run_due    the first run_due(): the jobs of whatever the first look found due
  idle CPU   CPU time of the process over --idle seconds with the worker started
  peak RSS   resource.getrusage(RUSAGE_SELF).ru_maxrss after each step, and
             VmRSS at the end: what the running service holds
  written    bytes the process sent to storage (/proc/self/io write_bytes)

"cold start" is sources + load + run_due: from nothing in memory to a
worker that knows the state of every certificate.

Prints a table; --json PATH writes the same figures.

    .venv/bin/python bench/prefetch_scale.py [--count 100000] [--idle 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID  # noqa: E402

from engine.store.cache import Cache  # noqa: E402
from engine.refresh.prefetch import PrefetchWorker, WorkerOptions  # noqa: E402
from engine.store.providers import open_provider  # noqa: E402
from engine.ocsp.certfiles import CertSpec, load_all  # noqa: E402
from engine.refresh.stapler import Stapler  # noqa: E402
from engine.refresh.worker_state import StateStore  # noqa: E402
from engine.locks.fetchlocks import FetchLocks  # noqa: E402

#: nothing listens here: a fetch in this benchmark would be a bug
DEAD_URL = "http://127.0.0.1:9/"
VALIDITY = dt.timedelta(days=7)  # what Let's Encrypt's responder gives


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def generate(directory: Path, store_path: Path, count: int) -> None:
    """N chain files and a current response for each, in the local store."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("bench CA")).issuer_name(_name("bench CA"))
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    leaf_key = ec.generate_private_key(ec.SECP256R1()).public_key()  # one key for every leaf: speed
    aia = x509.AuthorityInformationAccess(
        [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(DEAD_URL))]
    )
    directory.mkdir(parents=True, exist_ok=True)
    provider = open_provider(f"local:{store_path}")
    ttl = int(VALIDITY.total_seconds())
    for n in range(count):
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"site{n}.bench.test")).issuer_name(ca.subject)
            .public_key(leaf_key).serial_number(n + 2)
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=90))
            .add_extension(aia, critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        (directory / f"site{n:06d}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
        response = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=cert, issuer=ca, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
                this_update=now - dt.timedelta(minutes=1), next_update=now + VALIDITY,
                revocation_time=None, revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, ca)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        der = cert.public_bytes(serialization.Encoding.DER)
        cert_id = hashes.Hash(hashes.SHA1())
        cert_id.update(der)
        provider.set(cert_id.finalize().hex(), response.public_bytes(serialization.Encoding.DER), ttl)
    provider.close()


def written() -> int:
    """Bytes this process has caused to be written to storage (write_bytes)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _generate(certs: Path, store_path: Path, count: int, report: Any) -> None:
    """generate() in a child process; reports the bytes it wrote."""
    generate(certs, store_path, count)
    report.put(written())


def held_rss_mb() -> float:
    """What the process holds now (VmRSS), not its high-water mark."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cold_start(workdir: Path, idle: float, report: Any) -> None:
    """One start of the service, in a process of its own: its figures go to ``report``."""
    certs, store_path = workdir / "certs", workdir / "staples.db"
    figures: dict = {"rss_start_mb": peak_rss_mb()}
    before = written()
    began = time.perf_counter()
    state = StateStore(workdir / "state" / "worker.db")
    # as `staplectl prefetch` does: the issuers this host verified the leaves with before
    loaded = load_all([CertSpec(str(certs))], verified=state.issued(), keep_der=False)
    figures["sources_s"] = time.perf_counter() - began
    figures["sources_problems"] = len(loaded.problems)
    figures["distinct_issuers"] = len({id(leaf.issuer) for leaf in loaded.leaves})
    figures["rss_after_sources_mb"] = peak_rss_mb()

    stapler = Stapler(Cache(open_provider(f"local:{store_path}")), FetchLocks(workdir / "locks"))
    worker = PrefetchWorker(stapler, state=state, options=WorkerOptions())
    began = time.perf_counter()
    added, _ = worker.load(loaded.leaves)
    figures["load_s"] = time.perf_counter() - began
    figures["loaded"] = added
    figures["rss_after_load_mb"] = peak_rss_mb()

    began = time.perf_counter()
    events = worker.run_due()
    figures["run_due_s"] = time.perf_counter() - began
    figures["run_due_actions"] = dict(Counter(event.action for event in events))
    figures["rss_after_run_due_mb"] = peak_rss_mb()
    figures["cold_start_s"] = figures["sources_s"] + figures["load_s"] + figures["run_due_s"]
    os.sync()  # what the cold start dirtied, counted now and not in the idle seconds
    figures["cold_start_written_mb"] = (written() - before) / 1e6
    next_due = worker.next_due()
    figures["next_due_in_h"] = None if next_due is None else (next_due - time.time()) / 3600

    worker.start()
    time.sleep(0.5)  # let the dispatcher and workers settle into their waits
    cpu, wall = time.process_time(), time.perf_counter()
    time.sleep(idle)
    figures["idle_s"] = time.perf_counter() - wall
    figures["idle_cpu_s"] = time.process_time() - cpu
    figures["idle_cpu_percent"] = 100 * figures["idle_cpu_s"] / figures["idle_s"]
    figures["stopped_cleanly"] = worker.stop()
    figures["rss_peak_mb"] = peak_rss_mb()
    figures["rss_held_mb"] = held_rss_mb()
    state.close()
    stapler.cache.close()
    stapler.locks.close()
    report.put(figures)


def _in_child(target: Any, *args: Any) -> Any:
    spawn = multiprocessing.get_context("spawn")
    report = spawn.Queue()
    child = spawn.Process(target=target, args=(*args, report))
    child.start()
    result = report.get()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"{target.__name__} failed (exit {child.exitcode})")
    return result


def run(count: int, idle: float, workdir: Path) -> dict:
    began = time.perf_counter()
    generated = _in_child(_generate, workdir / "certs", workdir / "staples.db", count)
    figures: dict = {"count": count, "generate_s": time.perf_counter() - began, "generate_written_mb": generated / 1e6}
    figures["first_start"] = _in_child(cold_start, workdir, idle)
    figures["restart"] = _in_child(cold_start, workdir, idle)
    return figures


def table(f: dict) -> str:
    def both(key: str, fmt: str) -> str:
        return "  |  ".join(fmt.format(f[run][key]) for run in ("first_start", "restart"))

    first = f["first_start"]
    rows = [
        ("certificates", f"{f['count']:,} ({first['loaded']:,} scheduled, {first['sources_problems']} problems, "
                         f"{first['distinct_issuers']} issuer object(s))"),
        ("generate (child process)", f"{f['generate_s']:.1f} s, {f['generate_written_mb']:.0f} MB written"),
        ("", "first start  |  restart"),
        ("sources.load_all", both("sources_s", "{:.1f} s")),
        ("PrefetchWorker.load", both("load_s", "{:.1f} s")),
        ("first run_due", "  |  ".join(f"{f[r]['run_due_s']:.1f} s {f[r]['run_due_actions'] or '(no job)'}"
                                         for r in ("first_start", "restart"))),
        ("cold start (sources + load + run_due)", both("cold_start_s", "{:.1f} s")),
        ("written by the cold start", both("cold_start_written_mb", "{:.0f} MB")),
        ("next due in", both("next_due_in_h", "{:.1f} h")),
        ("idle CPU", "  |  ".join(f"{f[r]['idle_cpu_s'] * 1000:.1f} ms in {f[r]['idle_s']:.1f} s "
                                    f"({f[r]['idle_cpu_percent']:.2f} % of a core)" for r in ("first_start", "restart"))),
        ("peak RSS: sources / load / run_due / end",
         "  |  ".join(" / ".join(f"{f[r][k]:.0f}" for k in ("rss_after_sources_mb", "rss_after_load_mb",
                                                            "rss_after_run_due_mb", "rss_peak_mb")) + " MiB"
                      for r in ("first_start", "restart"))),
        ("RSS held at the end (VmRSS)", both("rss_held_mb", "{:.0f} MiB")),
        ("stop() ended every thread", both("stopped_cleanly", "{}")),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="certificates (default 100000)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measurement (default 5)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary directory, removed)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="prefetch-scale-"))
    if args.workdir and workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"{workdir} is not empty")
    try:
        figures = run(args.count, args.idle, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    figures["python"] = sys.version.split()[0]
    figures["cpus"] = os.cpu_count()
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
