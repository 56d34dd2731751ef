"""One CA's outage must not touch another CA's certificates: bench/outage.py, shortened.

CA X's responder accepts and never answers; CA Y's answers at once. On
every provider (real memcached and redis), the benchmark's three
scenarios and their invariants:

- warm: Y warmed while another process warms X takes no longer than Y
  alone (1.5x), with no failure; X alone ends in about one timeout, not
  one per round of certificates (responder health);
- prefetch: the real service over X and Y, X down throughout: no Y staple
  lapses, checked from outside by reading the store and validating each
  staple with cryptography; X costs a few probes, not a request per
  certificate;
- request path: Y's staples fetched while 8 threads ask for X's stay under
  the request budget, none fails.

Smaller than the benchmark (40 and 20 certificates, a 3 s timeout,
responses of 30 s, 20 s of service), about 35 s per provider. The figures
for the full sizes are in docs/benchmarks.md.
"""

from __future__ import annotations

import pytest

from bench.outage import build_world, open_store, prefetch_scenario, request_scenario, warm_scenarios

X, Y, TIMEOUT, VALIDITY = 40, 20, 3.0, 30.0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("outage"), X, Y, VALIDITY)
    yield world
    world.stop()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("provider", ["local", "memcache", "redis"])
def test_an_outage_of_one_ca_touches_no_other(world, provider):
    store = open_store(provider, world.work / f"store-{provider}")
    store.work.mkdir(parents=True, exist_ok=True)
    try:
        warm = warm_scenarios(world, store, TIMEOUT, slack=1.0)  # striped locks took 20x
        prefetch = prefetch_scenario(world, store, 20.0, TIMEOUT, VALIDITY)
        request = request_scenario(world, store, TIMEOUT, rounds=2)
    finally:
        store.stop()
    for part in (warm, prefetch, request):
        assert all(part["invariants"].values()), (part, warm, prefetch, request)
    # and each scenario did what it says
    assert warm["Y alone"] == {**warm["Y alone"], "certificates": Y, "failed": 0}
    assert warm["X alone"]["failed"] == X and warm["X and Y in one warm"]["failed"] == X
    assert warm["Y while X warms"]["X warm"]["failed"] == X
    assert prefetch["samples"] >= 15 and prefetch["renewals_logged"] >= Y
    assert 0 < prefetch["x_requests"] < X  # probes, not one request per certificate
    assert request["samples"] == 2 * Y and request["x_requests_made"] > 0
