"""How long the fuzz targets run: Hypothesis profiles and each target's budget.

- ``ci`` (selected by ``CI=true``): every target runs its fixed number of
  examples, derandomized (the same examples every run, so a red CI is
  reproducible and a green one means the same thing twice), no example
  database, no deadline (a shared 2-core machine has slow moments). About
  a minute for the whole of tests/fuzz.
- ``dev`` (the default elsewhere): the same budget, random examples, and
  Hypothesis' database in .hypothesis/, so a failure found once is tried
  first on the next run until it is fixed.
- ``long``: ``STAPLECTL_FUZZ_PROFILE=long``, 50 times the budget, for a
  session of its own (docs/fuzzing.md); ``STAPLECTL_FUZZ_SCALE`` sets any
  other multiple.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,
    # a target draws a whole response or HTTP answer per example: big and
    # slow to generate by Hypothesis' standards, and meant to be
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    print_blob=True,
)
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
settings.register_profile("dev", **_COMMON)
settings.register_profile("long", **_COMMON)

PROFILE = os.environ.get("STAPLECTL_FUZZ_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
SCALE = float(os.environ.get("STAPLECTL_FUZZ_SCALE") or (50 if PROFILE == "long" else 1))
settings.load_profile(PROFILE)


def budget(examples: int) -> settings:
    """The settings of a target that runs ``examples`` examples in CI (times SCALE elsewhere)."""
    return settings(max_examples=max(1, round(examples * SCALE)))
