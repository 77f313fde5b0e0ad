"""Workflows the console tests run: one for each status an operator meets.

The registry is built here, not the global one, so these names never clash
with other tests' workflows.
"""

from __future__ import annotations

from typing import Any

from sagalog.engine.retry import Retry
from sagalog.engine.workflow import Registry, step, workflow
from sagalog.replay.commands import wait_signal

REGISTRY = Registry()
ONCE = Retry.exponential(initial=0.01, maximum=0.01, attempts=1)
TWICE = Retry.exponential(initial=0.01, maximum=0.01, attempts=2)


class Declined(Exception):
    """A permanent failure: the saga compensates."""


@step(name="reserve", registry=REGISTRY)
async def reserve(order: dict[str, Any]) -> str:
    """Reserve stock."""
    return f"res-{order['id']}"


@step(name="release", registry=REGISTRY, retry=ONCE)
async def release(reservation: str) -> None:
    """Undo reserve; an order with ``stuck`` cannot be released."""
    if reservation.endswith("-stuck"):
        raise ConnectionError(f"warehouse offline: cannot release {reservation}")


@step(name="charge", registry=REGISTRY, retry=TWICE)
async def charge(order: dict[str, Any]) -> str:
    """Charge; ``decline`` makes it fail for good (after its two attempts)."""
    if order.get("decline"):
        raise Declined(f"card declined for order {order['id']}")
    return f"pay-{order['id']}"


@workflow(name="order", registry=REGISTRY)
def order(ctx: Any, spec: dict[str, Any]) -> Any:
    """Reserve (undone by release), charge, then wait for approval when asked to."""
    reservation = yield reserve(spec).compensate(release)
    payment = yield charge(spec)
    if spec.get("approval"):
        decision = yield wait_signal("approved")
        return {"reservation": reservation, "payment": payment, "decision": decision}
    return {"reservation": reservation, "payment": payment}


LATE = Registry()
"""A registry only the console of one test has: the worker parks ``late`` as unknown."""


@workflow(name="late", registry=LATE)
def late(ctx: Any) -> Any:
    """Deployed after its instances were started."""
    return "done"
    yield  # a generator
