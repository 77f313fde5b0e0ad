"""Circuit breakers: closed → open → half-open → closed/open, on a manual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sagalog.engine.breaker import (
    CLOSED,
    BreakerPolicy,
    Breakers,
    BreakerState,
    CircuitBreaker,
    admit,
    half_open_at,
    on_failure,
    on_success,
)

from sagalog.clock import ManualClock
from sagalog.errors import CircuitOpenError, InvalidPolicyError, SagalogError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Boom(Exception):
    """A failing dependency."""


def breaker(failures: int = 3, cooldown: float = 30) -> tuple[CircuitBreaker, ManualClock]:
    clock = ManualClock(T0)
    return CircuitBreaker("charge", BreakerPolicy(failures=failures, cooldown=cooldown), clock), clock


def status(b: CircuitBreaker) -> str:
    """The breaker's status (a call, so mypy does not narrow it between transitions)."""
    return b.status


def fail(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.allow()
        b.record_failure()


# --- the stateful breaker ---------------------------------------------------------------


def test_a_new_breaker_is_closed_and_admits_calls() -> None:
    b, _ = breaker()
    assert status(b) == "closed"
    b.allow()
    assert b.retry_after() == 0.0


def test_opens_after_n_consecutive_failures() -> None:
    b, _ = breaker(failures=3)
    fail(b, 2)
    assert status(b) == "closed"
    assert b.state.failures == 2
    fail(b)
    assert status(b) == "open"
    assert b.state.opened_at == T0


def test_a_success_resets_the_consecutive_count() -> None:
    b, _ = breaker(failures=3)
    fail(b, 2)
    b.allow()
    b.record_success()
    fail(b, 2)
    assert status(b) == "closed"
    assert b.state.failures == 2


def test_an_open_breaker_fails_fast_with_a_clear_message() -> None:
    b, clock = breaker(failures=2, cooldown=30)
    fail(b, 2)
    clock.advance(10)
    with pytest.raises(CircuitOpenError) as info:
        b.allow()
    assert str(info.value) == (
        "circuit breaker of step 'charge' is open after 2 consecutive failures: calls fail fast "
        "until it half-opens at 2026-01-01T00:00:30+00:00 (in 20.0 s)"
    )
    assert info.value.step == "charge"
    assert info.value.failures == 2
    assert info.value.half_open_at == T0 + timedelta(seconds=30)
    assert info.value.retry_after == 20.0
    assert isinstance(info.value, SagalogError)
    assert b.retry_after() == 20.0


def test_half_opens_after_the_cooldown_and_admits_one_trial() -> None:
    b, clock = breaker(failures=1, cooldown=30)
    fail(b)
    clock.advance(29.999)
    with pytest.raises(CircuitOpenError):
        b.allow()
    clock.advance(0.001)
    assert b.retry_after() == 0.0
    b.allow()  # the trial
    assert status(b) == "half_open"
    with pytest.raises(CircuitOpenError) as info:
        b.allow()  # a second caller while the trial is out
    assert "half-opens at 2026-01-01T00:01:00+00:00 (in 30.0 s)" in str(info.value)


def test_a_successful_trial_closes_the_breaker() -> None:
    b, clock = breaker(failures=1, cooldown=5)
    fail(b)
    clock.advance(5)
    b.allow()
    b.record_success()
    assert b.state == CLOSED
    b.allow()
    b.allow()


def test_a_failed_trial_reopens_for_another_cooldown() -> None:
    b, clock = breaker(failures=2, cooldown=5)
    fail(b, 2)
    clock.advance(7)
    b.allow()
    b.record_failure()
    assert status(b) == "open"
    assert b.state.opened_at == T0 + timedelta(seconds=7)
    assert b.state.failures == 3
    with pytest.raises(CircuitOpenError, match=r"after 3 consecutive failures.*\(in 5\.0 s\)"):
        b.allow()
    clock.advance(5)
    b.allow()
    assert status(b) == "half_open"


def test_a_trial_that_never_reports_does_not_wedge_the_breaker() -> None:
    b, clock = breaker(failures=1, cooldown=10)
    fail(b)
    clock.advance(10)
    b.allow()  # the trial's caller vanishes without reporting
    clock.advance(9)
    with pytest.raises(CircuitOpenError):
        b.allow()
    clock.advance(1)
    b.allow()
    assert b.state.trial_started_at == T0 + timedelta(seconds=20)


def test_a_late_failure_while_open_does_not_postpone_half_open() -> None:
    b, clock = breaker(failures=2, cooldown=10)
    b.allow()  # admitted while closed, reports after the breaker opened
    fail(b, 2)
    clock.advance(4)
    b.record_failure()
    assert b.state.failures == 3
    assert b.state.opened_at == T0
    clock.advance(6)
    b.allow()


def test_guard_records_success_and_failure() -> None:
    b, _ = breaker(failures=2)
    with b.guard():
        pass
    assert b.state == CLOSED
    for _ in range(2):
        with pytest.raises(Boom), b.guard():
            raise Boom
    assert status(b) == "open"
    ran = False
    with pytest.raises(CircuitOpenError), b.guard():
        ran = True
    assert not ran


@pytest.mark.anyio
async def test_guard_gives_a_cancelled_trial_back() -> None:
    b, clock = breaker(failures=1, cooldown=10)
    fail(b)
    clock.advance(10)
    with anyio.CancelScope() as scope:
        with b.guard():
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert status(b) == "open"
    assert b.state.failures == 1  # a cancellation is not a failure
    b.allow()  # the trial is available again at once
    assert status(b) == "half_open"


# --- the registry -------------------------------------------------------------------------


def test_breakers_keeps_one_breaker_per_step_name() -> None:
    clock = ManualClock(T0)
    breakers = Breakers(clock, BreakerPolicy(failures=1, cooldown=60))
    charge = breakers.get("charge")
    assert breakers.get("charge") is charge
    assert "charge" in breakers and "reserve" not in breakers
    fail(charge)
    breakers.get("reserve").allow()  # another step is unaffected
    assert len(breakers) == 2
    assert {b.name for b in breakers} == {"charge", "reserve"}
    assert breakers.states()["charge"].status == "open"
    assert breakers.states()["reserve"] == CLOSED
    assert charge.clock is clock


def test_a_step_policy_overrides_the_registry_default() -> None:
    breakers = Breakers(ManualClock(T0), BreakerPolicy(failures=5))
    assert breakers.get("a").policy.failures == 5
    assert breakers.get("b", BreakerPolicy(failures=2, cooldown=1)).policy == BreakerPolicy(2, 1)


def test_reset_closes_one_or_all() -> None:
    breakers = Breakers(ManualClock(T0), BreakerPolicy(failures=1))
    fail(breakers.get("a"))
    fail(breakers.get("b"))
    breakers.reset("a")
    assert status(breakers.get("a")) == "closed"
    assert status(breakers.get("b")) == "open"
    breakers.reset("unknown")
    breakers.reset()
    assert status(breakers.get("b")) == "closed"


def test_default_policy() -> None:
    assert BreakerPolicy() == BreakerPolicy(failures=5, cooldown=30.0)
    assert CircuitBreaker("x").policy == BreakerPolicy()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_failures_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(InvalidPolicyError, match=f"breaker failures must be an integer >= 1, got {bad!r}"):
        BreakerPolicy(failures=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -5, float("inf"), float("nan"), "10"])
