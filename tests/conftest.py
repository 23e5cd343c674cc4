"""Suite-wide settings: hypothesis profiles that suit a shared, noisy 2-core machine.

The suite draws the same examples on every run (derandomize): a red run is a regression, not an unlucky draw.
`HYPOTHESIS_PROFILE=explore` searches many more random examples, to look for new counterexamples.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SLOW_OK = [HealthCheck.too_slow]
settings.register_profile(
    "default", max_examples=200, derandomize=True, deadline=None, suppress_health_check=SLOW_OK
)
settings.register_profile(
    "ci", max_examples=100, derandomize=True, deadline=None, suppress_health_check=SLOW_OK
)
settings.register_profile("explore", max_examples=3000, deadline=None, suppress_health_check=SLOW_OK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default"))
