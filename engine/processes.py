"""warm's refreshes, in this process or spread over worker processes.

Validation, the store and the HTTP exchanges all run under the GIL, so one
process refreshing certificates uses one core at most. That is enough
against a responder across a network (one engine.refresh.fanout keeps 64
exchanges in flight with CPU to spare), so warm runs in one process unless
asked for more (``--processes``). Then a ``Team`` of worker processes
(``python -m engine.processes``) each runs its own engine.refresh.fanout,
built from the parent's EngineSettings, over the same cache and fetch locks (the
locks are open file description locks and the local store is SQLite,
both safe across processes), and the parent gathers what each
certificate came to. The parent keeps everything an operator sees: the
progress bar, the table, the JSON and the exit code.

- Each certificate goes to the worker of its stripe (stripe modulo the
  number of workers): a partition by certificate id, so a certificate
  listed twice still goes to one worker, whose fanout never refreshes it
  twice at once. The fetch locks would keep two workers' refreshes of it
  apart anyway; this spares the second one's wait.
- ``--concurrency`` stays the number of refreshes in flight for the whole
  run: each worker gets its share.
- Workers are new interpreters, not forks: the parent may have threads
  (a test's responder, a memcached client) and a fork would copy their
  locks held. They import the engine only, never a front end, and are started
  as soon as the number of certificate files is known, so that they start
  up while the parent loads the certificates.
- The parent sends each worker its certificates (DER, path, issuer) over
  a pipe; a worker sends back outcomes in batches, then "done". A worker
  that dies (killed, out of memory) closes its pipe: its certificates
  that had no outcome yet become failed rows, and the run exits 3. Its
  fetch locks go with it (the kernel drops them with their holder), and
  SQLite rolls back any write it left half done.
- A worker whose parent goes away or is done with it (its pipe to the
  worker closes) exits at once, rather than go on fetching for nobody.
  Workers run in their own process group, so Ctrl-C reaches the parent
  only, which stops them.

No front end here: a worker must start fast.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from engine.assembly import EngineSettings, build_stapler
from engine.errors import StapleError, UnexpectedError
from engine.locks.fetchlocks import DEFAULT_STRIPES, stripe_of
from engine.ocsp.certs import Leaf
from engine.refresh.fanout import Fanout
from engine.refresh.outcome import Outcome, failed, outcome_of
from engine.refresh.stapler import Refresh

#: a worker sends what it has at most this often, in seconds
SEND_INTERVAL = 0.02
#: how long a stopped worker may take to go before it is killed
STOP_GRACE = 5.0


class ReportedError(StapleError):
    """An error a worker process reported: its reason and message, as they were."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def process_count(asked: int | None, certificates: int, concurrency: int) -> int:
    """How many processes to refresh with: ``asked``, else one (a fanout
    keeps its exchanges in flight on one thread; see docs/warm.md); never
    more than there are certificates or refreshes in flight."""
    return max(1, min(asked or 1, concurrency, certificates))


# -- the parent -------------------------------------------------------------------------


class _Worker:
    """One worker process and the two pipes to it."""

    def __init__(self) -> None:
        self.indices: list[int] = []
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # Exactly the parent's import path, and not the working directory
        # (-P): a directory there named like one of our packages must not
        # be what a worker imports.
        path = os.pathsep.join(os.path.abspath(p) if p else os.getcwd() for p in sys.path)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-m", "engine.processes", str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
                process_group=0,
            )
        except BaseException as exc:
            os.close(to_child_w)
            os.close(from_child_r)
            if isinstance(exc, OSError):
                raise UnexpectedError(f"cannot start a worker process ({sys.executable}): {exc}") from None
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.to_child = Connection(to_child_w, readable=False)
        self.from_child = Connection(from_child_r, writable=False)

    def how_it_ended(self) -> str:
        try:
            code = self.process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            return "closed its pipe without exiting"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"

    def stop(self) -> None:
        """Make sure the process is gone and its pipes closed.

        Closing our end of its input tells it we are done (or gone): a
        worker still waiting for work, or still refreshing, exits at once.
        """
        try:
            self.to_child.close()
            try:
                self.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        finally:
            self.from_child.close()


