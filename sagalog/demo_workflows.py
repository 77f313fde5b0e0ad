"""The workflows of ``python -m sagalog.demo``: a small order saga.

The worker process the demo starts imports this module
(``sagalog worker sagalog.demo_workflows``). Each step prints what it does
to the outside world, tagged with the worker's process id, so the demo's
output shows which process ran which step, before and after the crash.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from sagalog.engine import Retry, step, workflow

SHIPPING_SECONDS = 4.0
"""How long packing takes: long enough for the demo to kill the worker mid-step."""


class Order(msgspec.Struct, frozen=True):
    """What the customer asked for."""

    order_id: str
    item: str
    amount_cents: int
    card: str


class PaymentDeclined(Exception):
    """The card was refused: retrying will not help."""


def say(text: str) -> None:
    """Stand-in for a call to another system: print it, tagged with this process."""
    print(f"    [worker pid {os.getpid()}] {text}", flush=True)


@step(name="reserve_stock")
def reserve_stock(order: Order) -> str:
    """Hold the item in the warehouse."""
    say(f"reserve {order.item} for order {order.order_id}")
    return f"RES-{order.order_id}"


@step(name="release_stock")
def release_stock(reservation: str) -> None:
    """Undo reserve_stock."""
    say(f"release reservation {reservation}  (compensation)")


@step(name="charge_card", retry=Retry.fixed(0.2, attempts=3, non_retryable=(PaymentDeclined,)))
def charge_card(order: Order) -> str:
    """Charge the card; cards starting 4000 are declined for good."""
    if order.card.startswith("4000"):
        say(f"charge {order.amount_cents / 100:.2f} to card ...{order.card[-4:]}: DECLINED")
        raise PaymentDeclined(f"card ending {order.card[-4:]} was declined")
    say(f"charge {order.amount_cents / 100:.2f} to card ...{order.card[-4:]}")
    return f"PAY-{order.order_id}"


@step(name="refund_card")
def refund_card(payment: str) -> None:
    """Undo charge_card."""
    say(f"refund {payment}  (compensation)")


@step(name="ship_parcel")
def ship_parcel(order: Order) -> str:
    """Pack and hand over to the carrier: slow, so a crash can land in the middle."""
    say(f"packing order {order.order_id} ({SHIPPING_SECONDS:g} s)...")
    time.sleep(SHIPPING_SECONDS)
    say(f"parcel for order {order.order_id} handed to the carrier")
    return f"TRACK-{order.order_id}"


@workflow(name="demo.place_order")
def place_order(ctx: Any, order: Order) -> Any:
    """Reserve, charge, ship; each step that changes the world registers its undo."""
    reservation = yield reserve_stock(order).compensate(release_stock)
    payment = yield charge_card(order).compensate(refund_card)
    tracking = yield ship_parcel(order)
    return {"reservation": reservation, "payment": payment, "tracking": tracking}
