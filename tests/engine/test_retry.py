"""Retry policies: backoff shapes, caps, jitter, attempt limits, non-retryable errors."""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from sagalog.engine.retry import DEFAULT_RETRY, Retry, RetryPolicy, resolve_policy

from sagalog.errors import CircuitOpenError, InvalidPolicyError, SagalogError


class Declined(Exception):
    """A payment error a retry cannot fix."""


class CardExpired(Declined):
    """A subclass, to show isinstance matching."""


def rng() -> random.Random:
    return random.Random(42)


def delays(policy: RetryPolicy, error: BaseException | str = "RuntimeError") -> list[float | None]:
    """The answer of next_delay after each attempt until it gives up (plus that None)."""
    r = rng()
    out: list[float | None] = []
    for attempt in range(1, policy.attempts + 1):
        out.append(policy.next_delay(attempt, error, r))
    return out


# --- backoff shapes -----------------------------------------------------------


def test_exponential_doubles_then_gives_up_after_the_last_attempt() -> None:
    policy = Retry.exponential(initial=1, maximum=60, attempts=5, jitter=False)
    assert delays(policy) == [1.0, 2.0, 4.0, 8.0, None]


def test_exponential_is_capped_at_maximum() -> None:
    policy = Retry.exponential(initial=10, maximum=25, attempts=5, jitter=False)
    assert delays(policy) == [10.0, 20.0, 25.0, 25.0, None]


def test_exponential_multiplier() -> None:
    policy = Retry.exponential(initial=1, maximum=1000, attempts=4, jitter=False, multiplier=3)
    assert delays(policy) == [1.0, 3.0, 9.0, None]


def test_exponential_defaults() -> None:
    policy = Retry.exponential()
    assert (policy.kind, policy.initial, policy.maximum, policy.attempts) == ("exponential", 1.0, 60.0, 5)
    assert policy.jitter is True
    assert policy.multiplier == 2.0
    assert policy.non_retryable == ()
    assert policy.timeout is None


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = Retry.exponential(initial=1, maximum=60, attempts=10_000, jitter=False)
    assert policy.backoff(5_000, rng()) == 60.0
    assert policy.next_delay(9_999, "E", rng()) == 60.0


def test_linear_adds_the_increment_and_is_capped() -> None:
    policy = Retry.linear(initial=1, increment=2, maximum=6, attempts=5)
    assert delays(policy) == [1.0, 3.0, 5.0, 6.0, None]
    assert policy.jitter is False


def test_fixed_waits_the_same_each_time() -> None:
    policy = Retry.fixed(delay=5, attempts=3)
    assert delays(policy) == [5.0, 5.0, None]


def test_none_gives_up_at_once() -> None:
    policy = Retry.none()
    assert policy.attempts == 1
    assert policy.next_delay(1, RuntimeError("boom"), rng()) is None


def test_one_attempt_never_retries_whatever_the_shape() -> None:
    assert Retry.fixed(delay=1, attempts=1).next_delay(1, "E", rng()) is None


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="attempt numbers start at 1, got 0"):
        Retry.fixed().next_delay(0, "E", rng())
    with pytest.raises(ValueError, match="attempt numbers start at 1, got -1"):
        Retry.fixed().backoff(-1, rng())


def test_retry_is_only_a_namespace() -> None:
    with pytest.raises(TypeError, match=r"call Retry.exponential\(\)"):
        Retry()


def test_policies_are_frozen_values() -> None:
    policy = Retry.fixed(delay=2, attempts=3)
    with pytest.raises(AttributeError):
        policy.attempts = 4  # type: ignore[misc]
    assert policy == Retry.fixed(delay=2, attempts=3)
    assert hash(policy) == hash(Retry.fixed(delay=2, attempts=3))


# --- jitter -----------------------------------------------------------------------


def test_jitter_stays_within_half_and_all_of_the_nominal_delay() -> None:
    policy = Retry.exponential(initial=4, maximum=60, attempts=5)
    r = rng()
    for attempt, nominal in [(1, 4.0), (2, 8.0), (3, 16.0), (4, 32.0)]:
        for _ in range(50):
            delay = policy.backoff(attempt, r)
            assert nominal / 2 <= delay <= nominal


def test_jitter_comes_from_the_given_rng_only() -> None:
    policy = Retry.exponential(initial=1, maximum=60, attempts=5)
    first = [policy.backoff(a, random.Random(7)) for a in range(1, 5)]
    second = [policy.backoff(a, random.Random(7)) for a in range(1, 5)]
    assert first == second
    assert first != [policy.backoff(a, random.Random(8)) for a in range(1, 5)]


def test_jitter_actually_varies_the_delay() -> None:
    policy = Retry.exponential(initial=10, maximum=60, attempts=5)
    r = rng()
    assert len({policy.backoff(1, r) for _ in range(20)}) > 1


def test_without_jitter_the_rng_is_not_touched() -> None:
    r = rng()
    state = r.getstate()
    Retry.exponential(jitter=False).next_delay(1, "E", r)
    Retry.linear(initial=1, increment=1).next_delay(1, "E", r)
    assert r.getstate() == state


