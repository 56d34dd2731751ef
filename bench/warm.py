#!/usr/bin/env python3
"""How fast `staplectl warm` fills an empty cache, against what else there is.

One run, one PKI of N leaf certificates (default 2,000), one responder, and
three measurements:

  openssl loop     a sequential `openssl ocsp -issuer -cert -url` per
                   certificate (verifying the answer and saving it, as
                   shell fetchers like certbot-ocsp-fetcher do), over a
                   sample of --sample certificates, scaled to N
  staplectl warm   the installed CLI as a subprocess on the local store,
                   fresh cache: startup, loading N files, N fetches with
                   validation, N stores
  responder        what the responder itself can serve: --clients
                   processes of 4 threads each POSTing pre-built requests,
                   reading the answers, validating nothing

The responder is the real `openssl ocsp` with -multi (--multi processes,
default 4). Why that one: it is C and forks worker processes, so on a
2-core machine it uses both cores with no GIL and signs each answer in
microseconds; the in-process ScriptedResponder is GIL-bound and shares the
interpreter with whoever measures it, and a Python multiprocess server
spends more CPU per request than openssl does, leaving less for the
client. The fastest responder available is the hardest reference to
measure warm against.

--latency MS puts an asyncio proxy in front of the responder that holds
every connection MS milliseconds before passing it on: a responder across
a network, where the client's concurrency matters more than its CPU.

Prints a table (method, certs, seconds, certs/s, ratio to the openssl
loop) and the two targets of DESIGN.md section 5: warm at least 30x the
openssl loop, and at least 80 % of the responder's capacity. On a small
machine the three share the CPU with each other (and with anything else
running): repeat a run before trusting a figure.

    .venv/bin/python bench/warm.py [--count 2000] [--sample 50] [--multi 4] [--latency MS] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from tests.openssl_responder import OpenSSLResponder  # noqa: E402
from tests.pki import PKI, Issued  # noqa: E402

TARGET_VS_OPENSSL = 30.0
TARGET_VS_CAPACITY = 0.80


# -- the certificates ---------------------------------------------------------------


def issue_leaves(pki: PKI, count: int, directory: Path) -> list[Issued]:
    """N leaves of pki's intermediate, each in its own chain file (leaf + intermediate).

    One key for all of them: key generation is not what is measured, and
    OCSP never looks at the leaf's key.
    """
    directory.mkdir(parents=True)
    bare = directory.parent / "bare"  # the leaf alone, for openssl ocsp -cert
    bare.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = directory.parent / "leaves.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    intermediate_pem = pki.intermediate.cert.public_bytes(serialization.Encoding.PEM)
    aia = x509.AuthorityInformationAccess(
        [x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(pki.ocsp_url))]
    )
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    leaves = []
    for n in range(count):
        name = f"site{n:05d}"
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.test")]))
            .issuer_name(pki.intermediate.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{name}.test")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(aia, critical=False)
            .sign(pki.intermediate.key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        cert_path, chain_path = bare / f"{name}.pem", directory / f"{name}.pem"
        cert_path.write_bytes(pem)
        chain_path.write_bytes(pem + intermediate_pem)
        leaves.append(Issued(name, cert, key, cert_path, chain_path, cert_path, key_path, pki.intermediate))
    return leaves


# -- an optional delay in front of the responder ---------------------------------------


def _delay_proxy(listen_port: int, upstream_port: int, delay: float, ready: multiprocessing.Event) -> None:
    """Forward each connection to the responder after ``delay`` seconds, as
    a responder across a network would answer (asyncio: thousands at once)."""
    import asyncio

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        first = await client_reader.read(65536)
        if not first:  # never hand openssl an empty connection (see tests/openssl_responder.py)
            client_writer.close()
            return
        await asyncio.sleep(delay)
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        upstream_writer.write(first)
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port, backlog=1024)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- the responder's capacity ---------------------------------------------------------


def _post_all(port: int, requests: list[bytes], threads: int, errors: multiprocessing.Queue) -> None:
    position = iter(range(len(requests)))
    lock = threading.Lock()
    failed = 0

    def client() -> None:
        nonlocal failed
        while True:
            with lock:
                n = next(position, None)
            if n is None:
                return
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("POST", "/", requests[n], {"Content-Type": "application/ocsp-request"})
                response = connection.getresponse()
                body = response.read()
                if response.status != 200 or not body:
                    failed += 1
            except OSError:
                failed += 1
            finally:
                connection.close()

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    errors.put(failed)


def responder_capacity(port: int, leaves: list[Issued], issuer: Issued, processes: int, rounds: int) -> tuple[int, float, int]:
    """(requests, seconds, failures) for `rounds` requests per certificate, spread over processes."""
    requests = [
        ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, issuer.cert, hashes.SHA1()).build().public_bytes(serialization.Encoding.DER)
        for leaf in leaves
    ] * rounds
    errors: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_post_all, args=(port, requests[i::processes], 4, errors)) for i in range(processes)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return len(requests), elapsed, sum(errors.get() for _ in workers)


# -- the openssl loop -----------------------------------------------------------------


def openssl_loop(url: str, leaves: list[Issued], pki: PKI, out: Path) -> float:
    started = time.perf_counter()
    for leaf in leaves:
        done = subprocess.run(
            ["openssl", "ocsp", "-no_nonce", "-issuer", str(pki.intermediate.cert_path), "-cert", str(leaf.cert_path),
             "-url", url, "-CAfile", str(pki.bundle_path), "-respout", str(out / f"{leaf.name}.der")],
            capture_output=True, text=True,
        )
        if done.returncode != 0 or ": good" not in done.stdout or "Response verify OK" not in done.stderr:
            raise RuntimeError(f"openssl ocsp failed for {leaf.name}: {done.stdout}{done.stderr}")
    return time.perf_counter() - started


# -- staplectl warm -------------------------------------------------------------------


def staplectl_warm(directory: Path, home: Path, extra: list[str]) -> tuple[float, dict[str, int], int]:
    program = Path(sys.executable).with_name("staplectl")
    env = {**os.environ, "STAPLECTL_HOME": str(home), "NO_COLOR": "1"}
    for name in ("STAPLECTL_CACHE", "STAPLECTL_CONFIG"):
        env.pop(name, None)
    started = time.perf_counter()
    done = subprocess.run([str(program), "warm", str(directory), "--json", *extra], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    results: dict[str, int] = {}
    try:
        for row in json.loads(done.stdout):
            results[row["result"]] = results.get(row["result"], 0) + 1
    except ValueError:
        raise RuntimeError(f"staplectl warm exited {done.returncode}: {done.stderr[-2000:]}") from None
    return elapsed, results, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="certificates to warm (default 2000)")
    parser.add_argument("--sample", type=int, default=50, help="certificates the openssl loop fetches (default 50)")
    parser.add_argument("--multi", type=int, default=4, help="openssl ocsp responder processes (default 4)")
    parser.add_argument("--clients", type=int, default=4, help="load processes measuring the responder (default 4)")
    parser.add_argument(
        "--rounds", type=int, default=None,
        help="requests per certificate in the capacity run (default: enough for 10,000 requests, at least 2)",
    )
    parser.add_argument("--concurrency", type=int, default=None, help="warm --concurrency (default: warm's own)")
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="MS",
        help="put the responder behind a proxy that delays every connection by MS milliseconds, "
        "as a responder across a network would (default 0: loopback)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    if args.rounds is None:
        # a run of a second or less measures the noise of the machine more than the responder
        args.rounds = max(2, -(-10_000 // args.count))
    if shutil.which("openssl") is None:
        sys.exit("bench/warm.py needs the openssl command")

    work = Path(tempfile.mkdtemp(prefix="staplectl-bench-warm-"))
    try:
        results = run(args, work)
    finally:
        if args.keep:
            print(f"working directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def run(args: argparse.Namespace, work: Path) -> dict:
    from tests.openssl_responder import _free_port

    port = _free_port()
    # the URL the certificates name: the responder, or the delaying proxy in front of it
    url_port = _free_port() if args.latency > 0 else port
    url = f"http://127.0.0.1:{url_port}/"
    print(f"issuing {args.count} certificates ...", file=sys.stderr)
    pki = PKI(work / "pki", url)
    leaves = issue_leaves(pki, args.count, work / "certs")
    for leaf in leaves:
        pki.leaves[leaf.name] = leaf  # so the responder's index lists them
    responder = OpenSSLResponder(pki, work / "ocsp", multi=args.multi, ndays=1)
    responder.port = port
    proxy = None
    with responder:
        if args.latency > 0:
            ready = multiprocessing.Event()
            proxy = multiprocessing.Process(target=_delay_proxy, args=(url_port, port, args.latency / 1000, ready), daemon=True)
            proxy.start()
            ready.wait(10)
        try:
            return measure(args, work, pki, leaves, url, url_port)
        finally:
            if proxy is not None:
                proxy.kill()
                proxy.join()


def measure(args: argparse.Namespace, work: Path, pki: PKI, leaves: list[Issued], url: str, port: int) -> dict:
    print("measuring the responder's capacity ...", file=sys.stderr)
    requests, capacity_s, failures = responder_capacity(port, leaves, pki.intermediate, args.clients, args.rounds)
    if failures:
        raise RuntimeError(f"{failures} of {requests} load requests failed")
    sample = leaves[: args.sample]
    print(f"running the openssl loop over {len(sample)} certificates ...", file=sys.stderr)
    (work / "openssl-out").mkdir()
    loop_s = openssl_loop(url, sample, pki, work / "openssl-out")
    print(f"running staplectl warm over {args.count} certificates ...", file=sys.stderr)
    extra = ["--concurrency", str(args.concurrency)] if args.concurrency else []
    warm_s, outcome, code = staplectl_warm(work / "certs", work / "home", extra)
    if outcome.get("updated") != args.count or code != 0:
        raise RuntimeError(f"staplectl warm did not update every certificate: {outcome}, exit {code}")

    loop_rate = len(sample) / loop_s
    rows = [
        ("openssl ocsp loop (scaled)", args.count, args.count / loop_rate, loop_rate),
        ("staplectl warm", args.count, warm_s, args.count / warm_s),
        (f"responder capacity ({args.clients}x4 clients)", requests, capacity_s, requests / capacity_s),
    ]
    print(f"\n{'method':<34} {'certs':>7} {'seconds':>9} {'certs/s':>9} {'ratio':>7}")
    for method, certs, seconds, rate in rows:
        print(f"{method:<34} {certs:>7} {seconds:>9.2f} {rate:>9.0f} {rate / loop_rate:>6.1f}x")
    warm_rate, capacity_rate = rows[1][3], rows[2][3]
    vs_loop, vs_capacity = warm_rate / loop_rate, warm_rate / capacity_rate
    print(
        f"\nwarm vs openssl loop: {vs_loop:.1f}x (target >= {TARGET_VS_OPENSSL:g}x) "
        f"{'met' if vs_loop >= TARGET_VS_OPENSSL else 'MISSED'}"
    )
    print(
        f"warm vs responder capacity: {vs_capacity:.0%} (target >= {TARGET_VS_CAPACITY:.0%}) "
        f"{'met' if vs_capacity >= TARGET_VS_CAPACITY else 'MISSED'}"
    )
    return {
        "args": vars(args),
        "cpus": os.cpu_count(),
        "responder": f"openssl ocsp -multi {args.multi}" + (f" behind a {args.latency:g} ms delay" if args.latency > 0 else ""),
        "rows": [{"method": m, "certs": c, "seconds": round(s, 4), "certs_per_s": round(r, 1), "ratio": round(r / loop_rate, 2)} for m, c, s, r in rows],
        "warm_vs_openssl": round(vs_loop, 2),
        "warm_vs_capacity": round(vs_capacity, 3),
        "targets": {"vs_openssl": TARGET_VS_OPENSSL, "vs_capacity": TARGET_VS_CAPACITY},
    }


if __name__ == "__main__":
    main()
