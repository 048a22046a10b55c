"""Hypothesis settings profiles for the property tests, registered once and loaded by conftest.

"ci" (the default) is what the suite runs: a fixed example budget and a fixed
seed (``derandomize``), so a run is reproducible and its cost is known. "deep"
is the same search with a far larger budget, for ``scripts/fuzz.py`` or a
nightly job: ``HYPOTHESIS_PROFILE=deep`` selects it, and
``HYPOTHESIS_MAX_EXAMPLES`` overrides its budget.

Registering is idempotent: any test module may call `register_profiles()` too,
and the last registration of a name wins with the same settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_VARIABLE = "HYPOTHESIS_PROFILE"
BUDGET_VARIABLE = "HYPOTHESIS_MAX_EXAMPLES"
DEFAULT_PROFILE = "ci"

# Enough examples per property to reach every branch of these small parsers,
# few enough that all the property tests together add seconds to the suite.
CI_MAX_EXAMPLES = 200
# A deep run: a hundred times the suite's budget, minutes rather than seconds.
DEEP_MAX_EXAMPLES = 20_000

# Timing never decides a verdict: no per-example deadline (a loaded CI machine
# would turn slowness into failures). The function-scoped fixture health check
# is off because the suite's autouse HOME fixture is per test by design; no
# property reads it between examples.
_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


def _deep_budget() -> int:
    raw = os.environ.get(BUDGET_VARIABLE, "").strip()
    if raw.isascii() and raw.isdigit() and int(raw) > 0:
        return int(raw)
    return DEEP_MAX_EXAMPLES


def register_profiles() -> None:
    """Register "ci" and "deep" (harmless to call more than once)."""
    settings.register_profile("ci", max_examples=CI_MAX_EXAMPLES, derandomize=True, database=None, **_COMMON)
    settings.register_profile(
        "deep", max_examples=_deep_budget(), derandomize=False, database=None, print_blob=True, **_COMMON
    )


def load_profile() -> str:
    """Register the profiles and load the one the environment names ("ci" unless told)."""
    register_profiles()
    name = os.environ.get(PROFILE_VARIABLE, "").strip() or DEFAULT_PROFILE
    settings.load_profile(name)
    return name
