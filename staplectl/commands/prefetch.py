"""staplectl prefetch: the prefetch worker as a foreground service.

Runs under systemd or in a container: one log line per event on stderr,
SIGTERM and SIGINT stop it within seconds, SIGHUP reloads the
configuration (a broken file keeps the old one running), ``--once`` renews
what is due and exits.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Annotated, Any, Optional

import typer

from engine.api import (
    NO_OCSP, STORE_DOWN_REASONS, SYSTEM_CLOCK, ActionEvent, ActionRunner, InputError, Leaf, PrefetchWorker,
    ResponderDownError, StapleError, StateStore, WorkerEvent, iso, load_all, redact,
)
from staplectl.config import Config
from staplectl.exitcodes import Exit
from staplectl.journal import journal_line, to_journal
from staplectl.metrics import Metrics, MetricsServer
from staplectl.renewal_actions import build_actions
from staplectl.options import Settings, command
from staplectl.printable import printable
from staplectl.from_config import open_stapler, worker_options
from staplectl.terminal import Terminal

LOG_FORMATS = ("text", "json")
#: failures an outage line already said, for every certificate at once
QUIET_REASONS = STORE_DOWN_REASONS | {ResponderDownError.reason}


def prefetch(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Renew what is due now, then exit.")] = False,
    metrics: Annotated[
        Optional[str],
        typer.Option("--metrics", metavar="HOST:PORT", help="Serve Prometheus metrics at http://HOST:PORT/metrics."),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format", metavar="text|json",
            help="Log lines on stderr: text for people, json (one object a line) for log collectors.",
        ),
    ] = "text",
) -> None:
    """Keep every configured certificate's staple fresh, in the foreground.

    Renews each response at a fraction of its validity (prefetch.renew_fraction),
    backs off on failures, and keeps the last good response in the cache
    until it truly expires. Logs one line per event to stderr. SIGHUP reloads
    the certificate list from the configuration; SIGTERM or SIGINT stop it
    within seconds. With --once: renew what is due and exit (0 all good,
    1 revoked or unknown, 3 any failure).
    """
    with command(ctx) as (opts, term):
        if log_format not in LOG_FORMATS:
            raise InputError(f"--log-format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
        address = _address(metrics) if metrics else None
        effective = opts.load_config()
        service = Service(opts, effective, term, log_format=log_format)
        if once:
            raise typer.Exit(int(service.run_once()))
        service.run(address)


def _settings(config: Config) -> dict:
    data = config.to_dict()
    data.pop("certificates")
    data.pop("config_file")
    return data


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--metrics {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9470")
    return host.strip("[]"), int(port)


class Service:
    def __init__(self, opts: Settings, config: Config, term: Terminal, *, log_format: str = "text") -> None:
        self.opts = opts
        self.config = config
        self.term = term
        self.log_format = log_format
        #: under systemd: no timestamp of ours, a <N> priority prefix (staplectl/journal.py)
        self.journal = log_format == "text" and to_journal()
        self.state = StateStore(config.state_path())
        self.stapler = open_stapler(config)
        self.metrics = Metrics(self.state, config.locks.path(), SYSTEM_CLOCK)
        self.worker = PrefetchWorker(
            self.stapler,
            state=self.state,
            options=worker_options(config),
            on_event=self.on_event,
        )
        self._stop = threading.Event()
        self._reload = threading.Event()
        #: file name -> the leaf last loaded from it
        self._loaded: dict[str, Leaf] = {}
        #: cert_id -> leaf, of every certificate loaded: what a renewal event names
        self._by_id: dict[str, Leaf] = {}
        #: a staple found fresh at load was revoked or unknown: what --once
        #: exits on, although no job of its run saw it
        self._loaded_not_good = False
        # what runs when staples change (staplectl/renewal_actions.py), on its own thread
        self.actions = build_actions(config.actions, lambda: self.stapler)
        self.runner = ActionRunner(self.actions, on_event=self.on_action)
        self._load(config)

    # -- logging ----------------------------------------------------------------

    def log(self, level: str, what: str, fields: dict[str, Any] | None = None) -> None:
        """One line on stderr; ``fields`` are the event's, for the JSON format."""
        if self.opts.quiet and level == "info":
            return
        now = iso(SYSTEM_CLOCK.now())
        if self.log_format == "json":
            line = json.dumps({"time": now, "level": level, "message": what, **(fields or {})})
        elif self.journal:
            line = journal_line(level, printable(what))
        else:
            line = f"{now} {level.upper():<7} {printable(what)}"  # one line, whatever a responder said
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except OSError:
            # a closed log pipe (`| tee` killed by the same Ctrl-C) must not
            # keep the worker from stopping cleanly and removing its heartbeat
            pass

    def on_action(self, event: ActionEvent) -> None:
        self.metrics.observe_action(event)
        fields = {"event": f"action_{event.outcome}", "action": event.action, "certificates": event.certificates}
        self.log(event.level, f"action {event.action} {event.outcome}: {event.detail}", fields)
        try:
            self.state.put_actions(self.runner.states())
        except StapleError as error:
            self.log("warning", f"action states not saved for the dashboard: {error}")

    def on_event(self, event: WorkerEvent) -> None:
        if event.action == "updated" and event.cert_id in self._by_id:
            self.runner.changed([self._by_id[event.cert_id]])
        self.metrics.observe(event)
        if event.action == "fresh" and event.level == "warning":
            self._loaded_not_good = True
        if event.level == "info" and event.action in ("fresh", "added", NO_OCSP) and not self.opts.verbose:
            # nothing happened yet: a line per idle look, or per certificate
            # of 100,000 at start, would drown the log (-v shows them; the
            # "loaded" line counts those without OCSP)
            return
        if event.action == "failed" and event.reason in QUIET_REASONS and not self.opts.verbose:
            # said once for all by the cache_down or responder_down line; -v shows each
            return
        reason = f" [{event.reason}]" if event.reason else ""
        fields = event.to_dict()
        del fields["when"], fields["level"], fields["detail"]
        fields["cert"] = fields.pop("name")
        self.log(event.level, f"{event.name} {event.action}{reason}: {event.detail}", fields)

    # -- certificates -----------------------------------------------------------

    def _load(self, config: Config) -> None:
        if not config.certificates:
            where = config.path or "the configuration"
            raise InputError(
                f"{where}: no certificates configured: add `certificates = [\"/path/*.pem\"]`"
            )
        try:
            verified = self.state.issued()  # what need not be verified again (engine.ocsp.issuers.find_issuer)
        except StapleError:
            verified = {}
        # without their DER: the service never sends a leaf anywhere, and at
        # 100,000 certificates the DER is 70 MB (engine.ocsp.certs.Leaf)
        loaded = load_all(config.certificates, verified=verified, keep_der=False)
        leaves = loaded.leaves
        for source, problem in loaded.problems:
            fields = {"event": "skipped", "file": str(source), "reason": problem.reason}
            before = self._loaded.get(str(source))
            if before is not None:
                # A file caught half-written by a deploy, or broken by
                # mistake: its certificate did not go anywhere, so its
                # staple must not lapse. Keep what was loaded from it.
                leaves.append(before)
                self.log(
                    "error", f"{source} skipped: {problem}; keeping the certificate loaded from it before", fields
                )
            else:
                self.log("error", f"{source} skipped: {problem}", fields)
        if not leaves:
            raise InputError(f"{config.path or 'configuration'}: none of the configured certificates could be loaded")
        added, removed = self.worker.load(leaves)
        self._loaded = {str(leaf.path): leaf for leaf in leaves if leaf.path is not None}
        self._by_id = {leaf.cert_id: leaf for leaf in leaves}
        for action in self.actions:
            action.load(leaves)
        self.runner.changed(leaves)  # the served files brought in line with the cache, once at (re)load
        no_ocsp = len(self.worker.without_ocsp)
        self.metrics.without_ocsp = no_ocsp
        apart = f", {no_ocsp} without OCSP: nothing to fetch" if no_ocsp else ""
        self.log(
            "info", f"loaded {len(loaded.leaves)} certificates ({added} added, {removed} removed{apart})",
            {"event": "loaded", "certificates": len(loaded.leaves), "added": added, "removed": removed,
             "without_ocsp": no_ocsp},
        )  # fmt: skip

    # -- modes ------------------------------------------------------------------

    def run_once(self) -> Exit:
        try:
            events = self.worker.run_due()
            actions_failed = bool(self.runner.run_now(list(self._by_id.values())))
        finally:
            self.close()
        if actions_failed:
            return Exit.FAILED
        unservable = any(leaf.must_staple for leaf in self.worker.without_ocsp.values())
        if unservable or any(e.action == "failed" for e in events):
            return Exit.FAILED
        if self._loaded_not_good or any(e.level == "warning" for e in events):
            return Exit.NOT_GOOD
        return Exit.OK

    def run(self, address: tuple[str, int] | None) -> None:
        server = None
        if address:
            try:
                server = MetricsServer(*address, self.metrics.render)
            except OSError as exc:
                raise InputError(f"--metrics {address[0]}:{address[1]}: cannot listen: {exc.strerror}") from None
            server.start()
            host, port = server.address
            url = f"http://{host}:{port}/metrics"
            self.log("info", f"metrics at {url}", {"event": "metrics", "url": url})
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        self.worker.start()
        self.runner.start()
        cache = redact(self.stapler.cache.uri)
        self.log(
            "info", f"prefetch worker started (pid {os.getpid()}, cache {cache})",
            {"event": "started", "pid": os.getpid(), "cache": cache},
        )
        try:
            while not self._stop.is_set():
                # signal handlers only set events: the work happens here,
                # outside the handler, where locks may be taken safely
                self._stop.wait(0.5)
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
        finally:
            self.log("info", "stopping", {"event": "stopping"})
            clean = self.worker.stop()
            self.runner.stop()
            if server:
                server.stop()
            self.close()
            self.log(
                "info", "stopped" if clean else "stopped; refreshes still in flight were abandoned",
                {"event": "stopped", "clean": clean},
            )

    def reload(self) -> None:
        self.log("info", "SIGHUP: reloading the configuration", {"event": "reloading"})
        try:
            config = self.opts.load_config()
            self._load(config)
        except StapleError as error:
            self.log(
                "error", f"reload failed, keeping the running configuration: {error}",
                {"event": "reload_failed", "reason": error.reason},
            )
            return
        if _settings(config) != _settings(self.config):
            self.log(
                "warning",
                "only the certificate list is reloaded; the other changed settings "
                "(cache, locks, prefetch, responder, request, actions) take effect at the next start",
            )
        self.config = config
        self.worker.wake()

    def close(self) -> None:
        try:
            self.stapler.close()
        except RuntimeError:
            pass  # a fetch past the stop grace still holds its lock: the process lets go at exit
        self.state.close()
