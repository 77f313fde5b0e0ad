"""Property tests of the saga guarantees (docs/guarantees.md).

Example counts scale with the active hypothesis profile (``fast`` by default,
``thorough`` for long runs: ``HYPOTHESIS_PROFILE=thorough make test``), so
the memory backend gets many examples and SQLite/PostgreSQL a few.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def examples(share: float, least: int = 1) -> settings:
    """Settings with ``share`` of the active profile's ``max_examples`` (at least ``least``)."""
    active = settings()
    return settings(
        active,
        max_examples=max(least, round(active.max_examples * share)),
        suppress_health_check=[*active.suppress_health_check, HealthCheck.function_scoped_fixture],
    )