def test_cooldown_must_be_positive(bad: object) -> None:
    with pytest.raises(InvalidPolicyError, match="breaker cooldown must be a number of seconds > 0, got"):
        BreakerPolicy(cooldown=bad)  # type: ignore[arg-type]


# --- the pure transitions -------------------------------------------------------------------


def test_pure_transitions_never_mutate() -> None:
    policy = BreakerPolicy(failures=1, cooldown=10)
    opened = on_failure(policy, CLOSED, T0)
    assert BreakerState() == CLOSED
    assert opened == BreakerState("open", 1, opened_at=T0)
    assert half_open_at(policy, opened) == T0 + timedelta(seconds=10)
    assert half_open_at(policy, CLOSED) is None
    allowed, same = admit(policy, opened, T0 + timedelta(seconds=9))
    assert (allowed, same) == (False, opened)
    allowed, trial = admit(policy, opened, T0 + timedelta(seconds=10))
    assert allowed and trial.status == "half_open"
    assert opened.status == "open"
    assert on_success(trial) == CLOSED


events = st.lists(st.tuples(st.sampled_from(["call", "ok", "fail"]), st.floats(0, 20)), max_size=60)


@given(script=events, failures=st.integers(1, 5), cooldown=st.floats(0.5, 30))
def test_breaker_invariants(script: list[tuple[str, float]], failures: int, cooldown: float) -> None:
    """Whatever happens: open only at the threshold, never admits while cooling down."""
    policy = BreakerPolicy(failures=failures, cooldown=cooldown)
    state, now = CLOSED, T0
    for action, wait in script:
        now += timedelta(seconds=wait)
        if action == "call":
            allowed, after = admit(policy, state, now)
            if state.status == "open":
                due = half_open_at(policy, state)
                assert due is not None
                assert allowed == (now >= due)
            if state.status == "closed":
                assert allowed and after == state
            state = after
        elif action == "ok":
            state = on_success(state)
        else:
            before = state
            state = on_failure(policy, state, now)
            assert state.failures == before.failures + 1
            if before.status == "closed":
                assert (state.status == "open") == (state.failures >= failures)
        assert state.status == "closed" or state.opened_at is not None
        assert state.status != "closed" or state.failures < failures


