"""Workflows the browser test runs in a real worker process (``sagalog worker shop_workflows``).

``shop.place_order`` reserves, charges (the card network times out once, so
that step shows two attempts), books a courier and ships; an order with
``"boxes": 0`` fails to ship for good, and the saga compensates the three
steps before it in reverse order (and when the order id starts with ``STUCK``,
the refund fails and the saga waits in ``compensation_failed`` for an
operator). ``shop.hold_order`` reserves and then waits for an ``approved``
signal, so it stays running until someone signals or cancels it.
"""

from __future__ import annotations

from typing import Any

import anyio
from sagalog.engine import Retry, step, step_context, workflow
from sagalog.replay import wait_signal

WORK = 0.15
"""Seconds each step takes, so the timeline bars have a visible length."""


class OutOfBoxes(Exception):
    """Shipping cannot happen: retrying will not help, the saga compensates."""


@step(name="reserve_stock")
async def reserve_stock(order: dict[str, Any]) -> str:
    """Hold the items in the warehouse."""
    await anyio.sleep(WORK)
    return f"RES-{order['id']}"


@step(name="release_stock")
async def release_stock(reservation: str) -> None:
    """Undo reserve_stock."""
    await anyio.sleep(WORK / 2)


@step(name="charge_card", retry=Retry.fixed(0.1, attempts=3))
async def charge_card(order: dict[str, Any]) -> str:
    """Charge the card; the first attempt meets a timeout (retried)."""
    await anyio.sleep(WORK)
    if step_context().attempt == 1:
        raise ConnectionError("card network timed out")
    return f"PAY-{order['id']}"


class RefundRefused(Exception):
    """The bank will not refund: the compensation fails and waits for an operator."""


@step(name="refund_card", retry=Retry.fixed(0.1, attempts=2))
async def refund_card(payment: str) -> None:
    """Undo charge_card; the bank refuses refunds of orders whose id starts with STUCK."""
    await anyio.sleep(WORK / 2)
    if payment.startswith("PAY-STUCK"):
        raise RefundRefused(f"the bank refused to refund {payment}")


@step(name="book_courier")
async def book_courier(order: dict[str, Any]) -> str:
    """Book a pick-up."""
    await anyio.sleep(WORK)
    return f"PICKUP-{order['id']}"


@step(name="cancel_courier")
async def cancel_courier(booking: str) -> None:
    """Undo book_courier."""
    await anyio.sleep(WORK / 2)


@step(name="ship_parcel", retry=Retry.fixed(0.1, attempts=2, non_retryable=[OutOfBoxes]))
async def ship_parcel(order: dict[str, Any]) -> str:
    """Pack and ship; fails for good when the order says the warehouse has no boxes."""
    await anyio.sleep(WORK)
    if order.get("boxes", 1) == 0:
        raise OutOfBoxes(f"no boxes left to pack order {order['id']}")
    return f"TRACK-{order['id']}"


@workflow(name="shop.place_order")
def place_order(ctx: Any, order: dict[str, Any]) -> Any:
    """Reserve, charge, book a courier, ship; each step registers its undo."""
    reservation = yield reserve_stock(order).compensate(release_stock)
    payment = yield charge_card(order).compensate(refund_card)
    pickup = yield book_courier(order).compensate(cancel_courier)
    tracking = yield ship_parcel(order)
    return {"reservation": reservation, "payment": payment, "pickup": pickup, "tracking": tracking}


@workflow(name="shop.hold_order")
def hold_order(ctx: Any, order: dict[str, Any]) -> Any:
    """Reserve, then wait for a person to approve the order."""
    reservation = yield reserve_stock(order).compensate(release_stock)
    approval = yield wait_signal("approved")
    return {"reservation": reservation, "approved_by": approval}
