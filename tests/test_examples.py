"""The examples in docs/examples run, on every journal backend, and do what they say."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

from sagalog import SagaState

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def load(name: str) -> ModuleType:
    """Import docs/examples/<name>.py once (its workflows register on import)."""
    module_name = f"sagalog_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def result(state: SagaState) -> Any:
    assert state.result is not None, f"{state.instance_id} has no result ({state.status}: {state.message})"
    return msgspec.msgpack.decode(state.result)


def compensations(state: SagaState) -> list[tuple[str, int | None]]:
    """(compensation step name, the step it undid) in the order they ran."""
    return [
        (s.name, s.for_seq)
        for s in sorted(state.steps.values(), key=lambda s: s.seq)
        if s.kind == "compensation" and s.status == "completed"
    ]


def lines_in_order(output: str, *expected: str) -> None:
    """Each expected text appears in ``output``, on lines in this order."""
    lines = output.splitlines()
    positions = []
    for text in expected:
        found = [i for i, line in enumerate(lines) if text in line]
        assert found, f"{text!r} not printed; output was:\n{output}"
        positions.append(found[0])
    assert positions == sorted(positions), f"printed out of order: {expected}\n{output}"


async def test_order(journal_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    order = load("order")
    states = await order.main(journal_url)

    good = states["order-1001"]
    assert good.status == "completed"
    assert result(good) == {
        "order": "ORD-1001",
        "reservation": "RES-1001-BOOK-42",
        "payment": "PAY-1001",
        "status": "confirmed",
    }
    assert compensations(good) == []

    declined = states["order-1002"]
    assert declined.status == "compensated"
    # The step's failure reaches the workflow as a StepError naming the original error.
    assert declined.error_type == "sagalog.errors.StepError"
    assert declined.message == (
        f"step {order.charge_payment.name!r} failed after 1 attempt(s): "
        "sagalog_example_order.PaymentDeclined: card ending 0002 was declined"
    )
    charge = declined.steps[2]
    assert (charge.name, charge.status, charge.attempts) == (order.charge_payment.name, "failed", 1)
    # Reverse order of registration: the reservation (step 1) first, then the order (step 0).
    assert compensations(declined) == [(order.release_inventory.name, 1), (order.cancel_order.name, 0)]
    assert not any(s.name == order.refund_payment.name for s in declined.steps.values())

    out = capsys.readouterr().out
    lines_in_order(
        out,
        "charge 125.00 to card 0002: DECLINED",
        "release reservation RES-1002-LAMP-7",
        "cancel order ORD-1002",
        "=> compensated: step",
    )
    assert "refund" not in out


async def test_trip(journal_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    trip = load("trip")
    states = await trip.main(journal_url)

    lisbon = states["trip-T-1"]
    assert lisbon.status == "completed"
    assert result(lisbon) == ["FL-T-1", "HT-T-1", "CAR-T-1"]

    overlook = states["trip-T-2"]
    assert overlook.status == "compensated"
    assert overlook.message.endswith("NoAvailability: the Overlook has no rooms for 150 nights")
    hotel = overlook.steps[1]
    assert (hotel.name, hotel.status, hotel.attempts) == (trip.book_hotel.name, "failed", 1)
    # The flight (step 0) and the car (step 2) were booked and are cancelled; the
    # hotel never was. They ran in parallel, so either may be undone first.
    undone = compensations(overlook)
    assert sorted(undone, key=lambda c: c[1] or 0) == [
        (trip.cancel_booking.name, 0),
        (trip.cancel_booking.name, 2),
    ]
    assert not any(s.name == trip.send_itinerary.name for s in overlook.steps.values())

    out = capsys.readouterr().out
    assert "cancel flight booking FL-T-2" in out
    assert "cancel car booking CAR-T-2" in out
    assert "cancel hotel" not in out
    assert "send itinerary to Jack" not in out


async def test_registration(journal_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    registration = load("registration")
    states = await registration.main(journal_url)

    alice = states["signup-alice"]
    assert alice.status == "completed"
    assert result(alice) == {"account": "user:alice@example.com", "status": "active"}

    bob = states["signup-bob"]
    assert bob.status == "compensated"
    assert bob.message == "root rejected bob@example.com: looks like a bot"
    assert compensations(bob) == [(registration.delete_account.name, 0)]

    mallory = states["signup-mallory"]
    assert mallory.status == "compensated"
    assert mallory.message == "nobody approved mallory@example.com within 3 days"
    assert compensations(mallory) == [(registration.delete_account.name, 0)]

    out = capsys.readouterr().out
    lines_in_order(
        out,
        "three days later",
        "delete account user:mallory@example.com",
        "Mallory => compensated",
    )
    assert "activate user:bob@example.com" not in out
    assert "activate user:mallory@example.com" not in out


async def test_registration_waits_until_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    """One second before the deadline, the unanswered sign-up is still waiting."""
    registration = load("registration")
    from sagalog import ManualClock, Runner, open_journal

    clock = ManualClock()
    async with open_journal("memory://", clock=clock) as journal:
        runner = Runner(journal, clock=clock)
        instance = await runner.start(registration.register_user, registration.MALLORY, id="m")
        await runner.run_until_idle()
        clock.advance(registration.APPROVAL_TIMEOUT - 1)
        await runner.run_until_idle()
        assert (await runner.describe(instance)).status == "running"
        clock.advance(1)
        await runner.run_until_idle()
        assert (await runner.describe(instance)).status == "compensated"


@pytest.mark.parametrize("name", ["order", "trip", "registration"])
def test_examples_run_as_scripts(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-P", str(EXAMPLES / f"{name}.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "=> completed" in done.stdout
    assert "=> compensated" in done.stdout


async def test_example_histories_replay_under_their_code(sqlite_url: str) -> None:
    """What the examples recorded, the replay tool's verify reproduces (no step runs)."""
    from sagalog.engine import DEFAULT_REGISTRY
    from sagalog.replay import verify_journal
    from sagalog.storage import open_journal

    from sagalog.cli.replay import registry_code

    for name in ("order", "trip", "registration"):
        await load(name).main(sqlite_url)
    async with open_journal(sqlite_url) as journal:
        report = await verify_journal(journal, **registry_code(DEFAULT_REGISTRY))
    assert report.problems == []
    assert (report.replayed, report.ok) == (7, 7)
