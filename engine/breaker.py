"""Circuit breakers: stop calling a step whose dependency keeps failing.

One breaker guards each step name, in this process. It is *closed* (calls go
through) until ``failures`` consecutive calls fail; then it is *open* and every
call fails fast with :class:`~sagalog.errors.CircuitOpenError`, without
running. After ``cooldown`` seconds it is *half-open*: exactly one trial call
goes through. A successful trial closes the breaker; a failed one opens it
again for another cool-down.

The transitions are pure functions of a frozen :class:`BreakerState`
(:func:`admit`, :func:`on_success`, :func:`on_failure`);
:class:`CircuitBreaker` holds one state and reads the time from a
:class:`~sagalog.clock.Clock`, and :class:`Breakers` keeps one breaker per step
name. Breaker state is deliberately not journaled: it describes the health of
a downstream service as this process sees it, not the history of a workflow,
so it starts closed after a restart.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from sagalog.clock import SYSTEM_CLOCK, Clock
from sagalog.errors import CircuitOpenError, InvalidPolicyError

BreakerStatus = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open."""

    failures: int = 5
    """Consecutive failures that open the breaker."""
    cooldown: float = 30.0
    """Seconds an open breaker waits before letting one trial call through."""

    def __post_init__(self) -> None:
        if isinstance(self.failures, bool) or not isinstance(self.failures, int) or self.failures < 1:
            raise InvalidPolicyError(f"breaker failures must be an integer >= 1, got {self.failures!r}")
        if not (
            isinstance(self.cooldown, int | float) and math.isfinite(self.cooldown) and self.cooldown > 0
        ):
            raise InvalidPolicyError(
                f"breaker cooldown must be a number of seconds > 0, got {self.cooldown!r}"
            )


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A breaker at one moment. ``CLOSED`` is the initial state."""

    status: BreakerStatus = "closed"
    """closed (calls pass), open (calls fail fast) or half_open (one trial is out)."""
    failures: int = 0
    """Consecutive failures so far (reset by a success)."""
    opened_at: datetime | None = None
    """When the breaker last opened (set while open or half-open)."""
    trial_started_at: datetime | None = None
    """When the half-open trial call was let through."""


CLOSED = BreakerState()


def half_open_at(policy: BreakerPolicy, state: BreakerState) -> datetime | None:
    """When an open breaker will let a trial call through (``None`` unless open)."""
    if state.status != "open" or state.opened_at is None:
        return None
    return state.opened_at + timedelta(seconds=policy.cooldown)


def admit(policy: BreakerPolicy, state: BreakerState, now: datetime) -> tuple[bool, BreakerState]:
    """Decide whether a call may run now.

    Returns:
        ``(allowed, new_state)``. Letting the trial call of a half-open breaker
        through marks it taken, so concurrent callers fail fast meanwhile.
    """
    match state.status:
        case "closed":
            return True, state
        case "open":
            due = half_open_at(policy, state)
            if due is not None and now >= due:
                return True, replace(state, status="half_open", trial_started_at=now)
            return False, state
        case "half_open":
            # A trial that never reported (its caller was cancelled or crashed)
            # must not wedge the breaker: after another cool-down, allow a new one.
            started = state.trial_started_at
            if started is not None and now >= started + timedelta(seconds=policy.cooldown):
                return True, replace(state, trial_started_at=now)
            return False, state


def on_success(state: BreakerState) -> BreakerState:
    """The state after a call succeeded: closed, failure count reset."""
    return CLOSED if state != CLOSED else state


def on_failure(policy: BreakerPolicy, state: BreakerState, now: datetime) -> BreakerState:
    """The state after a call failed: counts it, opens at the threshold, re-opens on a failed trial."""
    failures = state.failures + 1
    match state.status:
        case "closed":
            if failures >= policy.failures:
                return BreakerState("open", failures, opened_at=now)
            return replace(state, failures=failures)
        case "half_open":
            return BreakerState("open", failures, opened_at=now)
        case "open":
            # A call admitted before the breaker opened failed late: count it,
            # but do not push the half-open time further away.
            return replace(state, failures=failures)


class CircuitBreaker:
    """The breaker of one step name, with its current state."""

    def __init__(self, name: str, policy: BreakerPolicy | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self.clock = clock
        self.state = CLOSED

    @property
    def status(self) -> BreakerStatus:
        """closed, open or half_open (an open breaker past its cool-down still reads open)."""
        return self.state.status

    def retry_after(self) -> float:
        """Seconds until an open breaker half-opens (0 when a call would be admitted now)."""
        due = half_open_at(self.policy, self.state)
        if due is None:
            return 0.0
        return max(0.0, (due - self.clock.now()).total_seconds())

    def allow(self) -> None:
        """Admit one call, or fail fast.

        Raises:
            CircuitOpenError: the breaker is open (or its half-open trial is out).
        """
        now = self.clock.now()
        allowed, self.state = admit(self.policy, self.state, now)
        if allowed:
            return
        if self.state.status == "open" and self.state.opened_at is not None:
            due = self.state.opened_at + timedelta(seconds=self.policy.cooldown)
        else:  # half-open with its trial out: the next chance is when that trial expires
            started = self.state.trial_started_at or now
            due = started + timedelta(seconds=self.policy.cooldown)
        retry_after = max(0.0, (due - now).total_seconds())
        raise CircuitOpenError(self.name, self.state.failures, due, retry_after)

    def record_success(self) -> None:
        """Report that an admitted call succeeded."""
        self.state = on_success(self.state)

    def record_failure(self) -> None:
        """Report that an admitted call failed."""
        self.state = on_failure(self.policy, self.state, self.clock.now())

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Admit a call and record its outcome: ``with breaker.guard(): ...``.

        Raises:
            CircuitOpenError: before the body runs, when the breaker is open.
        """
        self.allow()
        try:
            yield
        except Exception:
            self.record_failure()
            raise
        except BaseException:
            # Cancellation says nothing about the dependency's health: give the
            # trial back instead of counting a failure.
            if self.state.status == "half_open":
                self.state = replace(self.state, status="open", trial_started_at=None)
            raise
        self.record_success()


class Breakers:
    """One :class:`CircuitBreaker` per step name, created on first use."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, default: BreakerPolicy | None = None) -> None:
        self.clock = clock
        self.default = default or BreakerPolicy()
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str, policy: BreakerPolicy | None = None) -> CircuitBreaker:
        """The breaker of step ``name``; ``policy`` applies when it is created here.

        A step's policy is fixed by its decorator, so the first call's policy is
        the one every later call would pass too.
        """
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(name, policy or self.default, self.clock)
            self._breakers[name] = breaker
        return breaker

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)

    def states(self) -> dict[str, BreakerState]:
        """Each known step name with its breaker's state (for describe and metrics)."""
        return {name: b.state for name, b in self._breakers.items()}

    def reset(self, name: str | None = None) -> None:
        """Close one breaker (or all of them), e.g. after an operator fixed the dependency."""
        for key, breaker in self._breakers.items():
            if name is None or key == name:
                breaker.state = CLOSED
