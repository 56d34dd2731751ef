#!/usr/bin/env python3
"""Real httpd after a restart, with a responder that hangs: alone, and warmed by staplectl.

One Apache httpd (Debian's apache2, mod_ssl, SSLStaplingCache on a real
memcached or redis) with N name-based vhosts, each its own certificate,
all pointing at one OCSP responder that accepts and never answers. Two
scenarios, each a fresh httpd start followed by every vhost's first
handshake at the same moment (one client thread per vhost):

  httpd alone     empty stapling cache: mod_ssl asks the responder itself,
                  one certificate at a time behind its refresh mutex, each
                  until SSLStaplingResponderTimeout (--timeout, 3 s);
                  httpd's defaults otherwise (SSLStaplingFakeTryLater on:
                  what it staples after the wait is its fake tryLater)
  staplectl warm  `staplectl warm --cache ...` run before the start, while
                  the responder still answers; then it hangs

The target in docs/design.md ("Targets"): after warm, every first handshake stapled
with the response staplectl stored, each under 50 ms; httpd alone takes
about k x --timeout for the k-th certificate. The "alone" run lasts about
N x --timeout (60 s for the defaults): --alone-vhosts M runs it with the
first M vhosts only.

    .venv/bin/python bench/httpd_restart.py [--vhosts 20] [--alone-vhosts M] [--timeout 3]
                                            [--cache memcache|redis] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.x509 import ocsp  # noqa: E402

from tests.integration.httpd import Httpd, Vhost  # noqa: E402
from tests.integration.tlsclient import Handshake, handshake  # noqa: E402
from tests.loopback import config_file  # noqa: E402
from tests.pki import PKI, Issued  # noqa: E402
from tests.responder import Behaviour, ScriptedResponder  # noqa: E402
from tests.servers import ServerProcess, start_memcached, start_redis  # noqa: E402

TARGET_MS = 50.0


def binary(name: str) -> str:
    for path in (shutil.which(name), f"/usr/sbin/{name}"):
        if path and os.access(path, os.X_OK):
            return path
    sys.exit(f"{name} is not installed (apt-get install apache2-bin)")


def at_once(port: int, names: list[str], timeout: float) -> list[Handshake]:
    """Every name's first handshake, released together by a barrier."""
    barrier = threading.Barrier(len(names))
    results: list[Handshake | None] = [None] * len(names)

    def one(i: int) -> None:
        barrier.wait()
        results[i] = handshake(port, names[i], timeout=timeout)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in results), "a handshake failed"
    return results  # type: ignore[return-value]


def kind(staple: bytes | None) -> str:
    if staple is None:
        return "none"
    response = ocsp.load_der_ocsp_response(staple)
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return response.response_status.name.lower()
    return response.certificate_status.name.lower()


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.cache: ServerProcess = start_redis() if args.cache == "redis" else start_memcached()
        self.responder = ScriptedResponder()
        self.responder.pki = PKI(work / "pki", self.responder.url)
        self.leaves: list[Issued] = [self.responder.pki.leaf(f"site{i:03d}") for i in range(args.vhosts)]
        self.responder.start()
        self.apache2 = binary("apache2")

    def close(self) -> None:
        self.responder.stop()
        self.cache.stop()

    @property
    def uri(self) -> str:
        return f"{self.args.cache}://127.0.0.1:{self.cache.port}"

    def stored(self, leaf: Issued) -> bytes | None:
        key = "mod_ssl-staple:" + hashlib.sha1(leaf.der_path.read_bytes()).hexdigest()
        if self.args.cache == "redis":
            import redis

            value = redis.Redis("127.0.0.1", self.cache.port).get(key)
        else:
            from pymemcache.client.base import Client

            value = Client(("127.0.0.1", self.cache.port)).get(key)
        return value[1:] if value else None

    def flush(self) -> None:
        if self.args.cache == "redis":
            import redis

            redis.Redis("127.0.0.1", self.cache.port).flushall()
        else:
            from pymemcache.client.base import Client

            Client(("127.0.0.1", self.cache.port)).flush_all()

    def scenario(self, name: str, leaves: list[Issued], warm: bool) -> dict:
        self.flush()
        self.responder.default = Behaviour()
        warm_seconds = None
        if warm:
            env = dict(
                os.environ, STAPLECTL_HOME=str(self.work / "home"), NO_COLOR="1",
                STAPLECTL_CONFIG=str(config_file(self.work)),  # the responder is on loopback
            )  # fmt: skip
            started = time.monotonic()
            subprocess.run(
                [str(Path(sys.executable).with_name("staplectl")), "warm", "-q", "--cache", self.uri,
                 *(str(leaf.chain_path) for leaf in leaves)],
                check=True, env=env, stdout=subprocess.DEVNULL,
            )
            warm_seconds = time.monotonic() - started
        self.responder.default = Behaviour(hang=True)
        asked = self.responder.request_count
        server = Httpd(
            self.apache2, self.work / ("httpd-" + name.replace(" ", "-")), [Vhost(f"{l.name}.test", l.chain_path, l.key_path) for l in leaves],
            f"{self.args.cache}:127.0.0.1:{self.cache.port}",
            stapling={"SSLStaplingResponderTimeout": f"{self.args.timeout:g}", "SSLStaplingFakeTryLater": "on"},
        )
        server.start()
        try:
            limit = len(leaves) * self.args.timeout + 30
            shakes = at_once(server.port, [f"{leaf.name}.test" for leaf in leaves], limit)
        finally:
            server.stop()
        rows = []
        for leaf, shake in zip(leaves, shakes):
            rows.append({
                "vhost": f"{leaf.name}.test",
                "seconds": round(shake.seconds, 4),
                "staple": kind(shake.staple),
                "matches_cache": shake.staple is not None and shake.staple == self.stored(leaf),
            })
        return {
            "scenario": name, "vhosts": len(leaves), "warm_seconds": warm_seconds,
            "responder_requests_from_httpd": self.responder.request_count - asked, "handshakes": rows,
        }


