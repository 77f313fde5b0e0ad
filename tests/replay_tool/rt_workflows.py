"""Workflows for the verify tests: one shop order in three versions.

``V1`` is the code the histories were recorded with. ``INCOMPATIBLE`` bills
instead of reserving stock first (a change to what histories already
recorded); ``COMPATIBLE`` adds a step after the approval wait, where every
running history ends. Each version lives in its own registry under the same
workflow name, as successive deployments of one module would.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from sagalog.engine.workflow import Registry, step, workflow
from sagalog.replay.commands import wait_signal

NAME = "shop.order"

V1 = Registry()
INCOMPATIBLE = Registry()
COMPATIBLE = Registry()


def _steps(registry: Registry) -> None:
    @step(name="shop.reserve", registry=registry)
    def reserve(order: dict[str, Any]) -> str:
        return f"res-{order['id']}"

    @step(name="shop.charge", registry=registry)
    def charge(total: int) -> str:
        return f"pay-{total}"

    @step(name="shop.bill", registry=registry)
    def bill(total: int) -> str:
        return f"bill-{total}"

    @step(name="shop.notify", registry=registry)
    def notify(order_id: int) -> bool:
        return True


for _registry in (V1, INCOMPATIBLE, COMPATIBLE):
    _steps(_registry)


@workflow(name=NAME, registry=V1)
def order_v1(ctx: Any, order: dict[str, Any]) -> Generator[Any, Any, dict[str, str]]:
    reservation = yield V1.steps["shop.reserve"](order)
    yield wait_signal("approved")
    payment = yield V1.steps["shop.charge"](order["total"])
    return {"reservation": reservation, "payment": payment}


@workflow(name=NAME, registry=INCOMPATIBLE)
def order_incompatible(ctx: Any, order: dict[str, Any]) -> Generator[Any, Any, dict[str, str]]:
    payment = yield INCOMPATIBLE.steps["shop.bill"](order["total"])
    yield wait_signal("approved")
    reservation = yield INCOMPATIBLE.steps["shop.reserve"](order)
    return {"reservation": reservation, "payment": payment}


@workflow(name=NAME, registry=COMPATIBLE)
def order_compatible(ctx: Any, order: dict[str, Any]) -> Generator[Any, Any, dict[str, str]]:
    reservation = yield COMPATIBLE.steps["shop.reserve"](order)
    yield wait_signal("approved")
    yield COMPATIBLE.steps["shop.notify"](order["id"])
    payment = yield COMPATIBLE.steps["shop.charge"](order["total"])
    return {"reservation": reservation, "payment": payment}
