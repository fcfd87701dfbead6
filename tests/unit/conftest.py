"""Shared settings of the unit suite.

Hypothesis keeps no example database here (the unit suite writes nothing outside
tests/), and every property test sets its own ``max_examples`` to stay fast.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("taskpulse-unit", database=None, deadline=None)
settings.load_profile("taskpulse-unit")
