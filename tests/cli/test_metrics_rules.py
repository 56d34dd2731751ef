"""The metrics as a scraper reads them (the Prometheus project's own parser),
and the alert rules docs/prefetch.md gives, evaluated against them: each
fires for the certificates it is about, and only for those."""

from __future__ import annotations

import re
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from engine.api import SYSTEM_CLOCK, ActionEvent, CertState, StateStore, WorkerEvent
from staplectl import __version__
from staplectl.metrics import Metrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "prefetch.md"
#: NAME{matchers} OP NUMBER: all the rules in the docs need
RULE = re.compile(r"^(\w+)(?:\{([^}]*)\})?\s*(==|<=|>=|<|>)\s*([0-9.]+)$")


def rules() -> dict[str, str]:
    text = DOCS.read_text()
    names = re.findall(r"- alert: (\w+)\n\s+expr: (.+)", text)
    assert len(names) >= 6, "the alert rules are gone from docs/prefetch.md"
    return dict(names)


def firing(expr: str, samples: list) -> set[str]:
    """Which series the expression selects: the cert label, else the action, else the metric."""
    match = RULE.match(expr.strip())
    assert match, f"an expr this test cannot read: {expr}"
    name, matchers, op, number = match.groups()
    wanted = [re.match(r'(\w+)(=~|=)"([^"]*)"', m.strip()).groups() for m in (matchers or "").split(",") if m.strip()]
    compare = {"==": float.__eq__, "<": float.__lt__, ">": float.__gt__, "<=": float.__le__, ">=": float.__ge__}[op]
    found = set()
    for sample in samples:
        if sample.name != name or not compare(float(sample.value), float(number)):
            continue
        if all((re.fullmatch(v, sample.labels.get(k, "")) if how == "=~" else sample.labels.get(k) == v)
               for k, how, v in wanted):  # fmt: skip
            found.add(sample.labels.get("cert") or sample.labels.get("action") or sample.name)
    return found


def test_the_alert_rules_fire_for_what_they_are_about(tmp_path):
    now = time.time()
    store = StateStore(tmp_path / "worker.db")

    def cert(name: str, **fields) -> CertState:
        return CertState(name.ljust(40, "0"), f"{name}.pem", f"/etc/ssl/{name}.pem", "http://ocsp.example:80/", **fields)

    store.put_many([
        cert("good", status="good", this_update=now - 600, next_update=now + 86400, last_success=now - 600),
        cert("missing", failures=1, last_error="timeout"),
        cert("revoked", status="revoked", this_update=now - 600, next_update=now + 86400),
        cert("failing", status="good", this_update=now - 60000, next_update=now + 20000, failures=5),
        cert("expiring", status="good", this_update=now - 80000, next_update=now + 600),
    ])  # fmt: skip
    metrics = Metrics(store, tmp_path / "locks", SYSTEM_CLOCK)
    metrics.observe(WorkerEvent(now, "error", "missing".ljust(40, "0"), "missing.pem", "failed", "x", "timeout"))
    metrics.observe_action(ActionEvent(now, "error", "nginx", "failed", "reload failed", 2))
    metrics.observe(WorkerEvent(now, "error", "", "local:", "cache_down", "x", "cache_unavailable"))
    text = metrics.render()
    families = {f.name: f for f in text_string_to_metric_families(text)}  # raises on anything malformed
    samples = [s for f in families.values() for s in f.samples]

    expected = {
        "StapleMissing": {"missing.pem"},
        "StapleExpiringSoon": {"missing.pem", "expiring.pem"},
        "StapleRevokedOrUnknown": {"revoked.pem"},
        "StapleRenewalFailing": {"failing.pem"},
        "StaplectlActionFailing": {"nginx"},
        "StaplectlCacheDown": {"staplectl_cache_up"},
    }
    assert {name: firing(expr, samples) for name, expr in rules().items()} == expected

    # one series per certificate whether or not it has a staple, and few others
    assert len([s for s in samples if s.name == "staplectl_staple_seconds_until_next_update"]) == 5
    [failed] = [s for s in samples if s.name == "staplectl_fetch_failures_total"]
    assert failed.labels == {"reason": "timeout", "responder": "http://ocsp.example:80"}
    [build] = [s for s in samples if s.name == "staplectl_build_info"]
    assert build.labels["version"] == __version__
    assert not any("stripe" in s.labels for s in samples)