def _shares(leaves: list[Leaf], processes: int, stripes: int) -> list[list[int]]:
    """The indices of the leaves each worker gets: by stripe, so that all
    the leaves of one certificate go to the same worker."""
    shares: list[list[int]] = [[] for _ in range(processes)]
    for index, leaf in enumerate(leaves):
        shares[stripe_of(leaf.cert_id, stripes) % processes].append(index)
    return shares


def _payload(
    settings: EngineSettings, leaves: list[Leaf], indices: list[int], in_flight: int, force: bool, lock_timeout: float
) -> dict[str, Any]:
    issuers: dict[Any, int] = {}
    issuer_ders: list[bytes] = []
    jobs = []
    for index in indices:
        leaf = leaves[index]
        number = issuers.get(leaf.issuer)
        if number is None:
            number = issuers[leaf.issuer] = len(issuer_ders)
            issuer_ders.append(leaf.issuer.public_bytes(serialization.Encoding.DER))
        jobs.append((index, leaf.der, number, leaf.path_text, leaf.url_override))
    return {
        "settings": settings,
        "issuers": issuer_ders,
        "jobs": jobs,
        "in_flight": in_flight,
        "force": force,
        "lock_timeout": lock_timeout,
    }


class Team:
    """The worker processes of one warm.

    Started as soon as the number of certificate files is known
    (``start_for``, engine.ocsp.certfiles.load_all's ``on_files``), so that they
    start up while the parent still loads the certificates; given those
    once loaded (``refresh``); always ``stop``-ped.
    """

    def __init__(self, asked: int | None, concurrency: int) -> None:
        self.asked = asked
        self.concurrency = concurrency
        self.workers: list[_Worker] = []

    def start_for(self, files: int) -> None:
        wanted = process_count(self.asked, files, self.concurrency)
        while len(self.workers) < wanted and wanted > 1:
            self.workers.append(_Worker())

    @property
    def processes(self) -> int:
        return max(1, len(self.workers))

    def refresh(
        self,
        stapler: Any,
        settings: EngineSettings,
        leaves: list[Leaf],
        force: bool,
        lock_timeout: float,
        on_done: Callable[[Leaf, Outcome], None] = lambda leaf, outcome: None,
    ) -> list[Outcome]:
        """Refresh every leaf in the workers; outcomes in the order of the leaves.

        ``stapler`` is the parent's own, used only to show the cached staple
        of a certificate whose worker failed as a whole. The workers build
        theirs from ``settings`` (everything resolved: a default looked up in
        a worker could differ), so they open the same cache and locks.
        """
        workers = self.workers
        shares = _shares(leaves, len(workers), settings.stripes or DEFAULT_STRIPES)
        busy = [worker for worker, share in zip(workers, shares) if share]
        in_flight = [self.concurrency // len(busy) + (n < self.concurrency % len(busy)) for n in range(len(busy))]
        outcomes: list[Outcome | None] = [None] * len(leaves)

        def settle(index: int, outcome: Outcome) -> None:
            outcomes[index] = outcome
            on_done(leaves[index], outcome)

        def fail_the_rest(worker: _Worker, error_for: Callable[[Leaf], StapleError]) -> None:
            for index in worker.indices:
                if outcomes[index] is None:
                    settle(index, failed(stapler, leaves[index], error_for(leaves[index])))

        def died(worker: _Worker) -> None:
            # killed, out of memory, a crash in the interpreter, or it never started
            how, pid = worker.how_it_ended(), worker.process.pid
            fail_the_rest(worker, lambda leaf: UnexpectedError(
                f"{leaf.name}: worker process {pid} {how} before refreshing it"
            ))  # fmt: skip

        for worker, share in zip(workers, shares):
            worker.indices = share
        running = {}
        for worker, count in zip(busy, in_flight):
            try:
                worker.to_child.send(_payload(settings, leaves, worker.indices, count, force, lock_timeout))
            except OSError:
                died(worker)
            else:
                running[worker.from_child] = worker
        for worker in workers:
            if worker not in busy:
                worker.stop()  # no certificate in its share: nothing to do
        while running:
            for conn in wait(list(running)):
                worker = running[conn]  # type: ignore[index]
                try:
                    message = worker.from_child.recv()
                except Exception:  # EOFError mostly: nothing more will come from it
                    died(worker)
                    del running[conn]
                    continue
                if message[0] == "outcomes":
                    for index, staple, result, reason, text in message[1]:
                        error = None if reason is None else ReportedError(text, reason)
                        settle(index, Outcome(leaves[index], staple, result, error))
                    continue
                if message[0] == "fatal":
                    _, reason, text = message
                    fail_the_rest(worker, lambda leaf: ReportedError(text, reason))
                del running[conn]
        for worker in busy:  # never a certificate without a row
            fail_the_rest(worker, lambda leaf: UnexpectedError(f"{leaf.name}: its worker process gave no outcome"))
        return outcomes  # type: ignore[return-value]

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


# -- a worker -----------------------------------------------------------------------------


def _watch_parent(conn: Connection) -> None:
    """Exit when the parent goes: its end of our input pipe closes."""
    try:
        conn.recv()
    except (EOFError, OSError):
        pass
    os._exit(2)


def _work(work: dict[str, Any], outbox: queue.SimpleQueue[tuple[Any, ...] | None]) -> None:
    issuers = [x509.load_der_x509_certificate(der) for der in work["issuers"]]
    jobs = [
        (index, Leaf(cert=x509.load_der_x509_certificate(der), issuer=issuers[issuer],
                     path=Path(path) if path else None, url_override=url))
        for index, der, issuer, path, url in work["jobs"]
    ]  # fmt: skip
    stapler = build_stapler(work["settings"])

    def done(n: int, result: Refresh | StapleError) -> None:
        index, leaf = jobs[n]
        outcome = outcome_of(stapler, leaf, result)
        error = outcome.error
        reason, text = (error.reason, str(error)) if error is not None else (None, None)
        outbox.put((index, outcome.staple, outcome.result, reason, text))

    try:
        fanout = Fanout(stapler, work["in_flight"], force=work["force"], lock_timeout=work["lock_timeout"])
        fanout.run([leaf for _, leaf in jobs], done)
    finally:
        stapler.close()


def _send(outbox: queue.SimpleQueue[tuple[Any, ...] | None], conn: Connection) -> None:
    """Send outcomes in batches, at most one message per SEND_INTERVAL: a
    message per certificate cost the parent (and so the run) a wake-up each."""
    try:
        while True:
            batch = [outbox.get()]
            while batch[-1] is not None and not outbox.empty():
                batch.append(outbox.get())
            last = batch[-1] is None
            if last:
                batch.pop()
            if batch:
                conn.send(("outcomes", batch))
            if last:
                return
            time.sleep(SEND_INTERVAL)
    except OSError:
        os._exit(2)  # the parent is gone


def main(argv: list[str]) -> int:
    """A worker: ``python -m engine.processes IN_FD OUT_FD``."""
    inbox = Connection(int(argv[0]), writable=False)
    conn = Connection(int(argv[1]), readable=False)
    try:
        work = inbox.recv()  # while the parent loads the certificates
    except EOFError:
        return 0  # it needs us no more (or is gone)
    threading.Thread(target=_watch_parent, args=(inbox,), name="watch-parent", daemon=True).start()
    outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
    sender = threading.Thread(target=_send, args=(outbox, conn), name="send", daemon=True)
    sender.start()
    last: tuple[Any, ...] = ("done",)
    try:
        _work(work, outbox)
    except StapleError as error:  # the cache or the lock directory could not be opened
        last = ("fatal", error.reason, str(error))
    except Exception as exc:
        last = ("fatal", UnexpectedError.reason, f"worker process {os.getpid()}: unexpected {type(exc).__name__}: {exc}")
    outbox.put(None)
    sender.join()
    conn.send(last)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
