"""The metrics as a scraper reads them (the Prometheus project's own parser,
and `promtool check metrics`), and the alert rules docs/prefetch.md gives,
run by `promtool test rules` over them: each fires for the certificates it
is about, and only for those. Without promtool (outside CI) a small
evaluator here reads the rules that are a plain comparison."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from prometheus_client.parser import text_string_to_metric_families

from engine.api import SYSTEM_CLOCK, ActionEvent, CertState, StateStore, WorkerEvent
from staplectl import __version__
from staplectl.metrics import DURATION_BUCKETS, Metrics
from tests.servers import find_binary

DOCS = Path(__file__).resolve().parents[2] / "docs" / "prefetch.md"
#: NAME{matchers} OP NUMBER: all the rules in the docs need
RULE = re.compile(r"^(\w+)(?:\{([^}]*)\})?\s*(==|<=|>=|<|>)\s*([0-9.]+)$")


def rules() -> dict[str, str]:
    text = DOCS.read_text()
    names = re.findall(r"- alert: (\w+)\n\s+expr: (.+)", text)
    assert len(names) >= 8, "the alert rules are gone from docs/prefetch.md"
    return dict(names)


def rules_file() -> str:
    """The docs' YAML block of rules, as an operator would copy it."""
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S) if "groups:" in b]
    return block


def firing(expr: str, samples: list) -> set[str] | None:
    """Which series the expression selects: the cert label, else the action, else the metric."""
    match = RULE.match(expr.strip())
    if match is None:
        return None  # a function (histogram_quantile...): promtool's to judge
    name, matchers, op, number = match.groups()
    wanted = [re.match(r'(\w+)(=~|=)"([^"]*)"', m.strip()).groups() for m in (matchers or "").split(",") if m.strip()]
    compare = {"==": float.__eq__, "<": float.__lt__, ">": float.__gt__, "<=": float.__le__, ">=": float.__ge__}[op]
    found = set()
    for sample in samples:
        if sample.name != name or not compare(float(sample.value), float(number)):
            continue
        if all((re.fullmatch(v, sample.labels.get(k, "")) if how == "=~" else sample.labels.get(k) == v)
               for k, how, v in wanted):  # fmt: skip
            found.add(_name(sample.labels) or sample.name)
    return found


def _name(labels: dict[str, str]) -> str | None:
    """What an alert is about: its certificate, renewal action or responder."""
    return labels.get("cert") or labels.get("action") or labels.get("responder")


FAST, SLOW = "http://ocsp.example:80", "http://slow.example:80"
#: what each rule must fire for: certificates, actions, responders, or the metric itself
EXPECTED = {
    "StapleMissing": {"missing.pem"},
    "StapleExpiringSoon": {"missing.pem", "expiring.pem"},
    "StapleRevokedOrUnknown": {"revoked.pem"},
    "StapleRenewalFailing": {"failing.pem"},
    "StaplectlActionFailing": {"nginx"},
    "StaplectlCacheDown": {"staplectl_cache_up"},
    "StaplectlResponderDown": {SLOW},
    "StaplectlResponderSlow": {SLOW},
}


def exposed(tmp_path) -> str:
    """What the service's /metrics says of a host with one certificate of each
    kind, a failing action, the cache down, a fast responder and a slow one."""
    now = time.time()
    store = StateStore(tmp_path / "worker.db")

    def cert(name: str, **fields) -> CertState:
        return CertState(name.ljust(40, "0"), f"{name}.pem", f"/etc/ssl/{name}.pem", FAST + "/", **fields)

    store.put_many([
        cert("good", status="good", this_update=now - 600, next_update=now + 86400, last_success=now - 600),
        cert("missing", failures=1, last_error="timeout"),
        cert("revoked", status="revoked", this_update=now - 600, next_update=now + 86400),
        cert("failing", status="good", this_update=now - 60000, next_update=now + 20000, failures=5),
        cert("expiring", status="good", this_update=now - 80000, next_update=now + 600),
    ])  # fmt: skip
    metrics = Metrics(store, tmp_path / "locks", SYSTEM_CLOCK)
    metrics.observe(WorkerEvent(now, "error", "missing".ljust(40, "0"), "missing.pem", "failed", "x", "timeout",
                                responder=FAST, duration=10.0))  # fmt: skip
    for n in range(20):  # FAST answers in 30 ms; SLOW in 8 s, when it answers
        metrics.observe(WorkerEvent(now, "info", "good".ljust(40, "0"), "good.pem", "updated", "", responder=FAST,
                                    duration=0.03))  # fmt: skip
        metrics.observe(WorkerEvent(now, "info", "", "s.pem", "updated", "", responder=SLOW, duration=8.0))
    # asked no responder: not timed
    metrics.observe(WorkerEvent(now, "error", "", "x.pem", "failed", "x", "cache_unavailable", responder=FAST,
                                duration=99.0))  # fmt: skip
    metrics.observe(WorkerEvent(now, "error", "", SLOW, "responder_down", "x", "timeout"))
    metrics.observe_action(ActionEvent(now, "error", "nginx", "failed", "reload failed", 2))
    metrics.observe(WorkerEvent(now, "error", "", "local:", "cache_down", "x", "cache_unavailable"))
    return metrics.render()


