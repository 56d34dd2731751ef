"""What a responder can serve, measured by a plain load loop: pre-built
requests (the bytes staplectl warm sends), one connection each, the answer
read to the end and its status checked, nothing validated or stored, from
several processes keeping a given number of requests in flight
(bench/warm.py's capacity runs).
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.pki import Issued


def http_request(der: bytes, port: int) -> bytes:
    """The request warm sends for ``der``, byte for byte but the User-Agent's value."""
    return (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept-Encoding: identity\r\n"
        "User-Agent: load\r\nAccept: application/ocsp-response\r\nConnection: close\r\n"
        f"Content-Type: application/ocsp-request\r\nContent-Length: {len(der)}\r\n\r\n"
    ).encode() + der


def _post_all(port: int, requests: list[bytes], threads: int, errors: multiprocessing.Queue) -> None:
    position = iter(range(len(requests)))
    lock = threading.Lock()
    failed = []

    def client() -> None:
        while True:
            with lock:
                n = next(position, None)
            if n is None:
                return
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(requests[n])
                    chunks = []
                    while data := sock.recv(65536):
                        chunks.append(data)
                answer = b"".join(chunks)
                head, _, body = answer.partition(b"\r\n\r\n")
                if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")) or not body:
                    failed.append(n)
            except OSError:
                failed.append(n)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    errors.put(len(failed))


def responder_capacity(
    port: int, leaves: list[Issued], issuer: Issued, processes: int, in_flight: int, rounds: int
) -> tuple[int, float, int]:
    """(requests, seconds, failures): ``rounds`` requests per certificate,
    ``in_flight`` at a time, from up to ``processes`` processes."""
    requests = [
        http_request(
            ocsp.OCSPRequestBuilder().add_certificate(leaf.cert, issuer.cert, hashes.SHA1()).build()
            .public_bytes(serialization.Encoding.DER),
            port,
        )
        for leaf in leaves
    ] * rounds
    processes = min(processes, in_flight)
    threads = [in_flight // processes + (n < in_flight % processes) for n in range(processes)]
    errors: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_post_all, args=(port, requests[i::processes], threads[i], errors))
        for i in range(processes)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return len(requests), elapsed, sum(errors.get() for _ in workers)
