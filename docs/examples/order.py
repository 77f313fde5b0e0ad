"""Order processing: create the order, reserve stock, charge the card, confirm.

Each step registers the step that undoes it. A card the payment provider
declines (any card number starting ``4000 0000``) fails the charge for good:
``PaymentDeclined`` is not retryable, so the saga compensates at once, in
reverse order: the stock is released, then the order is cancelled.

Run it: ``python -P docs/examples/order.py [DATABASE_URL]`` (default: an
in-memory journal). It places one order that goes through and one whose card
is declined, and prints what happens.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import msgspec

from sagalog import Retry, Runner, SagaState, open_journal, step, workflow


class Order(msgspec.Struct, frozen=True):
    """What the customer asked for."""

    order_id: str
    sku: str
    quantity: int
    amount_cents: int
    card: str


class PaymentDeclined(Exception):
    """The card was refused: retrying will not help."""


def say(text: str) -> None:
    """What a real step would do to the outside world; here it prints."""
    print(f"  {text}")


@step
def create_order(order: Order) -> str:
    """Write the order to the order system; its reference comes back."""
    say(f"create order {order.order_id}: {order.quantity} x {order.sku}")
    return f"ORD-{order.order_id}"


@step
def cancel_order(reference: str) -> None:
    """Undo create_order."""
    say(f"cancel order {reference}")


@step
def reserve_inventory(order: Order) -> str:
    """Hold the stock; the reservation id comes back."""
    say(f"reserve {order.quantity} x {order.sku}")
    return f"RES-{order.order_id}-{order.sku}"


@step
def release_inventory(reservation: str) -> None:
    """Undo reserve_inventory."""
    say(f"release reservation {reservation}")


@step(retry=Retry.exponential(initial=1, maximum=30, attempts=5, non_retryable=(PaymentDeclined,)))
def charge_payment(order: Order) -> str:
    """Charge the card; a declined card is final, a network error would be retried."""
    if order.card.replace(" ", "").startswith("40000000"):
        say(f"charge {order.amount_cents / 100:.2f} to card {order.card[-4:]}: DECLINED")
        raise PaymentDeclined(f"card ending {order.card[-4:]} was declined")
    say(f"charge {order.amount_cents / 100:.2f} to card {order.card[-4:]}")
    return f"PAY-{order.order_id}"


@step
def refund_payment(payment: str) -> None:
    """Undo charge_payment."""
    say(f"refund {payment}")


@step
def confirm_order(reference: str) -> str:
    """Tell the customer; nothing to undo after this."""
    say(f"confirm {reference} to the customer")
    return "confirmed"


@workflow(name="examples.place_order")
def place_order(ctx: Any, order: Order) -> Any:
    """The saga: every step that changes the world registers its undo."""
    reference = yield create_order(order).compensate(cancel_order)
    reservation = yield reserve_inventory(order).compensate(release_inventory)
    payment = yield charge_payment(order).compensate(refund_payment)
    status = yield confirm_order(reference)
    return {"order": reference, "reservation": reservation, "payment": payment, "status": status}


GOOD = Order("1001", "BOOK-42", 2, 3_998, "4242 4242 4242 4242")
DECLINED = Order("1002", "LAMP-7", 1, 12_500, "4000 0000 0000 0002")


async def main(url: str = "memory://") -> dict[str, SagaState]:
    """Place a good order and a declined one on the journal at ``url``; their final states by id."""
    states: dict[str, SagaState] = {}
    async with open_journal(url) as journal:
        runner = Runner(journal)
        for order in (GOOD, DECLINED):
            print(f"order {order.order_id}:")
            instance = await runner.start(place_order, order, id=f"order-{order.order_id}")
            await runner.run_until_idle()
            state = await runner.describe(instance)
            outcome = msgspec.msgpack.decode(state.result) if state.result else state.message
            print(f"  => {state.status}: {outcome}")
            states[instance] = state
    return states


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "memory://")
