"""A shopping session with a checkout saga bound to it.

Each customer has a cart session (kind ``cart``) that expires after 30 idle
minutes. The checkout workflow runs *in* the session: it reads the cart with
``ctx.session.get()``, reserves the items (registering their release),
records its progress in the session, waits for the customer to pay, charges
the card and closes the session.

``@workflow(session=True, on_session_end="cancel")`` binds every checkout to
its session: if the session ends before the checkout does, the checkout is
cancelled, and cancelling compensates what it did. Ann pays and her order
goes through. Bob walks away at the payment page; when his cart expires, his
checkout is cancelled and his reserved items are released.

Run it: ``python -P docs/examples/shopping.py [DATABASE_URL]`` (default: an
in-memory journal). The demo runs on a ManualClock and moves it forward by
half an hour instead of waiting that long.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import msgspec

from sagalog import ManualClock, Runner, SagaState, open_journal, step, wait_signal, workflow

IDLE_TIMEOUT = 1800
"""A cart session expires after 30 minutes without activity."""


def say(text: str) -> None:
    """What a real step would do to the outside world; here it prints."""
    print(f"  {text}")


@step
def reserve_items(customer: str, items: list[str]) -> str:
    """Hold the stock for the cart; the reservation id comes back."""
    say(f"reserve {', '.join(items)} for {customer}")
    return f"RES-{customer}"


@step
def release_items(reservation: str) -> None:
    """Undo reserve_items."""
    say(f"release reservation {reservation}")


@step
def charge_card(card: str, amount_cents: int) -> str:
    """Charge the card."""
    say(f"charge {amount_cents / 100:.2f} to card {card[-4:]}")
    return f"PAY-{card[-4:]}"


@step
def refund_card(payment: str) -> None:
    """Undo charge_card."""
    say(f"refund {payment}")


@workflow(name="examples.checkout", session=True, on_session_end="cancel")
def checkout(ctx: Any, customer: str) -> Any:
    """Reserve, wait for the payment, charge, close the cart: all inside the cart session."""
    cart = yield ctx.session.get()
    items: list[str] = cart.attributes["items"]
    reservation = yield reserve_items(customer, items).compensate(release_items)
    yield ctx.session.set("checkout", "awaiting payment")
    card = yield wait_signal("pay")
    payment = yield charge_card(card, cart.attributes["total_cents"]).compensate(refund_card)
    yield ctx.session.close("checked out")
    return {"reservation": reservation, "payment": payment, "items": items}


async def shop(runner: Runner, customer: str, items: list[str], total_cents: int) -> str:
    """Open the customer's cart session and start its checkout; the checkout's id."""
    cart = f"cart-{customer}"
    await runner.sessions.open(
        cart,
        kind="cart",
        attributes={"items": items, "total_cents": total_cents},
        idle_timeout=IDLE_TIMEOUT,
    )
    instance = await runner.start(checkout, customer, id=f"checkout-{customer}", session_id=cart)
    await runner.run_until_idle()
    return instance


async def main(url: str = "memory://") -> dict[str, SagaState]:
    """Ann pays, Bob walks away; the checkouts' final states by id."""
    clock = ManualClock()
    async with open_journal(url, clock=clock) as journal:
        runner = Runner(journal, clock=clock)

        print("ann:")
        ann = await shop(runner, "ann", ["BOOK-42", "LAMP-7"], 4_250)
        await runner.signal(ann, "pay", "4242 4242 4242 4242")
        await runner.run_until_idle()

        print("bob:")
        bob = await shop(runner, "bob", ["MUG-3"], 900)
        print(f"  (bob leaves; {IDLE_TIMEOUT // 60} minutes pass)")
        clock.advance(IDLE_TIMEOUT)
        await runner.run_until_idle()  # expires bob's cart, which cancels his checkout

        states = {}
        for instance in (ann, bob):
            state = await runner.describe(instance)
            session = await runner.sessions.get(f"cart-{instance.removeprefix('checkout-')}")
            outcome = msgspec.msgpack.decode(state.result) if state.result else state.message
            print(f"{instance} => {state.status}: {outcome} (cart {session.status})")
            states[instance] = state
    return states


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "memory://")