def test_jitter_on_a_fixed_policy() -> None:
    policy = Retry.fixed(delay=10, attempts=3, jitter=True)
    delay = policy.next_delay(1, "E", rng())
    assert delay is not None and 5.0 <= delay <= 10.0


def test_zero_delay_with_jitter_is_zero() -> None:
    assert Retry.exponential(initial=0, maximum=0).backoff(3, rng()) == 0.0


# --- non-retryable errors -------------------------------------------------------------


def test_non_retryable_exception_gives_up_at_once() -> None:
    policy = Retry.exponential(attempts=5, non_retryable=(Declined,))
    assert policy.next_delay(1, Declined("card declined"), rng()) is None
    assert policy.next_delay(1, RuntimeError("timeout"), rng()) is not None


def test_non_retryable_matches_subclasses() -> None:
    policy = Retry.fixed(non_retryable=(Declined,))
    assert not policy.is_retryable(CardExpired("expired"))
    assert policy.is_retryable(RuntimeError())


def test_non_retryable_by_recorded_type_name() -> None:
    policy = Retry.fixed(non_retryable=(ValueError, Declined))
    assert not policy.is_retryable("ValueError")
    assert not policy.is_retryable("builtins.ValueError")
    assert not policy.is_retryable("Declined")
    assert not policy.is_retryable(f"{__name__}.Declined")
    assert policy.is_retryable("other.module.Declined")
    assert policy.is_retryable("KeyError")
    assert policy.next_delay(1, "ValueError", rng()) is None


def test_recorded_class_hierarchy_matches_a_base() -> None:
    policy = Retry.fixed(non_retryable=(Declined,))
    assert not policy.is_retryable([f"{__name__}.CardExpired", f"{__name__}.Declined", "builtins.Exception"])
    assert policy.is_retryable(["builtins.KeyError", "builtins.LookupError"])


def test_non_retryable_given_as_a_name() -> None:
    policy = Retry.fixed(non_retryable=("Declined", "payments.errors.Fraud"))
    assert not policy.is_retryable(Declined())
    assert not policy.is_retryable(CardExpired())  # through its class hierarchy
    assert not policy.is_retryable("payments.errors.Fraud")
    assert not policy.is_retryable("Fraud")
    assert policy.is_retryable("other.Fraud")
    assert policy.is_retryable(RuntimeError())


def test_non_retryable_is_checked_before_attempts_left() -> None:
    policy = Retry.fixed(attempts=100, non_retryable=(KeyError,))
    assert policy.next_delay(1, KeyError("k"), rng()) is None


def test_an_open_circuit_is_retryable_by_default() -> None:
    from datetime import UTC, datetime

    error = CircuitOpenError("charge", 5, datetime(2026, 1, 1, tzinfo=UTC), 30.0)
    assert DEFAULT_RETRY.is_retryable(error)


# --- per-attempt timeout --------------------------------------------------------------


def test_timeout_is_kept_on_every_shape() -> None:
    assert Retry.exponential(timeout=10).timeout == 10
    assert Retry.linear(timeout=2.5).timeout == 2.5
    assert Retry.fixed(timeout=1).timeout == 1
    assert Retry.none(timeout=3).timeout == 3
    assert Retry.fixed().timeout is None


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan")])
def test_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(InvalidPolicyError, match="retry timeout must be a number of seconds > 0, got"):
        Retry.fixed(timeout=bad)


# --- validation messages --------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_attempts_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(InvalidPolicyError, match=f"retry attempts must be an integer >= 1, got {bad!r}"):
        Retry.fixed(attempts=bad)  # type: ignore[arg-type]


def test_delays_must_be_finite_and_not_negative() -> None:
    with pytest.raises(
        InvalidPolicyError, match=r"retry initial must be a finite number >= 0 seconds, got -1"
    ):
        Retry.exponential(initial=-1)
    with pytest.raises(
        InvalidPolicyError, match="retry maximum must be a finite number >= 0 seconds, got inf"
    ):
        Retry.exponential(maximum=float("inf"))
    with pytest.raises(
        InvalidPolicyError, match="retry increment must be a finite number >= 0 seconds, got -2"
    ):
        Retry.linear(increment=-2)
    with pytest.raises(
        InvalidPolicyError, match="retry initial must be a finite number >= 0 seconds, got 'x'"
    ):
        Retry.fixed(delay="x")  # type: ignore[arg-type]


def test_maximum_below_initial_is_refused() -> None:
    with pytest.raises(InvalidPolicyError, match=r"retry maximum \(5 s\) is smaller than initial \(10 s\)"):
        Retry.exponential(initial=10, maximum=5)


def test_multiplier_below_one_is_refused() -> None:
    with pytest.raises(InvalidPolicyError, match=r"retry multiplier must be a finite number >= 1, got 0\.5"):
        Retry.exponential(multiplier=0.5)


