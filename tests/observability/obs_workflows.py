"""Workflows for the observability tests: one completes, one compensates, one retries,
one sleeps, one trips a circuit breaker."""

from __future__ import annotations

import logging
from typing import Any

from sagalog.engine import BreakerPolicy, Registry, step, workflow
from sagalog.engine.retry import Retry
from sagalog.replay import sleep

REGISTRY = Registry()
flaky_failures: dict[str, int] = {}
log = logging.getLogger("obs.steps")


@step(registry=REGISTRY, name="reserve", retry=Retry.none())
async def reserve(item: str) -> str:
    log.info("reserving %s", item)
    return f"r-{item}"


@step(registry=REGISTRY, name="release", retry=Retry.none())
async def release(reservation: str) -> None:
    log.info("releasing %s", reservation)


@step(registry=REGISTRY, name="charge", retry=Retry.none())
async def charge(amount: int) -> None:
    raise ValueError(f"card declined for {amount}")


@step(registry=REGISTRY, name="flaky", retry=Retry.fixed(0.001, attempts=3))
async def flaky(key: str) -> str:
    """Fails the first time it is called for ``key``."""
    if flaky_failures.get(key, 0) < 1:
        flaky_failures[key] = flaky_failures.get(key, 0) + 1
        raise ConnectionError("service busy")
    return key


@step(registry=REGISTRY, name="guarded", retry=Retry.none(), breaker=BreakerPolicy(failures=1, cooldown=3600))
async def guarded() -> None:
    raise ConnectionError("downstream is down")


@workflow(registry=REGISTRY, name="order")
def order(ctx: Any, item: str) -> Any:
    reservation = yield reserve(item).compensate(release)
    return reservation


@workflow(registry=REGISTRY, name="declined")
def declined(ctx: Any, item: str) -> Any:
    yield reserve(item).compensate(release)
    yield charge(10)


@workflow(registry=REGISTRY, name="retried")
def retried(ctx: Any, key: str) -> Any:
    return (yield flaky(key))


@workflow(registry=REGISTRY, name="napping")
def napping(ctx: Any, seconds: float) -> Any:
    yield sleep(seconds)
    return (yield reserve("after the nap"))


@workflow(registry=REGISTRY, name="tripping")
def tripping(ctx: Any) -> Any:
    yield guarded()
