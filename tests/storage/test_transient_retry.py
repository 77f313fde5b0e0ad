"""retry_transient: OperationalError is retried per the object's Backoff, nothing else is."""

from __future__ import annotations

import pytest
from sagalog.storage import Backoff
from sagalog.storage.retry import retry_transient

from sagalog.errors import ConcurrencyError, OperationalError

pytestmark = pytest.mark.anyio


class Flaky:
    """Fails with ``errors`` in turn, then returns how many calls it took."""

    def __init__(self, errors: list[Exception], backoff: Backoff | None = None) -> None:
        self.errors = errors
        self.calls = 0
        if backoff is not None:
            self.backoff = backoff

    @retry_transient
    async def run(self, value: str, *, suffix: str = "") -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return f"{value}{suffix}:{self.calls}"


FAST = Backoff(attempts=3, initial=0.001, maximum=0.001)


async def test_the_first_attempt_returns_with_its_arguments() -> None:
    flaky = Flaky([], FAST)
    assert await flaky.run("a", suffix="b") == "ab:1"


async def test_transient_failures_are_retried_until_one_succeeds() -> None:
    flaky = Flaky([OperationalError("1"), OperationalError("2")], FAST)
    assert await flaky.run("a") == "a:3"


async def test_the_last_failure_is_raised_after_the_last_attempt() -> None:
    flaky = Flaky([OperationalError("1"), OperationalError("2"), OperationalError("3")], FAST)
    with pytest.raises(OperationalError, match="3"):
        await flaky.run("a")
    assert flaky.calls == 3


async def test_other_errors_are_not_retried() -> None:
    flaky = Flaky([ConcurrencyError("s", 1, 2)], FAST)
    with pytest.raises(ConcurrencyError):
        await flaky.run("a")
    assert flaky.calls == 1


async def test_an_object_without_backoff_gets_the_default() -> None:
    flaky = Flaky([OperationalError("1")])
    # Default Backoff: five attempts, the first retry after 0.05 - 0.1 s.
    assert await flaky.run("a") == "a:2"