def test_what_a_scraper_reads(tmp_path):
    text = exposed(tmp_path)
    families = {f.name: f for f in text_string_to_metric_families(text)}  # raises on anything malformed
    samples = [s for f in families.values() for s in f.samples]
    # one series per certificate whether or not it has a staple, and few others
    assert len([s for s in samples if s.name == "staplectl_staple_seconds_until_next_update"]) == 5
    failed = {(s.labels["reason"], s.labels["responder"]): s.value for s in samples
              if s.name == "staplectl_fetch_failures_total"}  # fmt: skip
    assert failed == {("timeout", FAST): 1, ("cache_unavailable", FAST): 1}
    [build] = [s for s in samples if s.name == "staplectl_build_info"]
    assert build.labels["version"] == __version__
    assert not any("stripe" in s.labels for s in samples)
    # the latency histogram: per responder, cumulative, the +Inf bucket its count
    assert families["staplectl_fetch_duration_seconds"].type == "histogram"
    buckets = {(s.labels["responder"], s.labels["le"]): s.value for s in samples
               if s.name == "staplectl_fetch_duration_seconds_bucket"}  # fmt: skip
    assert len(buckets) == 2 * (len(DURATION_BUCKETS) + 1)
    assert (buckets[(FAST, "0.05")], buckets[(FAST, "5.0")], buckets[(FAST, "10.0")], buckets[(FAST, "+Inf")]) == (
        20, 20, 21, 21)  # the timeout's 10 s included, the cache's failure not
    assert (buckets[(SLOW, "5.0")], buckets[(SLOW, "10.0")]) == (0, 20)
    counts = {s.labels["responder"]: s.value for s in samples if s.name == "staplectl_fetch_duration_seconds_count"}
    sums = {s.labels["responder"]: s.value for s in samples if s.name == "staplectl_fetch_duration_seconds_sum"}
    assert counts == {FAST: 21, SLOW: 20} and sums[SLOW] == pytest.approx(160.0)


def test_the_alert_rules_fire_for_what_they_are_about(tmp_path):
    """The rules a small evaluator can read (a comparison): without promtool too."""
    samples = [s for f in text_string_to_metric_families(exposed(tmp_path)) for s in f.samples]
    judged = {name: firing(expr, samples) for name, expr in rules().items()}
    assert set(judged) == set(EXPECTED)
    assert {name: fired for name, fired in judged.items() if fired is not None} == {
        name: EXPECTED[name] for name, fired in judged.items() if fired is not None}


def test_promtool_reads_the_metrics_and_runs_the_rules(tmp_path):
    promtool = find_binary("promtool", "prometheus")
    text = exposed(tmp_path)
    linted = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert linted.returncode == 0 and not linted.stdout.strip(), linted.stdout + linted.stderr
    (tmp_path / "rules.yml").write_text(rules_file())
    checked = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The exposed samples as 30 minutes of scrapes: gauges stay, counters grow
    # by their value a minute (rates then split as the counts do).
    families = list(text_string_to_metric_families(text))
    series = []
    for family in families:
        grows = family.type in ("counter", "histogram")
        for sample in family.samples:
            labels = ",".join(f'{k}={json.dumps(v)}' for k, v in sorted(sample.labels.items()))
            value = f"{sample.value:.15g}"
            series.append({"series": f"{sample.name}{{{labels}}}", "values": f"0+{value}x30" if grows else f"{value}x30"})
    samples = [s for f in families for s in f.samples]
    about: dict[str, list[dict[str, str]]] = {}
    for name, expr in rules().items():  # the series of the rule's own metric that it is about
        metric = re.search(r"staplectl_\w+", expr).group(0)
        chosen = {json.dumps(s.labels, sort_keys=True) for s in samples
                  if s.name == metric and (_name(s.labels) or s.name) in EXPECTED[name]}  # fmt: skip
        about[name] = [json.loads(labels) for labels in sorted(chosen)]
    about["StaplectlResponderSlow"] = [{"responder": SLOW}]  # what its sum by (responder, le) keeps
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "25m", "alertname": name, "exp_alerts": [{"exp_labels": labels} for labels in about[name]]}
                for name in EXPECTED
            ],
        }],
    }  # fmt: skip
    (tmp_path / "tests.yml").write_text(json.dumps(tests))  # JSON is YAML
    ran = subprocess.run([promtool, "test", "rules", str(tmp_path / "tests.yml")], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert all(about[name] for name in EXPECTED)  # each rule was seen to fire
