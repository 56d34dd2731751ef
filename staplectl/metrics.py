"""Prometheus metrics for `staplectl prefetch --metrics HOST:PORT`.

The text exposition format (version 0.0.4), written by hand: a dozen
lines of formatting do not justify a client library. Per-certificate
figures come from the worker's state store, counters from its events, and
fetch lock figures (per stripe, a group of certificates) from the shared
stats file, so a scrape never takes a lock the request path needs.
"""

from __future__ import annotations

import platform
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from engine.api import (
    STORE_DOWN_REASONS, ActionEvent, Clock, StateStore, StateStoreError, WorkerEvent, read_stats, responder_key,
)
from staplectl import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


#: upper bounds of the fetch duration histogram, seconds: a responder on the
#: same network answers in tens of milliseconds, a CDN's in a few hundred, a
#: struggling one in seconds; responder.timeout (10 s) ends the rest
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: failures that asked no responder: nothing to time
_NOT_ASKED = STORE_DOWN_REASONS | {"responder_down"}


class Histogram:
    """Cumulative buckets, sum and count per label value, as Prometheus reads them."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._series: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, key: str, value: float) -> None:
        counts, total = self._series.setdefault(key, ([0] * (len(self.bounds) + 1), [0.0]))
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                counts[i] += 1
        counts[-1] += 1  # +Inf: every observation
        total[0] += value

    def samples(self, label: str) -> list[tuple[str, float]]:
        """(suffix and labels, value) for every key, sorted: ``_bucket{responder="…",le="0.05"}``."""
        out: list[tuple[str, float]] = []
        for key, (counts, total) in sorted(self._series.items()):
            base = f'{label}="{_label(key)}"'
            for bound, n in zip([*map(repr, self.bounds), "+Inf"], counts):
                out.append((f'_bucket{{{base},le="{bound}"}}', n))
            out.append((f"_sum{{{base}}}", total[0]))
            out.append((f"_count{{{base}}}", counts[-1]))
        return out


class Metrics:
    def __init__(self, state: StateStore, locks_dir: Path, clock: Clock) -> None:
        self.state = state
        self.locks_dir = locks_dir
        self.clock = clock
        self._lock = threading.Lock()
        self._successes = 0
        self._last_states: list = []
        #: (reason, responder) -> failed refreshes
        self._failures: Counter[tuple[str, str]] = Counter()
        #: per responder: how long refreshes that asked it took
        self._durations = Histogram(DURATION_BUCKETS)
        #: per store (cache, state): 1 while it works, and its outages by reason
        self._up = {"cache": 1, "state": 1}
        #: loaded certificates that name no OCSP responder (set by the service at each load)
        self.without_ocsp = 0
        #: per renewal action: runs by result, consecutive failures, last success
        self._action_runs: Counter[tuple[str, str]] = Counter()
        self._action_failing: dict[str, int] = {}
        self._action_success: dict[str, float] = {}
        self._responders: dict[str, int] = {}
        self._responder_outages: Counter[str] = Counter()
        self._outages: Counter[tuple[str, str]] = Counter(
            {("cache", reason): 0 for reason in sorted(STORE_DOWN_REASONS)} | {("state", "state_store"): 0}
        )

    def observe_action(self, event: ActionEvent) -> None:
        with self._lock:
            ok = event.outcome == "ran"
            self._action_runs[(event.action, "ok" if ok else "failed")] += 1
            self._action_failing[event.action] = 0 if ok else self._action_failing.get(event.action, 0) + 1
            if ok:
                self._action_success[event.action] = event.when

    def observe(self, event: WorkerEvent) -> None:
        responder = event.responder  # scheme://host:port, for a refresh's event
        with self._lock:
            asked = event.action == "updated" or (event.action == "failed" and event.reason not in _NOT_ASKED)
            if asked and event.duration is not None:
                self._durations.observe(responder, event.duration)
            if event.action == "updated":
                self._successes += 1
            elif event.action == "failed":
                self._failures[(event.reason or "unknown", responder)] += 1
            elif event.action in ("cache_down", "state_down"):
                store = event.action.removesuffix("_down")
                self._up[store] = 0
                self._outages[(store, event.reason or "unknown")] += 1
            elif event.action in ("cache_up", "state_up"):
                self._up[event.action.removesuffix("_up")] = 1
            elif event.action in ("responder_down", "responder_up"):
                # one series per responder the worker uses: a few, not one per certificate
                self._responders[event.name] = int(event.action == "responder_up")
                if event.action == "responder_down":
                    self._responder_outages[event.name] += 1

    def render(self) -> str:
        now = self.clock.now()
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {value:.15g}" for labels, value in samples)  # timestamps need every digit

        try:
            states = self._last_states = self.state.all()
        except StateStoreError:
            # the state file cannot be read now: what was read last, and
            # staplectl_state_up says why (the worker saw it too)
            states = self._last_states

        def cert_labels(s, **more: str) -> str:
            extra = "".join(f',{key}="{_label(value)}"' for key, value in more.items())
            return f'{{cert="{_label(s.name)}",cert_sha1="{s.cert_id}"{extra}}}'

        family("staplectl_build_info", "gauge", "The running staplectl.",
               [(f'{{version="{__version__}",python="{platform.python_version()}"}}', 1)])
        # One series per certificate the worker keeps, staple or not: an
        # alert on a missing staple needs a series to fire on.
        family(
            "staplectl_staple_seconds_until_next_update", "gauge",
            "Seconds until the cached staple's nextUpdate (negative: expired; 0: no staple).",
            [(cert_labels(s), (s.next_update - now) if s.next_update is not None else 0.0) for s in states],
        )
        family(
            "staplectl_staple_valid", "gauge",
            "1 while the certificate has a servable staple (any status), 0 when none.",
            [(cert_labels(s), int(s.next_update is not None and s.next_update > now and s.status is not None))
             for s in states],
        )  # fmt: skip
        family(
            "staplectl_staple_status", "gauge",
            "1 for the status of the certificate's staple (good, revoked, unknown; none without a staple).",
            [(cert_labels(s, status=s.status or "none"), 1) for s in states],
        )
        family(
            "staplectl_staple_last_success_timestamp_seconds", "gauge",
            "When the certificate's staple was last fetched and stored.",
            [(cert_labels(s), s.last_success) for s in states if s.last_success is not None],
        )
        family(
            "staplectl_staple_seconds_until_refresh", "gauge",
            "Seconds until the worker's next attempt for this certificate.",
            [(cert_labels(s), s.next_attempt - now) for s in states if s.next_attempt is not None],
        )
        family(
            "staplectl_staple_consecutive_failures", "gauge",
            "Failed refreshes since the last success.",
            [(cert_labels(s), s.failures) for s in states],
        )
        with self._lock:
            successes = self._successes
            durations = self._durations.samples("responder")
            failures = sorted(self._failures.items())
            up = dict(self._up)
            outages = sorted(self._outages.items())
            responders = dict(self._responders)
            responder_outages = sorted(self._responder_outages.items())
        # every responder the certificates use: a few series, not one per certificate
        for key in {responder_key(s.responder) for s in states if s.responder}:
            responders.setdefault(key, 1)
        family("staplectl_responder_up", "gauge",
               "1 while the responder answers, 0 while it is down (one probe at a time).",
               [(f'{{responder="{_label(key)}"}}', value) for key, value in sorted(responders.items())])
        family("staplectl_responder_outages_total", "counter", "Times the responder stopped answering.",
               [(f'{{responder="{_label(key)}"}}', n) for key, n in responder_outages])
        for store, what in (("cache", "the cache"), ("state", "the worker's state file")):
            family(f"staplectl_{store}_up", "gauge", f"1 while {what} works for the worker, 0 during an outage.",
                   [("", up[store])])
            family(f"staplectl_{store}_outages_total", "counter",
                   f"Outages of {what}, by reason (each logged once when it starts and once when it ends).",
                   [(f'{{reason="{_label(reason)}"}}', n) for (kind, reason), n in outages if kind == store])
        family(
            "staplectl_fetch_success_total", "counter",
            "Responses fetched, validated and stored.",
            [("", successes)],
        )
        family("staplectl_fetch_duration_seconds", "histogram",
               "How long renewals that asked the responder took (fetch lock, exchange, validation, store).",
               durations)  # fmt: skip
        family(
            "staplectl_fetch_failures_total", "counter",
            "Failed refreshes, by reason and responder.",
            [(f'{{reason="{_label(reason)}",responder="{_label(responder)}"}}', v) for (reason, responder), v in failures],
        )
        every = read_stats(self.locks_dir)
        # Fetch locks are per certificate, their figures kept per stripe (a
        # group of certificates): summed here, so that the series stay a few
        # whatever the number of stripes; `staplectl locks` shows each one.
        family("staplectl_fetch_lock_acquisitions_total", "counter", "Fetch lock acquisitions.",
               [("", sum(s.acquisitions for s in every))])
        family("staplectl_fetch_lock_contended_total", "counter", "Acquisitions that had to wait.",
               [("", sum(s.contended for s in every))])
        family("staplectl_fetch_lock_wait_seconds_total", "counter", "Total time spent waiting for fetch locks.",
               [("", sum(s.total_wait for s in every))])
        family("staplectl_fetch_lock_wait_seconds_max", "gauge", "Longest wait for a fetch lock.",
               [("", max((s.max_wait for s in every), default=0.0))])
        family("staplectl_fetch_locks_held", "gauge", "Certificates whose fetch lock is held now, on this host.",
               [("", sum(len(s.holders) for s in every))])
        family("staplectl_certificates", "gauge", "Certificates the worker keeps fresh.", [("", len(states))])
        with self._lock:
            runs, failing, success = dict(self._action_runs), dict(self._action_failing), dict(self._action_success)
        family("staplectl_action_runs_total", "counter", "Renewal action runs, by action and result.",
               [(f'{{action="{_label(name)}",result="{result}"}}', n) for (name, result), n in sorted(runs.items())])
        family("staplectl_action_consecutive_failures", "gauge", "Failed runs of each renewal action since its last success.",
               [(f'{{action="{_label(name)}"}}', n) for name, n in sorted(failing.items())])
        family("staplectl_action_last_success_timestamp_seconds", "gauge", "When each renewal action last succeeded.",
               [(f'{{action="{_label(name)}"}}', t) for name, t in sorted(success.items())])  # fmt: skip
        family("staplectl_certificates_without_ocsp", "gauge",
               "Loaded certificates that name no OCSP responder: nothing to fetch, not counted above.",
               [("", self.without_ocsp)])  # fmt: skip
        return "\n".join(lines) + "\n"


#: scrapes served at once; more wait in the listen backlog, then get refused
MAX_CONNECTIONS = 16
#: a client that sends nothing (or too slowly) for this long is dropped
READ_TIMEOUT = 5.0


class MetricsServer:
    """Serves GET /metrics on a background thread until stop().

    Anyone who can reach the port can connect: a connection that sends
    nothing is dropped after READ_TIMEOUT, and no more than MAX_CONNECTIONS
    are served at once, so half-sent requests cannot pile up threads.
    IPv6 addresses work (``[::1]:9470``).
    """

    def __init__(self, host: str, port: int, render: Callable[[], str]) -> None:
        import http.server  # here: every command loads this module, few serve metrics
        import socket

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = READ_TIMEOUT  # applied to the socket by StreamRequestHandler.setup

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                try:
                    body = render().encode()
                except Exception:  # a bug: said in the log, answered 500, the service goes on
                    traceback.print_exc()
                    self.send_error(500, "rendering the metrics failed; see the service's log")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes are not events worth a log line

        slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            # socketserver's backlog of 5 drops the SYNs of a burst: those
            # clients retry for seconds instead of being refused at once
            request_queue_size = 128

            def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
                if not slots.acquire(blocking=False):
                    self.shutdown_request(request)  # full: refuse at once rather than queue a thread
                    return
                threading.Thread(
                    target=self.process_request_thread, args=(request, client_address),
                    name="metrics-scrape", daemon=True,
                ).start()

            def process_request_thread(self, request, client_address):  # type: ignore[no-untyped-def]
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    slots.release()

            def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
                if isinstance(sys.exc_info()[1], OSError):
                    return  # a client that went away or timed out is not the service's error
                super().handle_error(request, client_address)

        self.server = Server((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
