"""Retry transient database failures (and only those), with capped exponential backoff."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import anyio

from sagalog.errors import OperationalError

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("sagalog.storage")


class Backoff:
    """How often and how long to retry an ``OperationalError``."""

    def __init__(self, attempts: int = 5, initial: float = 0.1, maximum: float = 2.0) -> None:
        self.attempts = attempts
        self.initial = initial
        self.maximum = maximum

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), with jitter."""
        base: float = min(self.maximum, self.initial * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)


def retry_transient(
    func: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T]]:
    """Retry ``func`` on OperationalError per ``self.backoff`` of its first argument.

    The decorated method's object must have a ``backoff`` attribute.
    """

    @wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        # The first attempt runs before anything else is looked up: it is
        # almost always the only one, and the wrapper sits on every append.
        try:
            return await func(*args, **kwargs)
        except OperationalError as exc:
            error = exc
        backoff: Backoff | None = getattr(args[0], "backoff", None)
        if backoff is None:
            backoff = Backoff()
        attempt = 1
        while True:
            if attempt >= backoff.attempts:
                raise error
            log.debug("transient failure, retry %d: %s", attempt, error)
            await anyio.sleep(backoff.delay(attempt))
            attempt += 1
            try:
                return await func(*args, **kwargs)
            except OperationalError as exc:
                error = exc

    return wrapper
