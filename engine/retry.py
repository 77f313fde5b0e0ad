"""Retry policies for steps: how long to wait after a failure, and when to give up.

A :class:`RetryPolicy` is a frozen value with pure decision methods; it never
sleeps and never reads the time. The executor asks it, after attempt ``n`` of
a step failed, for :meth:`RetryPolicy.next_delay` and turns the answer into a
durable timer (``None`` means the step has failed for good). Jitter is drawn
from a ``random.Random`` the caller passes in, so the executor can seed it
deterministically or record the delay it got.

Build policies with the constructors on :data:`Retry`::

    Retry.exponential(initial=1, maximum=60, attempts=5)      # 1, 2, 4, 8 s (+ jitter)
    Retry.linear(initial=1, increment=2, maximum=10, attempts=4)   # 1, 3, 5 s
    Retry.fixed(delay=5, attempts=3, non_retryable=(ValueError,))
    Retry.none()                                              # one attempt only

Which policy a step uses (see :func:`resolve_policy`), first match wins:

1. the policy given to the step itself, ``@step(retry=...)``;
2. the workflow's default, ``@workflow(retry=...)``;
3. :data:`DEFAULT_RETRY` (``Retry.exponential()``: 5 attempts, 1 s doubling to 60 s).

A compensation is a step like any other and resolves its policy the same way.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sagalog.errors import InvalidPolicyError

BackoffKind = Literal["exponential", "linear", "fixed", "none"]

ErrorMatcher = type[BaseException] | str
"""An exception type (matched with ``isinstance``) or a type name (matched by name)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a step is retried. Build one with :data:`Retry`; the fields are read-only."""

    kind: BackoffKind
    """The shape of the backoff: exponential, linear, fixed or none."""
    attempts: int
    """Total attempts, the first one included (1 means never retry)."""
    initial: float = 0.0
    """Seconds to wait after the first failed attempt (before jitter)."""
    maximum: float = 0.0
    """Upper bound of any wait, in seconds, jitter included."""
    multiplier: float = 2.0
    """Growth factor of an exponential backoff."""
    increment: float = 0.0
    """Seconds added per attempt by a linear backoff."""
    jitter: bool = False
    """Randomise each wait within [half, all] of its nominal value."""
    non_retryable: tuple[ErrorMatcher, ...] = field(default=())
    """Errors that fail the step at once, whatever attempts are left."""
    timeout: float | None = None
    """Seconds one attempt may run before it is cancelled and counted as failed."""

    def __post_init__(self) -> None:
        _check_policy(self)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based), ignoring the attempt limit.

        Args:
            attempt: the number of the attempt that just failed, from 1.
            rng: the source of jitter (used only when ``jitter`` is set).

        Returns:
            A delay in ``[0, maximum]``.
        """
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        nominal = min(self.maximum, self._nominal(attempt))
        if not self.jitter or nominal == 0.0:
            return nominal
        # "Equal jitter": keep half of the nominal wait and randomise the rest,
        # so retries still back off while concurrent failures spread out.
        half = nominal / 2
        return half + rng.uniform(0.0, half)

    def next_delay(
        self, attempt: int, error: BaseException | str | Sequence[str], rng: random.Random
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up.

        Args:
            attempt: the number of the attempt that just failed, from 1.
            error: the exception it raised, or its type name(s) as recorded in
                the journal (see :meth:`is_retryable`).
            rng: the source of jitter.

        Returns:
            ``None`` when ``error`` is not retryable or no attempts are left.
        """
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        if attempt >= self.attempts or not self.is_retryable(error):
            return None
        return self.backoff(attempt, rng)

    def is_retryable(self, error: BaseException | str | Sequence[str]) -> bool:
        """Whether ``error`` may be retried under this policy.

        An exception object is matched against the ``non_retryable`` types with
        ``isinstance`` (and against names given as strings through its class
        hierarchy). An error that came back from the journal is known only by
        name: pass its type name, bare (``"ValueError"``) or qualified
        (``"myapp.errors.Declined"``), or the names of its class and bases. A
        bare name matches a qualified one with the same last component.
        """
        if isinstance(error, BaseException):
            if any(isinstance(error, m) for m in self.non_retryable if isinstance(m, type)):
                return False
            names: Sequence[str] = [_type_name(cls) for cls in type(error).__mro__]
        elif isinstance(error, str):
            names = [error]
        else:
            names = error
        return not any(_names_match(name, m) for name in names for m in self.non_retryable)

    def _nominal(self, attempt: int) -> float:
        match self.kind:
            case "exponential":
                if self.initial == 0:
                    return 0.0
                try:
                    return self.initial * self.multiplier ** (attempt - 1)
                except OverflowError:
                    return math.inf
            case "linear":
                return self.initial + self.increment * (attempt - 1)
            case "fixed":
                return self.initial
            case "none":
                return 0.0


class Retry:
    """Constructors of :class:`RetryPolicy` (``Retry.exponential(...)`` and friends)."""

    def __init__(self) -> None:
        raise TypeError("Retry only groups constructors: call Retry.exponential(), .linear(), ...")

    @staticmethod
    def exponential(
        initial: float = 1.0,
        maximum: float = 60.0,
        attempts: int = 5,
        *,
        jitter: bool = True,
        multiplier: float = 2.0,
        non_retryable: Sequence[ErrorMatcher] = (),
        timeout: float | None = None,
    ) -> RetryPolicy:
        """Wait ``initial * multiplier ** (n - 1)`` seconds after failure ``n``, capped at ``maximum``."""
        return RetryPolicy(
            "exponential",
            attempts,
            initial=initial,
            maximum=maximum,
            multiplier=multiplier,
            jitter=jitter,
            non_retryable=tuple(non_retryable),
            timeout=timeout,
        )

    @staticmethod
    def linear(
        initial: float = 1.0,
        increment: float = 1.0,
        maximum: float = 60.0,
        attempts: int = 5,
        *,
        jitter: bool = False,
        non_retryable: Sequence[ErrorMatcher] = (),
        timeout: float | None = None,
    ) -> RetryPolicy:
        """Wait ``initial + increment * (n - 1)`` seconds after failure ``n``, capped at ``maximum``."""
        return RetryPolicy(
            "linear",
            attempts,
            initial=initial,
            maximum=maximum,
            increment=increment,
            jitter=jitter,
            non_retryable=tuple(non_retryable),
            timeout=timeout,
        )

    @staticmethod
    def fixed(
        delay: float = 1.0,
        attempts: int = 3,
        *,
        jitter: bool = False,
        non_retryable: Sequence[ErrorMatcher] = (),
        timeout: float | None = None,
    ) -> RetryPolicy:
        """Wait ``delay`` seconds after every failure."""
        return RetryPolicy(
            "fixed",
            attempts,
            initial=delay,
            maximum=delay,
            jitter=jitter,
            non_retryable=tuple(non_retryable),
            timeout=timeout,
        )

    @staticmethod
    def none(*, timeout: float | None = None) -> RetryPolicy:
        """One attempt only: the first failure fails the step."""
        return RetryPolicy("none", 1, timeout=timeout)


def _check_policy(policy: RetryPolicy) -> None:
    """Refuse a policy that cannot mean anything, naming the bad field."""
    if isinstance(policy.attempts, bool) or not isinstance(policy.attempts, int) or policy.attempts < 1:
        raise InvalidPolicyError(f"retry attempts must be an integer >= 1, got {policy.attempts!r}")
    for name in ("initial", "maximum", "increment"):
        value = getattr(policy, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise InvalidPolicyError(f"retry {name} must be a finite number >= 0 seconds, got {value!r}")
    if policy.maximum < policy.initial:
        raise InvalidPolicyError(
            f"retry maximum ({policy.maximum!r} s) is smaller than initial ({policy.initial!r} s)"
        )
    if not (math.isfinite(policy.multiplier) and policy.multiplier >= 1):
        raise InvalidPolicyError(f"retry multiplier must be a finite number >= 1, got {policy.multiplier!r}")
    if policy.timeout is not None and not (math.isfinite(policy.timeout) and policy.timeout > 0):
        raise InvalidPolicyError(f"retry timeout must be a number of seconds > 0, got {policy.timeout!r}")
    for matcher in policy.non_retryable:
        if not (
            isinstance(matcher, str) or (isinstance(matcher, type) and issubclass(matcher, BaseException))
        ):
            raise InvalidPolicyError(f"non_retryable takes exception types or type names, got {matcher!r}")


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _names_match(name: str, matcher: ErrorMatcher) -> bool:
    """Whether a recorded type name denotes ``matcher``; a bare name matches a qualified one."""
    wanted = _type_name(matcher) if isinstance(matcher, type) else matcher
    if name == wanted:
        return True
    if "." in name and "." in wanted:
        return False
    return name.rsplit(".", 1)[-1] == wanted.rsplit(".", 1)[-1]


DEFAULT_RETRY = Retry.exponential()
"""The policy of a step when neither it nor its workflow names one."""


def resolve_policy(
    step_policy: RetryPolicy | None,
    workflow_policy: RetryPolicy | None = None,
    default: RetryPolicy = DEFAULT_RETRY,
) -> RetryPolicy:
    """The policy a step runs with: its own, else its workflow's default, else ``default``."""
    if step_policy is not None:
        return step_policy
    if workflow_policy is not None:
        return workflow_policy
    return default