def summary(result: dict) -> list[str]:
    times = sorted(r["seconds"] for r in result["handshakes"])
    kinds: dict[str, int] = {}
    for r in result["handshakes"]:
        kinds[r["staple"]] = kinds.get(r["staple"], 0) + 1
    return [
        result["scenario"], str(result["vhosts"]),
        ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
        str(sum(r["matches_cache"] for r in result["handshakes"])),
        f"{times[0] * 1000:.1f}", f"{statistics.median(times) * 1000:.1f}", f"{times[-1] * 1000:.1f}",
        str(result["responder_requests_from_httpd"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vhosts", type=int, default=20, help="vhosts, each its own certificate (default 20)")
    parser.add_argument("--alone-vhosts", type=int, help="vhosts in the 'httpd alone' run (default: --vhosts)")
    parser.add_argument("--timeout", type=float, default=3.0, help="SSLStaplingResponderTimeout, seconds (default 3)")
    parser.add_argument("--cache", choices=["memcache", "redis"], default="memcache")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args()
    alone = min(args.alone_vhosts or args.vhosts, args.vhosts)

    work = Path(tempfile.mkdtemp(prefix="staplectl-bench-httpd-"))
    bench = Bench(args, work)
    try:
        version = subprocess.run([bench.apache2, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
        results = [
            bench.scenario("httpd alone", bench.leaves[:alone], warm=False),
            bench.scenario("staplectl warm", bench.leaves, warm=True),
        ]
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)

    header = ["scenario", "vhosts", "staples", "= cache", "min ms", "median ms", "max ms", "httpd asked"]
    table = [header] + [summary(r) for r in results]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"{version}; SSLStaplingCache {args.cache}; responder hangs; SSLStaplingResponderTimeout {args.timeout:g} s")
    for row in table:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    alone_times = sorted(r["seconds"] for r in results[0]["handshakes"])
    print("httpd alone, each first handshake (s): " + " ".join(f"{t:.1f}" for t in alone_times))
    warmed = results[1]
    met = all(r["matches_cache"] and r["staple"] == "good" and r["seconds"] * 1000 < TARGET_MS for r in warmed["handshakes"])
    print(f"staplectl warm took {warmed['warm_seconds']:.2f} s for {warmed['vhosts']} certificates")
    print(f"target (every first handshake stapled from the cache, each under {TARGET_MS:g} ms): {'met' if met else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"httpd": version, "args": vars(args), "target_ms": TARGET_MS, "target_met": met, "results": results},
            indent=2,
        ) + "\n")


if __name__ == "__main__":
    main()
