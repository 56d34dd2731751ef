"""The continuous checks, from outside the service: the store read every
sample_interval (0.5 s), every staple validated by tests.soak.ocspcheck.

Per sample and certificate the store holds a valid staple, none, an
expired one, or one that fails validation. From that:

- lapsed staple-seconds: a configured certificate without a valid,
  unexpired staple counts the sample interval as lapsed; excused (and
  tallied apart) while the timeline says its CA's responder is faulted or
  the cache is down or refilling (timeline.py);
- invalid stored: a staple that fails signature, CertID or status checks,
  or a flag byte other than 0x01, ever;
- expired stored: a staple that appeared in the store already past its
  nextUpdate (it was past it at the previous sample, when it was not there);
- rollbacks: a certificate's stored thisUpdate going backwards (a failed
  or older fetch replacing a newer staple), except after the cache was
  emptied by a fault;
- vanished: a staple that was there and is gone before its TTL
  (nextUpdate + 300 s) ran out, outside a cache fault: the failure that
  started this soak (writes gone once another process read the store);
- lost writes: every write the service logged ("updated", with its
  thisUpdate) and every one a one-shot command reported must be readable
  within write_visible_within (1 s): a sample that began after that
  deadline must see thisUpdate >= the logged one;
- refill and recovery: after a cache fault, the seconds until every
  staple is back; after a responder fault, until every staple of its CA
  is valid again.

The monitor also keeps (records.py), per certificate, the intervals in
which the store held a valid staple and every staple it has judged, so
that what the one-shot commands claim (check OK, inspect valid, an
exported file, the dashboard) can be set against what the store held at
that time.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
import time
from typing import Any

from cryptography.x509 import ocsp

from tests.soak.ocspcheck import Judge, Verdict
from tests.soak.records import Claim, Interval, PendingWrite, Track
from tests.soak.report import Tally
from tests.soak.service import LogLine
from tests.soak.settings import CACHE_FAULTS, RESPONDER_FAULTS, SoakSettings
from tests.soak.store import StoreUnreadable
from tests.soak.timeline import Timeline
from tests.soak.world import CertInfo, World

TTL_SLACK = 300.0
#: how long after its nextUpdate a staple may still lie in the served
#: directory: the action runs at nextUpdate, a sample every 0.5 s sees it
SERVED_GRACE = 2.0


def _sample_at_or_before(intervals: list[Interval], t: float) -> tuple[float, str] | None:
    """(time, state) of the last sample at or before t (approximately t when t falls inside a run of samples)."""
    index = bisect.bisect_right([i.start for i in intervals], t) - 1
    if index < 0:
        return None
    interval = intervals[index]
    return (min(t, interval.end), interval.state)


def _sample_at_or_after(intervals: list[Interval], t: float) -> tuple[float, str] | None:
    index = bisect.bisect_left([i.end for i in intervals], t)
    if index >= len(intervals):
        return None
    interval = intervals[index]
    return (max(t, interval.start), interval.state)


def parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    import calendar

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


class Monitor:
    def __init__(
        self, settings: SoakSettings, world: World, reader: Any, timeline: Timeline, tally: Tally
    ) -> None:
        self.settings = settings
        self.world = world
        self.reader = reader
        self.timeline = timeline
        self.tally = tally
        self.judge = Judge()
        self._lock = threading.RLock()
        self.tracks: dict[str, Track] = {}
        self.pending: list[PendingWrite] = []
        self.claims: list[Claim] = []
        self.claims_judged = 0
        self.last_t: float | None = None
        self.samples = 0
        self.max_gap = 0.0
        self.read_errors = 0
        self.last_read_error: str | None = None
        self.writes_checked = 0
        self.writes_excused = 0
        self.write_latency_max = 0.0
        self.claims_unverifiable = 0
        self.all_valid_at: float | None = None
        self._sample_cost = 0.0

    # -- writes to check ----------------------------------------------------------

    def on_log(self, line: LogLine) -> None:
        """Called by the service's log reader for every line as it arrives."""
        data = line.data
        if not data or data.get("event") != "updated":
            return
        this_update = parse_iso(data.get("this_update"))
        sha1 = data.get("cert_sha1")
        if this_update is None or not sha1:
            self.tally.add(self.timeline.phase_at(line.t), "service_problems", 1,
                           {"what": "updated line without cert_sha1/this_update", "line": line.raw})  # fmt: skip
            return
        self.expect_write(sha1, this_update, line.t, "service")

    def expect_write(self, sha1: str, this_update: float, t: float, source: str) -> None:
        row = self.timeline.phase_at(t)
        if source == "service":
            self.tally.add(row, "renewals")
        with self._lock:
            self.pending.append(
                PendingWrite(sha1, this_update, t, t + self.settings.write_visible_within, source, row)
            )

    # -- sampling ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        interval = self.settings.sample_interval
        next_at = time.monotonic()
        while not stop.is_set():
            self.sample()
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
                delay = 0
            stop.wait(delay)

    def sample(self) -> None:
        began = time.monotonic()
        certs = self.world.certs.all()
        t = time.time()  # the read starts now: what it finds was there at t or after
        try:
            entries = self.reader.read([c.sha1 for c in certs])
            readable = True
        except StoreUnreadable as exc:
            entries, readable = {}, False
            self.read_errors += 1
            self.last_read_error = str(exc)
        with self._lock:
            self._judge_sample(t, certs, entries, readable)
            self._judge_served(time.time())
        self._sample_cost += time.monotonic() - began

    def _judge_served(self, t: float) -> None:
        """What nginx would staple (the service's nginx action's directory): never
        a response past its nextUpdate, never something that is no response.
        Excused only while the service is down (the kill fault): nobody is
        there to remove it."""
        directory = getattr(self.world, "served_dir", None)  # a test's stand-in world has none
        if directory is None:
            return
        for path in directory.glob("*.ocsp"):
            try:
                der = path.read_bytes()
            except OSError:
                continue  # removed between the listing and the read
            problem = _served_problem(der, t)
            if problem is None:
                continue
            row = self.timeline.phase_at(t)
            if row == "kill":
                continue
            self.tally.add(row, "served_expired", 1, {"t": round(t, 3), "file": path.name, "problem": problem})

    def _judge_sample(self, t: float, certs: list[CertInfo], entries: dict, readable: bool) -> None:
        interval = self.settings.sample_interval
        previous = self.last_t
        if previous is not None:
            self.max_gap = max(self.max_gap, t - previous)
        # a stalled monitor must not multiply a lapse: at most two intervals per sample
        dt = 0.0 if previous is None else min(t - previous, 2 * interval)
        self.last_t = t
        self.samples += 1
        row = self.timeline.phase_at(t)
        measure_from = self.timeline.measure_from
        measuring = measure_from is not None and t >= measure_from
        # from the cache server's stop to refill_bound after it is back:
        # what the store lost then is the fault's, not a vanished write
        cache_excuse = self.timeline.cache_excuse(t)
        current_tu: dict[str, float] = {}
        valid_now: dict[str, bool] = {}

        for cert in certs:
            track = self.tracks.setdefault(cert.sha1, Track())
            verdict: Verdict | None = None
            digest = None
            if not readable:
                state = "unreadable"
                if cache_excuse is not None:
                    track.prev_digest = track.prev_next_update = None
            else:
                entry = entries.get(cert.sha1)
                if entry is None:
                    state = "missing"
                    if cache_excuse is not None:
                        track.max_this_update = None  # emptied by the fault: a restart from zero
                    if (
                        track.prev_digest is not None
                        and track.prev_next_update is not None
                        and t < track.prev_next_update + TTL_SLACK - 1.0
                        and cache_excuse is None
                    ):
                        self.tally.add(row, "vanished", 1, {
                            "cert": cert.name, "sha1": cert.sha1, "t": round(t, 3),
                            "last_next_update": track.prev_next_update,
                        })  # fmt: skip
                else:
                    flag, der = entry
                    verdict = self.judge(cert.sha1, der, cert.cert, cert.issuer)
                    digest = hashlib.sha256(der).digest()
                    if digest not in track.seen:
                        track.seen.add(digest)
                        self._first_sight(cert, track, flag, verdict, t, previous, row)
                    if digest != track.prev_digest and verdict.genuine and verdict.this_update is not None:
                        if track.max_this_update is not None and verdict.this_update < track.max_this_update:
                            self.tally.add(row, "rollbacks", 1, {
                                "cert": cert.name, "sha1": cert.sha1, "t": round(t, 3),
                                "this_update": verdict.this_update, "previous_max": track.max_this_update,
                            })  # fmt: skip
                        track.max_this_update = max(track.max_this_update or 0.0, verdict.this_update)
                    if verdict.this_update is not None:
                        current_tu[cert.sha1] = verdict.this_update
                    if flag != 1 or not verdict.genuine:
                        state = "invalid"
                    else:
                        state = "valid" if verdict.valid_at(t) else (verdict.why_not_at(t) or "invalid")
                track.prev_digest = digest
                track.prev_next_update = verdict.next_update if verdict else None

            valid = state == "valid"
            valid_now[cert.sha1] = valid
            if valid and track.first_valid is None:
                track.first_valid = t
            self._record(track, t, state, verdict)
            self._count_lapse(cert, track, t, dt, state, valid, measuring, row, cache_excuse, readable)

        self._resolve_writes(t, current_tu, readable)
        self._progress(t, certs, valid_now)
        self._judge_claims(t)

    def _first_sight(
        self, cert: CertInfo, track: Track, flag: int, verdict: Verdict, t: float, previous: float | None, row: str
    ) -> None:
        if flag != 1 or not verdict.genuine:
            self.tally.add(row, "invalid_stored", 1, {
                "cert": cert.name, "sha1": cert.sha1, "t": round(t, 3), "flag": flag,
                "problem": verdict.problem if flag == 1 else f"flag byte {flag}",
                "this_update": verdict.this_update, "next_update": verdict.next_update,
            })  # fmt: skip
        elif (
            previous is not None
            and verdict.next_update is not None
            and verdict.next_update <= previous
        ):
            # not there at the previous sample, and already expired then: stored expired
            self.tally.add(row, "expired_stored", 1, {
                "cert": cert.name, "sha1": cert.sha1, "t": round(t, 3),
                "this_update": verdict.this_update, "next_update": verdict.next_update,
            })  # fmt: skip
        key = (verdict.this_update, verdict.next_update)
        track.staples[key] = track.staples.get(key, False) or (verdict.genuine and flag == 1)

    def _record(self, track: Track, t: float, state: str, verdict: Verdict | None) -> None:
        tu = verdict.this_update if verdict else None
        nu = verdict.next_update if verdict else None
        last = track.intervals[-1] if track.intervals else None
        if last is not None and last.state == state and last.this_update == tu and last.next_update == nu:
            last.end = t
        else:
            track.intervals.append(Interval(t, t, state, tu, nu))

    def _count_lapse(
        self, cert: CertInfo, track: Track, t: float, dt: float, state: str, valid: bool, measuring: bool,
        row: str, cache_excuse: Any, readable: bool,
    ) -> None:  # fmt: skip
        expected = measuring and cert.active_at(t) and t >= (cert.expected_from or 0.0)
        if not expected or valid:
            track.lapsing = False
            return
        excuse = self.timeline.responder_excuse(cert.ca, t) or cache_excuse
        if excuse is not None:
            self.tally.add(row, "lapsed_excused_s", dt)
            track.lapsing = False
            return
        example = None
        if not track.lapsing:
            previous = next((i for i in reversed(track.intervals[:-1]) if i.state == "valid"), None)
            example = {
                "cert": cert.name, "sha1": cert.sha1, "ca": "abc"[cert.ca], "t": round(t, 3), "state": state,
                "last_valid_next_update": previous.next_update if previous else None,
                "last_valid_seen": round(previous.end, 3) if previous else None,
                "store_readable": readable,
            }  # fmt: skip
        track.lapsing = True
        self.tally.add(row, "lapsed_healthy_s", dt, example)

    def _resolve_writes(self, t: float, current_tu: dict[str, float], readable: bool) -> None:
        still = []
        for write in self.pending:
            stored = current_tu.get(write.sha1)
            if stored is not None and stored >= write.this_update:
                self.writes_checked += 1
                self.write_latency_max = max(self.write_latency_max, max(0.0, t - write.t))
                continue
            if t < write.deadline or not readable:
                still.append(write)
                continue
            if self.timeline.cache_touched(write.t - 1.0, t) is not None:
                self.writes_excused += 1  # written just before the cache was emptied or went down
                continue
            self.writes_checked += 1
            self.tally.add(write.row, "lost_writes", 1, {
                "sha1": write.sha1, "source": write.source, "logged_at": round(write.t, 3),
                "logged_this_update": write.this_update, "checked_at": round(t, 3),
                "stored_this_update": stored,
            })  # fmt: skip
        self.pending = still

    def _progress(self, t: float, certs: list[CertInfo], valid_now: dict[str, bool]) -> None:
        """Refill after cache faults, recovery after responder faults, the first all-valid moment."""
        active = [c for c in certs if c.active_at(t) and t >= (c.expected_from or 0.0)]
        everything = all(valid_now.get(c.sha1, False) for c in active)
        if everything and self.all_valid_at is None:
            self.all_valid_at = t
        for event in self.timeline.snapshot():
            if event.kind in CACHE_FAULTS:
                up = event.details.get("up_at")
                if up is not None and t >= up and "refill_s" not in event.details and everything:
                    event.details["refill_s"] = round(t - up, 2)
                    self.tally.maximum(event.kind, "refill_s", t - up)
            elif event.kind in RESPONDER_FAULTS and event.end is not None and t >= event.end:
                if "recovery_s" not in event.details and all(
                    valid_now.get(c.sha1, False) for c in active if c.ca == event.ca
                ):
                    event.details["recovery_s"] = round(t - event.end, 2)
                    self.tally.maximum(event.kind, "recovery_s", t - event.end)
            elif event.kind == "cert_replace" and "new_sha1" in event.details and "new_staple_s" not in event.details:
                track = self.tracks.get(event.details["new_sha1"])
                sighup = event.details.get("sighup_at")
                if track is not None and track.first_valid is not None and sighup is not None:
                    event.details["new_staple_s"] = round(track.first_valid - sighup, 2)

    # -- what the commands claim ---------------------------------------------------------

    def add_claim(self, claim: Claim) -> None:
        with self._lock:
            self.claims.append(claim)

    def _judge_claims(self, t: float, final: bool = False) -> None:
        """Claims whose command ended before this sample (one sample after it must exist)."""
        waiting = []
        for claim in self.claims:
            if t <= claim.t1 and not final:
                waiting.append(claim)
                continue
            self.claims_judged += 1
            problem = self.judge_claim(
                claim.sha1, claim.this_update, claim.next_update, claim.t0, claim.t1, claim.claimed_at
            )
            if problem is not None:
                claim.problems.append(problem)
                self.tally.add(claim.row, claim.key, 1, {
                    "sha1": claim.sha1, "start": round(claim.t0, 3), "end": round(claim.t1, 3),
                    "this_update": claim.this_update, "next_update": claim.next_update,
                    "claimed_at": claim.claimed_at, "problem": problem, **claim.what,
                })  # fmt: skip
        self.claims = waiting

    def finish(self) -> None:
        """At the end: judge what is left (the last sample is taken before)."""
        with self._lock:
            self._judge_claims(time.time(), final=True)

    # -- for the fault schedule -------------------------------------------------------------

    def renewals_due(self, ca: int, t0: float, t1: float) -> int:
        """How many of the CA's certificates have their stored staple's renewal
        point (half its validity) between t0 and t1: what a fault in that
        window will meet."""
        count = 0
        with self._lock:
            for cert in self.world.certs.active():
                track = self.tracks.get(cert.sha1)
                if cert.ca != ca or track is None or not track.intervals:
                    continue
                last = track.intervals[-1]
                if last.state != "valid" or last.this_update is None or last.next_update is None:
                    continue
                if t0 <= last.this_update + 0.5 * (last.next_update - last.this_update) <= t1:
                    count += 1
        return count

    def judge_claim(
        self, sha1: str, this_update: float | None, next_update: float | None, t0: float, t1: float, claimed_at: float
    ) -> str | None:
        """Why a command's "this staple is valid" is wrong, or None.

        [t0, t1] is when the command ran; claimed_at the "now" it judged
        by. Wrong when: the certificate is not one of ours; the staple was
        expired (or not yet valid) at claimed_at; the monitor judged a
        staple with those times and it failed validation (and none with
        those times passed); or the store held no valid staple for it at
        the last sample before the command began, at the first one after
        it ended, nor at any sample in between, those two samples being
        close enough to the command (a stalled monitor proves nothing: the
        claim is then counted as unverifiable). A valid staple does not
        leave the store on its own before its nextUpdate, and one that does
        is a violation of its own (vanished).
        """
        cert = self.world.certs.get(sha1)
        if cert is None:
            return "not one of the run's certificates"
        if next_update is not None and next_update <= claimed_at:
            return f"expired at the command's own time (nextUpdate {next_update:.0f} <= {claimed_at:.0f})"
        if this_update is not None and this_update > claimed_at + 300 + (t1 - t0):
            return "thisUpdate more than 300 s in the future"
        with self._lock:
            track = self.tracks.get(sha1)
            if track is None or not track.intervals:
                self.claims_unverifiable += 1
                return None
            judged = [
                genuine for (tu, nu), genuine in track.staples.items()
                if nu == next_update and (this_update is None or tu == this_update)
            ]  # fmt: skip
            if judged and not any(judged):
                return "the store's staple with these times fails validation"
            before = _sample_at_or_before(track.intervals, t0)
            after = _sample_at_or_after(track.intervals, t1)
            if before is None or after is None:
                self.claims_unverifiable += 1  # the command ran before the first or after the last sample
                return None
            between = [i for i in track.intervals if i.start <= after[0] and before[0] <= i.end]
            if any(i.state == "valid" for i in between):
                return None
            if after[0] - before[0] > (t1 - t0) + 3 * self.settings.sample_interval:
                self.claims_unverifiable += 1  # the monitor stalled around the command
                return None
            states = sorted({i.state for i in between})
            return (
                f"no valid staple in the store from {before[0]:.2f} (before the command) to {after[0]:.2f} "
                f"(after it): {', '.join(states)}"
            )

    def figures(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "max_sample_gap_s": round(self.max_gap, 2),
            "mean_sample_cost_ms": round(1000 * self._sample_cost / max(1, self.samples), 1),
            "store_read_errors": self.read_errors,
            "last_read_error": self.last_read_error,
            "writes_checked": self.writes_checked,
            "writes_excused_by_cache_faults": self.writes_excused,
            "writes_pending_at_end": len(self.pending),
            "write_visible_max_s": round(self.write_latency_max, 2),
            "claims_judged": self.claims_judged,
            "claims_unverifiable": self.claims_unverifiable,
            "staples_judged": len(self.judge._memo),
        }


def _served_problem(der: bytes, t: float) -> str | None:
    """Why a served staple file is wrong at t, or None. Code of its own, as
    the rest of the monitor: nothing shared with the product."""
    try:
        single = next(iter(ocsp.load_der_ocsp_response(der).responses))
    except (ValueError, StopIteration) as exc:
        return f"not an OCSP response ({exc})"
    end = single.next_update_utc.timestamp() if single.next_update_utc else None
    if end is not None and t > end + SERVED_GRACE:
        return f"served {t - end:.1f} s past its nextUpdate"
    return None
