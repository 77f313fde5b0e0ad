"""The workflow the chaos harness and the crash-recovery tests run in worker processes.

An order saga of three steps (reserve, charge, ship), the first two with
compensations. Every step execution appends one JSON line to the file named
by ``CHAOS_RUNS`` *before* it does anything else, so the checker can tell
which executions really happened and when (a kill -9 can land anywhere).
What a saga does is decided by its input, so the starter knows what to
expect: ``work`` seconds per step, a ``flaky`` chance that an attempt fails
with a retryable error, and ``fail_at`` naming a step that fails for good.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import anyio
from sagalog.engine.retry import Retry
from sagalog.engine.workflow import step, step_context, workflow
from sagalog.replay.commands import sleep, wait_signal

RUNS_ENV = "CHAOS_RUNS"


class Declined(Exception):
    """A permanent failure: not retried, the saga compensates."""


def record(order: dict[str, Any], name: str) -> None:
    """Append one execution line (one write call, so lines never interleave)."""
    path = os.environ.get(RUNS_ENV)
    if not path:
        return
    key = step_context().idempotency_key
    line = json.dumps({"id": order["id"], "step": name, "key": key, "pid": os.getpid(), "t": time.time()})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def work(order: dict[str, Any], name: str) -> None:
    """Record the execution, take some time, and fail as the order says."""
    record(order, name)
    await anyio.sleep(float(order.get("work", 0.0)))
    if order.get("fail_at") == name:
        raise Declined(f"{name} declined for order {order['id']}")
    if random.random() < float(order.get("flaky", 0.0)):
        raise ConnectionError(f"{name}: flaky service (retried)")


RETRY = Retry.exponential(initial=0.05, maximum=0.2, attempts=6, non_retryable=[Declined])
UNDO = Retry.exponential(initial=0.05, maximum=0.2, attempts=20)


@step(name="reserve", retry=RETRY)
async def reserve(order: dict[str, Any]) -> str:
    """Reserve stock."""
    await work(order, "reserve")
    return f"res-{order['id']}"


@step(name="release", retry=UNDO)
async def release(reservation: str) -> None:
    """Undo reserve."""
    record({"id": reservation.removeprefix("res-")}, "release")


@step(name="charge", retry=RETRY)
async def charge(order: dict[str, Any]) -> str:
    """Charge the payment."""
    await work(order, "charge")
    return f"pay-{order['id']}"


@step(name="refund", retry=UNDO)
async def refund(payment: str) -> None:
    """Undo charge."""
    record({"id": payment.removeprefix("pay-")}, "refund")


@step(name="ship", retry=RETRY)
async def ship(order: dict[str, Any]) -> str:
    """Hand the parcel over."""
    await work(order, "ship")
    return f"ship-{order['id']}"


@workflow(name="chaos_order")
def chaos_order(ctx: Any, order: dict[str, Any]) -> Any:
    """Reserve, charge, ship; a failure compensates in reverse."""
    reservation = yield reserve(order).compensate(release)
    payment = yield charge(order).compensate(refund)
    parcel = yield ship(order)
    return {"reservation": reservation, "payment": payment, "parcel": parcel}


@workflow(name="noop_saga")
def noop_saga(ctx: Any, n: int) -> Any:
    """Three no-op steps (the benchmark's saga)."""
    a = yield nothing(n)
    b = yield nothing(a)
    c = yield nothing(b)
    return c


@step(name="nothing")
async def nothing(n: int) -> int:
    """Do nothing, fast."""
    return n + 1


@workflow(name="sleeper")
def sleeper(ctx: Any, seconds: float) -> Any:
    """Sleep durably (the memory benchmark holds thousands of these)."""
    yield sleep(seconds=seconds)
    return "woke"


@workflow(name="approval")
def approval(ctx: Any, request: str) -> Any:
    """Wait for an ``approved`` signal (the client tests signal and cancel it)."""
    decision = yield wait_signal("approved", timeout=3600)
    return {"request": request, "decision": decision}