def test_non_retryable_takes_types_or_names() -> None:
    with pytest.raises(InvalidPolicyError, match="non_retryable takes exception types or type names, got 42"):
        Retry.fixed(non_retryable=(42,))  # type: ignore[arg-type]
    with pytest.raises(InvalidPolicyError, match="got <class 'int'>"):
        Retry.fixed(non_retryable=(int,))  # type: ignore[arg-type]


def test_invalid_policy_error_is_a_sagalog_and_value_error() -> None:
    with pytest.raises(SagalogError):
        Retry.fixed(attempts=0)
    with pytest.raises(ValueError):
        Retry.fixed(attempts=0)


# --- resolution order -------------------------------------------------------------------


def test_step_policy_wins_over_workflow_default() -> None:
    step, wf = Retry.fixed(delay=1), Retry.linear()
    assert resolve_policy(step, wf) is step


def test_workflow_default_applies_when_the_step_has_none() -> None:
    wf = Retry.linear()
    assert resolve_policy(None, wf) is wf


def test_engine_default_applies_last() -> None:
    assert resolve_policy(None, None) is DEFAULT_RETRY
    assert Retry.exponential() == DEFAULT_RETRY
    other = Retry.none()
    assert resolve_policy(None, None, other) is other


# --- properties -----------------------------------------------------------------------------

shapes = st.one_of(
    st.builds(
        lambda i, extra, a, j, m: Retry.exponential(
            initial=i, maximum=i + extra, attempts=a, jitter=j, multiplier=m
        ),
        st.floats(0, 100),
        st.floats(0, 1000),
        st.integers(1, 50),
        st.booleans(),
        st.floats(1, 10),
    ),
    st.builds(
        lambda i, inc, extra, a, j: Retry.linear(
            initial=i, increment=inc, maximum=i + extra, attempts=a, jitter=j
        ),
        st.floats(0, 100),
        st.floats(0, 100),
        st.floats(0, 1000),
        st.integers(1, 50),
        st.booleans(),
    ),
    st.builds(
        lambda d, a, j: Retry.fixed(delay=d, attempts=a, jitter=j),
        st.floats(0, 100),
        st.integers(1, 50),
        st.booleans(),
    ),
    st.just(Retry.none()),
)


@given(policy=shapes, seed=st.integers(0, 2**32), attempt=st.integers(1, 2_000))
def test_delays_are_never_negative_nor_above_maximum(policy: RetryPolicy, seed: int, attempt: int) -> None:
    delay = policy.backoff(attempt, random.Random(seed))
    assert 0.0 <= delay <= policy.maximum


@given(policy=shapes, seed=st.integers(0, 2**32))
def test_the_attempt_bound_is_respected(policy: RetryPolicy, seed: int) -> None:
    r = random.Random(seed)
    attempt = 1
    while policy.next_delay(attempt, RuntimeError("transient"), r) is not None:
        attempt += 1
        assert attempt <= policy.attempts
    assert attempt == policy.attempts


@given(policy=shapes, attempt=st.integers(1, 60))
def test_nominal_delays_never_decrease(policy: RetryPolicy, attempt: int) -> None:
    assume(not policy.jitter)
    assert policy.backoff(attempt, rng()) <= policy.backoff(attempt + 1, rng())


# --- in the engine ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_engine_resolves_step_then_workflow_then_default_policy() -> None:
    """A step without a policy takes its workflow's; its own wins; non-retryable stops at once."""
    from datetime import timedelta

    from sagalog.storage import open_journal

    from sagalog import ManualClock, Registry, Runner, StepError, step, workflow

    registry = Registry()
    attempts: dict[str, int] = {}

    def failing(name: str, error: Exception) -> None:
        attempts[name] = attempts.get(name, 0) + 1
        raise error

    @step(name="inherits", registry=registry)
    def inherits() -> None:
        failing("inherits", ConnectionError("flaky"))

    @step(name="own", registry=registry, retry=Retry.none())
    def own() -> None:
        failing("own", ConnectionError("flaky"))

    @step(name="declined", registry=registry)
    def declined() -> None:
        failing("declined", Declined("card declined"))

    @workflow(
        name="policies", registry=registry, retry=Retry.fixed(delay=5, attempts=3, non_retryable=(Declined,))
    )
    def policies(ctx: object) -> Generator[Any, Any, list[tuple[str, int]]]:
        outcomes = []
        for call in (inherits, own, declined):
            try:
                yield call()
            except StepError as exc:
                outcomes.append((exc.step, exc.attempts))
        return outcomes

    clock = ManualClock()
    async with open_journal("memory://", clock=clock) as journal:
        runner = Runner(journal, registry, clock=clock)
        await runner.start(policies, id="p")
        await runner.run_until_idle()
        state = await runner.describe("p")
        assert state.steps[0].retry_at == clock.now() + timedelta(seconds=5)  # the workflow's policy
        for _ in range(2):
            clock.advance(5)
            await runner.run_until_idle()
        assert await runner.result("p") == [["inherits", 3], ["own", 1], ["declined", 1]]
    assert attempts == {"inherits": 3, "own": 1, "declined": 1}
