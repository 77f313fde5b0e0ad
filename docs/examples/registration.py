"""User registration that waits for an administrator's approval, for three days at most.

The workflow creates the account (registering its deletion as compensation),
asks an administrator, and waits for the ``approval`` signal. The wait is
durable: the workflow can sit there for days, across restarts, at no cost.
An approval activates the account; a rejection, or no answer within
``APPROVAL_TIMEOUT``, fails the workflow, which deletes the account again.

The example runs on a :class:`~sagalog.ManualClock`, so "three days later"
happens at once: time is one of the workflow's inputs, read through the
runner's clock, and the timeout is a durable timer in the journal.

Run it: ``python -P docs/examples/registration.py [DATABASE_URL]``.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import msgspec

from sagalog import (
    ManualClock,
    Runner,
    SagaState,
    SignalTimeoutError,
    open_journal,
    step,
    wait_signal,
    workflow,
)

APPROVAL_TIMEOUT = 3 * 24 * 3600.0
"""Seconds an administrator has to answer."""


class Signup(msgspec.Struct, frozen=True):
    """What the user typed in."""

    email: str
    name: str


class Decision(msgspec.Struct, frozen=True):
    """The administrator's answer, sent as the ``approval`` signal's payload."""

    approved: bool
    by: str
    note: str = ""


class RegistrationRefused(Exception):
    """The registration was rejected or never answered."""


def say(text: str) -> None:
    """What a real step would do to the outside world; here it prints."""
    print(f"  {text}")


@step
async def create_account(signup: Signup) -> str:
    """Create the (inactive) account; its id comes back."""
    say(f"create inactive account for {signup.email}")
    return f"user:{signup.email}"


@step
async def delete_account(account: str) -> None:
    """Undo create_account."""
    say(f"delete account {account}")


@step
async def request_approval(signup: Signup) -> None:
    """Ask the administrators (in real life: an email or a ticket)."""
    say(f"ask an administrator to approve {signup.name} <{signup.email}>")


@step
async def activate_account(account: str, approved_by: str) -> str:
    """Let the user in."""
    say(f"activate {account} (approved by {approved_by})")
    return "active"


@workflow(name="examples.register_user")
def register_user(ctx: Any, signup: Signup) -> Any:
    """The saga: account, approval (or not), activation."""
    account = yield create_account(signup).compensate(delete_account)
    yield request_approval(signup)
    try:
        answer = yield wait_signal("approval", timeout=APPROVAL_TIMEOUT)
    except SignalTimeoutError:
        raise RegistrationRefused(f"nobody approved {signup.email} within 3 days") from None
    decision = msgspec.convert(answer, Decision)
    if not decision.approved:
        raise RegistrationRefused(f"{decision.by} rejected {signup.email}: {decision.note}")
    status = yield activate_account(account, decision.by)
    return {"account": account, "status": status}


ALICE = Signup("alice@example.com", "Alice")
BOB = Signup("bob@example.com", "Bob")
MALLORY = Signup("mallory@example.com", "Mallory")


async def main(url: str = "memory://", clock: ManualClock | None = None) -> dict[str, SagaState]:
    """Three sign-ups: approved, rejected, and never answered; their final states by id."""
    clock = clock or ManualClock()
    async with open_journal(url, clock=clock) as journal:
        runner = Runner(journal, clock=clock)
        ids = {}
        for signup in (ALICE, BOB, MALLORY):
            print(f"{signup.name} signs up:")
            ids[signup.name] = await runner.start(register_user, signup, id=f"signup-{signup.name.lower()}")
            await runner.run_until_idle()

        print("an hour later, the administrator answers Alice and Bob:")
        clock.advance(3600)
        await runner.signal(ids["Alice"], "approval", Decision(True, "root"))
        await runner.signal(ids["Bob"], "approval", Decision(False, "root", "looks like a bot"))
        await runner.run_until_idle()

        print("three days later, nobody has answered Mallory:")
        clock.advance(APPROVAL_TIMEOUT)
        await runner.run_until_idle()

        states = {}
        for name, instance in ids.items():
            state = await runner.describe(instance)
            outcome = msgspec.msgpack.decode(state.result) if state.result else state.message
            print(f"{name} => {state.status}: {outcome}")
            states[instance] = state
    return states


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "memory://")
