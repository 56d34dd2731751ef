"""The faults, one at a time, with healthy gaps between them, cycling until the end.

Responder faults (one CA at a time, rotating A, B, C), each for at most
fault_fraction (40 %) of that CA's validity, so that a service doing its
job keeps the CA's staples through it:

    hang              accepts, reads the request, never answers while the fault lasts
    http_500          HTTP 500 (with a good response as the body: the status must win)
    try_later         responseStatus tryLater
    forged_signature  a good response whose signature is corrupted
    rogue_signer      a response signed by a self-signed "responder" outside the chain
    expired           nextUpdate 30 s in the past: within RFC 6960's clock skew,
                      so only the rule "never store past nextUpdate" refuses it
    flap              good and hanging alternate every flap_period seconds

Cache faults (memcached and redis runs):

    cache_restart     stop (SIGTERM) and start again at once, empty, same port
    cache_outage      down for outage_seconds, then back empty

Service faults:

    kill              SIGKILL right after an "updated" line arrives (a write
                      just happened and more are under way), then started again at once
    sighup_broken     a broken configuration (rotating: not TOML, a bad duration,
                      no certificate matching) written in place, SIGHUP: it must
                      log reload_failed and keep running; the good file back,
                      SIGHUP: it must log loaded, with every certificate
    cert_replace      a new leaf of the same CA written atomically over a
                      configured certificate's file, then SIGHUP as a deploy hook sends

Each fault's own findings (no reload_failed, a wrong count of outage
lines...) are its FaultEvent's problems, tallied as service_problems.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from tests.soak.report import Tally
from tests.soak.sabotage import Saboteur
from tests.soak.service import Service
from tests.soak.settings import CACHE_FAULTS, RESPONDER_FAULTS, SoakSettings
from tests.soak.timeline import FaultEvent, Timeline
from tests.soak.world import World


class Faults:
    def __init__(
        self, settings: SoakSettings, world: World, service: Service, timeline: Timeline, tally: Tally,
        saboteur: Saboteur | None = None, monitor: Any = None,
    ) -> None:
        self.saboteur = saboteur
        self.monitor = monitor
        self.end_at = float("inf")
        self.settings = settings
        self.world = world
        self.service = service
        self.timeline = timeline
        self.tally = tally
        self._responder_ca = itertools.cycle(range(3))
        self._replace_ca = itertools.cycle((1, 2, 0))
        self._broken = itertools.count()
        self.error: BaseException | None = None

    # -- the schedule ------------------------------------------------------------------

    def run(self, stop: threading.Event, end_at: float) -> None:
        kinds = itertools.cycle(self.settings.faults_for_provider())
        self.end_at = end_at
        try:
            for sabotage in self.settings.sabotage:
                if stop.wait(self.settings.gap_seconds):
                    return
                self.do(f"sabotage:{sabotage}", stop)
            while True:
                kind = next(kinds)
                needed = self.settings.gap_seconds + self._length(kind)
                if time.time() + needed > end_at:
                    return  # the rest of the run is healthy
                if stop.wait(self.settings.gap_seconds):
                    return
                self.do(kind, stop)
        except BaseException as exc:  # told to the run, which fails on it
            self.error = exc
            raise

    def _length(self, kind: str) -> float:
        """About how long doing the fault takes (its aftermath may overlap the next gap)."""
        s = self.settings
        if kind in RESPONDER_FAULTS:
            return max(s.fault_length(ca) for ca in range(3))
        if kind == "cache_restart":
            return s.refill_bound  # it waits that long to count the outage lines
        if kind == "cache_outage":
            return s.outage_seconds + s.refill_bound
        if kind == "kill":
            return 3.0
        if kind == "sighup_broken":
            return 5.0
        return 2.0  # cert_replace: a write and a SIGHUP

    def do(self, kind: str, stop: threading.Event) -> FaultEvent:
        if kind.startswith("sabotage:"):
            assert self.saboteur is not None
            event = self.timeline.begin(kind)
            self.saboteur.do(kind.split(":", 1)[1], stop, event.details)
            self.timeline.finish(event)
        elif kind in RESPONDER_FAULTS:
            event = self._responder(kind, stop)
        elif kind in CACHE_FAULTS:
            event = self._cache(kind, stop)
        else:
            event = getattr(self, f"_{kind}")(stop)
        for problem in event.problems:
            self.tally.add(kind, "service_problems", 1, {"fault": kind, "start": round(event.start, 3), "problem": problem})
        self.tally.add(kind, "runs")
        return event

    # -- responders -----------------------------------------------------------------------

    def _responder(self, kind: str, stop: threading.Event) -> FaultEvent:
        farm = self.world.farm
        assert farm is not None
        ca = next(self._responder_ca)
        validity = self.settings.validity[ca]
        length = self.settings.fault_length(ca)
        waited = self._wait_for_renewals(ca, length, stop)
        good_times: dict[str, Any] = {"this_update_offset": -1, "next_update_offset": validity}
        before = farm.counts()[ca]
        event = self.timeline.begin(kind, ca)
        event.details["waited_for_renewals_s"] = round(waited, 1)
        # hang: the answer is held past the fault (and far past the 3 s timeout)
        hang = {"delay": length + 10}
        if kind == "hang":
            farm.behave(ca, **hang)
        elif kind == "http_500":
            farm.behave(ca, http_status=500, **good_times)
        elif kind == "try_later":
            farm.behave(ca, response_status="try_later")
        elif kind == "forged_signature":
            farm.behave(ca, corrupt_signature=True, **good_times)
        elif kind == "rogue_signer":
            farm.behave(ca, signer="rogue", **good_times)
        elif kind == "expired":
            farm.behave(ca, this_update_offset=-(validity + 30), next_update_offset=-30)
        elif kind == "flap":
            farm.flap(ca, self.settings.flap_period, **hang)
        stop.wait(length)
        farm.good(ca, validity)
        self.timeline.finish(event)
        event.details.update(seconds=round(length, 1), requests=farm.counts()[ca] - before)
        return event

    def _wait_for_renewals(self, ca: int, length: float, stop: threading.Event) -> float:
        """Wait (at most half a validity) until the CA has renewals coming due in the fault's window.

        After a cache refill every staple was fetched in the same second,
        and a CA's renewals then come in one burst every half-validity: a
        fault that falls between two bursts meets nothing and tests
        nothing. The CAs still take their turns; only the start moves.
        """
        if self.monitor is None:
            return 0.0
        certs = sum(1 for c in self.world.certs.active() if c.ca == ca)
        want = max(1, certs // 10)
        began = time.time()
        latest = min(began + self.settings.validity[ca] / 2, self.end_at - length - 1)
        start = began
        while start <= latest:
            if self.monitor.renewals_due(ca, start + 1, start + length - 1) >= want:
                break
            start += 1.0
        else:
            start = began  # none in sight: go ahead now
        stop.wait(max(0.0, start - time.time()))
        return time.time() - began

    # -- the cache server --------------------------------------------------------------------

    def _cache(self, kind: str, stop: threading.Event) -> FaultEvent:
        cache = self.world.cache
        assert cache is not None
        before = self.service.metrics()
        pid = self.service.pid
        event = self.timeline.begin(kind)
        event.details["down_at"] = time.time()
        cache.stop()
        if kind == "cache_outage":
            stop.wait(self.settings.outage_seconds)
        event.details["up_at"] = cache.start()
        self.timeline.finish(event, event.details["up_at"])
        event.details["down_s"] = round(event.details["up_at"] - event.details["down_at"], 2)
        # The outage must be told: once when it starts, once when it ends
        # (the service looks at the cache at least every 10 s), and counted.
        stop.wait(self.settings.refill_bound)
        after = self.service.metrics()
        lines = [
            line for line in self.service.snapshot()
            if line.event in ("cache_down", "cache_up") and line.t >= event.details["down_at"] - 0.5
        ]  # fmt: skip
        down = sum(line.event == "cache_down" for line in lines)
        up = sum(line.event == "cache_up" for line in lines)
        event.details.update(cache_down_lines=down, cache_up_lines=up, log=[line.raw for line in lines][:6])
        if before is not None and after is not None and self.service.pid == pid:
            delta = after.get("staplectl_cache_outages_total", 0) - before.get("staplectl_cache_outages_total", 0)
            event.details["outages_metric_delta"] = delta
            event.details["cache_up_metric"] = after.get("staplectl_cache_up")
            if delta != down:
                event.problems.append(f"staplectl_cache_outages_total rose by {delta:g}, but {down} cache_down lines")
            if after.get("staplectl_cache_up") != 1:
                event.problems.append(f"staplectl_cache_up is {after.get('staplectl_cache_up')} after the cache came back")
        else:
            event.problems.append("metrics not readable before and after the cache fault")
        if kind == "cache_outage" and (down, up) != (1, 1):
            event.problems.append(f"a {event.details['down_s']} s outage logged {down} cache_down and {up} cache_up lines (want 1 and 1)")
        if kind == "cache_restart" and (down != up or down > 1):
            event.problems.append(f"a restart logged {down} cache_down and {up} cache_up lines (want as many ups as downs, at most 1)")
        return event

    # -- the service ----------------------------------------------------------------------------

    def _kill(self, stop: threading.Event) -> FaultEvent:
        mark = self.service.mark()
        wait = max(self.settings.validity) / 2
        line = self.service.wait_for(lambda l: l.event == "updated" and l.pid == self.service.pid, wait, since=mark)
        event = self.timeline.begin("kill")
        pid = self.service.pid
        killed = self.service.kill()
        incarnation = self.service.start()
        self.timeline.finish(event, incarnation.started)
        event.details.update(
            pid=pid, after_updated_line=line is not None,
            after_line_ms=round(1000 * (killed - line.t), 1) if line else None,
            restarted_in_s=round(incarnation.started - killed, 2), new_pid=incarnation.pid,
        )  # fmt: skip
        return event

    def _sighup_broken(self, stop: threading.Event) -> FaultEvent:
        what, text = self.world.broken_config(next(self._broken))
        event = self.timeline.begin("sighup_broken")
        pid = self.service.pid
        mark = self.service.mark()
        self.world.write_config(text)
        event.details.update(broken=what, broken_at=time.time())
        self.service.sighup()
        line = self.service.wait_for(
            lambda l: l.pid == pid and l.event in ("reload_failed", "loaded"), 10, since=mark
        )
        if line is None or line.event != "reload_failed":
            event.problems.append(f"after SIGHUP with a broken file ({what}): {line.raw if line else 'no reload_failed line in 10 s'}")
        else:
            event.details["reload_failed"] = line.data.get("message") if line.data else line.raw
        stop.wait(2.0)  # a moment with the broken file in place: the readers meet it too
        if not self.service.alive():
            event.problems.append("the service exited after a SIGHUP with a broken configuration")
        mark = self.service.mark()
        self.world.write_config()
        event.details["restored_at"] = time.time()
        self.service.sighup()
        line = self.service.wait_for(
            lambda l: l.pid == pid and l.event in ("reload_failed", "loaded"), 10, since=mark
        )
        expected = len(self.world.certs.active())
        if line is None or line.event != "loaded":
            event.problems.append(f"after SIGHUP with the good file back: {line.raw if line else 'no loaded line in 10 s'}")
        elif line.data and line.data.get("certificates") != expected:
            event.problems.append(f"reloaded {line.data.get('certificates')} certificates, {expected} configured")
        self.timeline.finish(event)
        return event

    def _cert_replace(self, stop: threading.Event) -> FaultEvent:
        ca = next(self._replace_ca)
        event = self.timeline.begin("cert_replace", ca)
        pid = self.service.pid
        old, new = self.world.prepare_replacement(ca)
        # known before its file exists: a command that reads the new file
        # right away must find a certificate of the run
        new.expected_from = float("inf")
        self.world.certs.add(new)
        self.world.commit_replacement(new)
        mark = self.service.mark()
        sighup = self.service.sighup()
        new.expected_from = sighup + self.settings.replace_bound
        old.retired_at = sighup
        event.details.update(old_sha1=old.sha1, new_sha1=new.sha1, file=str(new.path), sighup_at=sighup)
        line = self.service.wait_for(lambda l: l.pid == pid and l.event in ("reload_failed", "loaded"), 10, since=mark)
        if line is None or line.event != "loaded":
            event.problems.append(f"after replacing {new.path.name} and SIGHUP: {line.raw if line else 'no loaded line in 10 s'}")
        elif line.data and (line.data.get("added"), line.data.get("removed")) != (1, 1):
            event.problems.append(f"reload after one replaced certificate: {line.raw}")
        self.timeline.finish(event)
        return event