# --- in the engine ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_open_breaker_fails_steps_fast_and_delays_their_retry() -> None:
    """Across instances: the breaker opens, the next attempt fails fast and retries at half-open."""
    from sagalog.storage import open_journal

    from sagalog import Registry, Retry, Runner, step, workflow

    registry = Registry()
    calls: list[str] = []

    @step(
        name="pay",
        registry=registry,
        retry=Retry.fixed(delay=1, attempts=2),
        breaker=BreakerPolicy(failures=2, cooldown=60),
    )
    def pay(who: str) -> str:
        calls.append(who)
        raise ConnectionError("payment service down")

    @workflow(name="buy", registry=registry)
    def buy(ctx: object, who: str) -> object:
        return (yield pay(who))

    clock = ManualClock(T0)
    async with open_journal("memory://", clock=clock) as journal:
        runner = Runner(journal, registry, clock=clock)
        await runner.start(buy, "ann", id="a")
        await runner.run_until_idle()
        clock.advance(1)
        await runner.run_until_idle()
        assert (await runner.describe("a")).status == "failed"
        assert runner.breakers.get("pay").status == "open"

        await runner.start(buy, "bob", id="b")
        await runner.run_until_idle()
        step_b = (await runner.describe("b")).steps[0]
        assert calls == ["ann", "ann"]  # bob's first attempt never ran
        assert step_b.error_type == "sagalog.errors.CircuitOpenError"
        assert step_b.message == (
            "circuit breaker of step 'pay' is open after 2 consecutive failures: calls fail fast "
            "until it half-opens at 2026-01-01T00:01:01+00:00 (in 60.0 s)"
        )
        assert step_b.retry_at == T0 + timedelta(seconds=61)  # not after the policy's 1 s

        clock.advance(60)
        await runner.run_until_idle()
        assert calls == ["ann", "ann", "bob"]  # the half-open trial
        assert (await runner.describe("b")).status == "failed"
        assert runner.breakers.get("pay").status == "open"
