"""Trip booking: flight, hotel and car reserved in parallel, all or nothing.

The three reservations run at the same time with ``gather``. With
``fail_fast=False`` the workflow waits for all three before it learns about a
failure, so every booking that went through is known (and registered for
compensation) by then. When one of them fails, the saga cancels the bookings
that succeeded, in reverse order of their completion. The hotel called
"Overlook" is always full, which is how the example fails on purpose.

Run it: ``python -P docs/examples/trip.py [DATABASE_URL]``.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import msgspec

from sagalog import Retry, Runner, SagaState, gather, open_journal, step, workflow


class Trip(msgspec.Struct, frozen=True):
    """What the traveller wants."""

    trip_id: str
    traveller: str
    destination: str
    hotel: str
    nights: int


class Booking(msgspec.Struct, frozen=True):
    """A confirmed reservation with a supplier."""

    kind: str
    reference: str


class NoAvailability(Exception):
    """The supplier has nothing left: retrying will not help."""


FINAL = Retry.fixed(delay=1, attempts=3, non_retryable=(NoAvailability,))


def say(text: str) -> None:
    """What a real step would do to the outside world; here it prints."""
    print(f"  {text}")


@step(retry=FINAL)
async def book_flight(trip: Trip) -> Booking:
    """Reserve a seat."""
    say(f"book flight to {trip.destination} for {trip.traveller}")
    return Booking("flight", f"FL-{trip.trip_id}")


@step(retry=FINAL)
async def book_hotel(trip: Trip) -> Booking:
    """Reserve a room; the Overlook is always full."""
    if trip.hotel == "Overlook":
        say(f"book {trip.nights} nights at the {trip.hotel}: NO ROOMS")
        raise NoAvailability(f"the {trip.hotel} has no rooms for {trip.nights} nights")
    say(f"book {trip.nights} nights at the {trip.hotel}")
    return Booking("hotel", f"HT-{trip.trip_id}")


@step(retry=FINAL)
async def book_car(trip: Trip) -> Booking:
    """Reserve a rental car."""
    say(f"book a car in {trip.destination}")
    return Booking("car", f"CAR-{trip.trip_id}")


@step
async def cancel_booking(booking: Booking) -> None:
    """Undo any of the bookings (the compensation receives the booking)."""
    say(f"cancel {booking.kind} booking {booking.reference}")


@step
async def send_itinerary(trip: Trip, bookings: list[Booking]) -> str:
    """Email the traveller."""
    say(f"send itinerary to {trip.traveller}: {', '.join(b.reference for b in bookings)}")
    return "sent"


@workflow(name="examples.book_trip")
def book_trip(ctx: Any, trip: Trip) -> Any:
    """The saga: three reservations at once, then the itinerary."""
    bookings = yield gather(
        book_flight(trip).compensate(cancel_booking),
        book_hotel(trip).compensate(cancel_booking),
        book_car(trip).compensate(cancel_booking),
        fail_fast=False,
    )
    yield send_itinerary(trip, bookings)
    return [booking.reference for booking in bookings]


LISBON = Trip("T-1", "Ada", "Lisbon", "Pestana", 3)
OVERLOOK = Trip("T-2", "Jack", "Colorado", "Overlook", 150)


async def main(url: str = "memory://") -> dict[str, SagaState]:
    """Book a trip that works and one that cannot; their final states by id."""
    states: dict[str, SagaState] = {}
    async with open_journal(url) as journal:
        runner = Runner(journal)
        for trip in (LISBON, OVERLOOK):
            print(f"trip {trip.trip_id} to {trip.destination}:")
            instance = await runner.start(book_trip, trip, id=f"trip-{trip.trip_id}")
            await runner.run_until_idle()
            state = await runner.describe(instance)
            outcome = msgspec.msgpack.decode(state.result) if state.result else state.message
            print(f"  => {state.status}: {outcome}")
            states[instance] = state
    return states


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "memory://")
