"""Hypothesis profiles for the property tests.

``ci`` (chosen when the ``CI`` environment variable is set) derandomizes
the search, so a CI run explores the same examples every time. ``dev``
keeps hypothesis' random search and its example database.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
