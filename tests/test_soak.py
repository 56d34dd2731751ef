"""The soak test, short: the code of bench/soak.py for about a minute per provider.

Each test builds the whole world (three CAs, 300 certificates, the real
`staplectl prefetch` service, memcached or redis for real), runs one-shot
commands beside the service while faults come one at a time, and asserts
that every invariant the monitor checks from outside held: zero. On a
failure the message is the run's table, summary and the first examples of
each violation (the work directory is kept and named).

Responses live 30, 40 and 50 s here (60, 120 and 180 s in the long run),
responder faults last 6 s, and each provider gets its own part of the
fault list so that together they cover most kinds (the long run,
bench/soak.py, cycles through all of them: hang, http_500, try_later,
forged_signature, rogue_signer, expired, flap, cache_restart,
cache_outage, kill, sighup_broken, cert_replace).

test_the_monitor_catches_planted_violations shows, in a second and
without any service, that the checks fail when they must: a harness that
cannot fail proves nothing.
"""

from __future__ import annotations

import sqlite3
import time
from types import SimpleNamespace

import pytest

from tests.pki import PKI
from tests.soak.monitor import Monitor
from tests.soak.ocspcheck import IssuerIds
from tests.soak.records import Claim
from tests.soak.report import Tally
from tests.soak.run import run_provider
from tests.soak.sabotage import genuine_response
from tests.soak.settings import RESPONDER_FAULTS, SoakSettings
from tests.soak.store import LocalReader
from tests.soak.timeline import Timeline
from tests.soak.world import CertInfo, Certs, sha1_of

SHORT = dict(
    validity=(30, 40, 50), fault_seconds=6.0, gap_seconds=3.0, outage_seconds=6.0, refill_bound=12.0,
    reader_interval=1.5, rss_warmup=10.0,
)  # fmt: skip
#: (measured seconds, faults in order: what does not fit in the time is left out).
#: Responder faults come before the cache faults: a cache refill fetches
#: every staple at once, and a responder fault then waits for its CA's
#: next burst of renewals (faults.py), which the short runs cannot afford.
PLANS = {
    "local": (50, ("kill", "hang", "sighup_broken", "forged_signature", "cert_replace", "expired", "flap")),
    "memcache": (55, ("try_later", "cache_outage", "kill", "cache_restart", "flap")),
    "redis": (55, ("rogue_signer", "cache_restart", "kill", "cache_outage", "http_500")),
}
#: what each run must at least have done, or it tested nothing
MUST_RUN = {
    "local": {"kill", "hang", "sighup_broken", "forged_signature", "cert_replace"},
    "memcache": {"try_later", "cache_outage", "kill", "cache_restart"},
    "redis": {"rogue_signer", "cache_restart", "kill", "cache_outage"},
}


@pytest.mark.timeout(160)
@pytest.mark.parametrize("provider", ["local", "memcache", "redis"])
def test_soak(provider):
    seconds, faults = PLANS[provider]
    result = run_provider(SoakSettings(provider=provider, seconds=seconds, faults=faults, **SHORT))
    report = result.text()
    assert not result.failed, f"invariants broken (work directory kept: {result.workdir}):\n{report}"
    # and it did test something
    summary = result.summary
    ran = set(summary["faults_run"])
    assert MUST_RUN[provider] <= ran, f"faults that did not run: {MUST_RUN[provider] - ran}\n{report}"
    assert summary["renewals_logged"] >= 300, report
    # every responder fault met renewals (else it tested nothing)
    for fault in result.faults:
        if fault["kind"] in RESPONDER_FAULTS:
            assert fault["details"].get("hits", 0) > 0, f"{fault}\n{report}"
    assert summary["monitor"]["samples"] >= seconds, report
    assert summary["monitor"]["claims_judged"] > 300, report
    assert {"check", "inspect", "export_nginx", "fetch", "dashboard", "export_haproxy", "warm"} <= set(
        summary["commands"]
    ), report


def test_the_monitor_catches_planted_violations(tmp_path):
    """Staples planted straight into a local store, read by the monitor: each must be caught."""
    pki = PKI(tmp_path / "pki", "http://127.0.0.1:9/")
    ids = IssuerIds(pki.intermediate.cert, pki.good.cert)
    certs = Certs()
    infos = []
    for n in range(5):
        leaf = pki.leaf(f"planted{n}")
        info = CertInfo(sha1_of(leaf.cert), 0, leaf.name, leaf.chain_path, leaf.cert, ids)
        certs.add(info)
        infos.append(info)
    settings = SoakSettings(provider="local", validity=(60, 60, 60))
    world = SimpleNamespace(certs=certs, pkis=[pki], settings=settings)
    store = tmp_path / "staples.db"
    db = sqlite3.connect(store, isolation_level=None)
    db.execute(
        "CREATE TABLE staples (cert_id TEXT PRIMARY KEY, key TEXT NOT NULL, flag INTEGER NOT NULL, "
        "der BLOB NOT NULL, expires_at REAL, meta TEXT, meta_expires_at REAL, updated_at REAL NOT NULL)"
    )
    now = time.time()

    def put(info: CertInfo, der: bytes) -> None:
        db.execute(
            "INSERT OR REPLACE INTO staples VALUES (?, ?, 1, ?, ?, NULL, NULL, ?)",
            (info.sha1, f"mod_ssl-staple:{info.sha1}", der, now + 3600, now),
        )

    for info in infos:
        put(info, genuine_response(world, info, now - 10, now + 50))
    timeline, tally = Timeline(settings), Tally()
    timeline.measure_from = now - 1
    monitor = Monitor(settings, world, LocalReader(store), timeline, tally)
    monitor.sample()
    assert not any(tally.violations().values()), tally.violations()

    corrupt, deleted, older, expired, fine = infos
    der = bytearray(genuine_response(world, corrupt, now - 5, now + 55))
    der[-1] ^= 1  # the signature's last byte
    put(corrupt, bytes(der))
    db.execute("DELETE FROM staples WHERE cert_id = ?", (deleted.sha1,))
    put(older, genuine_response(world, older, now - 30, now + 30))
    put(expired, genuine_response(world, expired, now - 90, now - 30))
    # a write the service "logged" that never reached the store
    monitor.expect_write(fine.sha1, now + 5, now - 2, "service")
    monitor.sample()
    # a command that said the deleted certificate's staple is valid while it ran
    started = time.time()
    problems: list[str] = []
    monitor.add_claim(Claim("check_false_ok", "healthy", deleted.sha1, None, now + 50, started,
                            started + 0.01, started, {"command": "check"}, problems))  # fmt: skip
    # and one that was right
    monitor.add_claim(Claim("check_false_ok", "healthy", fine.sha1, None, now + 50, started,
                            started + 0.01, started, {"command": "check"}, []))  # fmt: skip
    time.sleep(0.05)
    monitor.sample()
    found = tally.violations()
    assert found["invalid_stored"] == 1, found
    assert found["vanished"] == 1, found
    assert found["rollbacks"] == 2, found  # the older one, and the expired one (older still)
    assert found["expired_stored"] == 1, found
    assert found["lost_writes"] == 1, found
    assert found["check_false_ok"] == 1 and problems, found
    assert found["lapsed_healthy_s"] > 0, found
    lapsing = {e["sha1"] for e in tally.examples["lapsed_healthy_s"]}
    assert lapsing == {corrupt.sha1, deleted.sha1, expired.sha1}
    db.close()
