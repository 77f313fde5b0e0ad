"""The demo behind ``./run demo``: a saga, a compensation, a crash, a resume, the journal.

It works on the embedded default, a SQLite file (``.sagalog/demo/journal.db``,
recreated on every run), and drives the engine the way a user does: a real
worker process (``sagalog worker sagalog.demo_workflows``) runs the steps,
a :class:`~sagalog.engine.Client` starts the sagas, and the replay tool
(``sagalog replay show``) prints what the journal recorded.

1. Order 1 is paid with a card that is declined: the saga compensates, and
   the stock it reserved is released.
2. Order 2 is fine, but the worker is killed with SIGKILL while it is packing
   the parcel. Nothing of the saga's state was in that process: a second
   worker takes over once the dead one's lease expires, replays the journal
   and carries on from the interrupted step.
3. The replay tool shows both journals.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from sagalog.demo_workflows import Order, place_order
from sagalog.engine import Client
from sagalog.errors import SagalogError
from sagalog.replay import SagaState

DEMO_DIR = Path(".sagalog/demo")
LEASE_SECONDS = 2.0
TIMEOUT_SECONDS = 60.0


def banner(text: str) -> None:
    """A heading in the demo's output."""
    print(f"\n== {text}", flush=True)


def note(text: str) -> None:
    """A line of narration."""
    print(f"   {text}", flush=True)


def sagalog_command(*args: str) -> list[str]:
    """The command line of ``sagalog ARGS`` run with this interpreter."""
    return [sys.executable, "-P", "-m", "sagalog", *args]


async def start_worker(url: str, name: str) -> Process:
    """A worker process on the demo journal; its step output goes to our stdout."""
    command = sagalog_command(
        "worker", "sagalog.demo_workflows", "--db", url, "--lease", str(LEASE_SECONDS),
        "--worker-id", name, "--log-level", "WARNING", "--log-format", "text",
    )
    process = await anyio.open_process(command, stdout=None, stderr=None)
    note(f"started {name} (pid {process.pid}): sagalog worker sagalog.demo_workflows "
         f"--lease {LEASE_SECONDS:g}")
    return process


async def stop_worker(process: Process) -> None:
    """Ask a worker to finish politely (SIGTERM) and wait for it."""
    process.send_signal(signal.SIGTERM)
    with anyio.move_on_after(TIMEOUT_SECONDS) as scope:
        await process.wait()
    if scope.cancelled_caught:
        process.kill()
        await process.wait()


async def outcome(client: Client, instance: str) -> SagaState:
    """Wait for ``instance`` to end; its final state."""
    # A failed or compensated saga ends with an error; its state says which.
    with contextlib.suppress(SagalogError):
        await client.result(instance, timeout=TIMEOUT_SECONDS)
    return await client.describe(instance)


def summary(state: SagaState) -> str:
    """One line: status, and result or error message."""
    import msgspec

    if state.result:
        return f"{state.status}: {msgspec.msgpack.decode(state.result)}"
    return f"{state.status}: {state.message}"


async def step_running(client: Client, instance: str, name: str) -> None:
    """Return once step ``name`` of ``instance`` is recorded as started."""
    with anyio.fail_after(TIMEOUT_SECONDS):
        while True:
            state = await client.describe(instance)
            if any(s.name == name and s.status == "running" for s in state.steps.values()):
                return
            await anyio.sleep(0.05)


async def saga_with_compensation(client: Client) -> None:
    """Order 1: the card is declined, the saga compensates."""
    banner("1. A saga that fails and compensates")
    order = Order("1", "a blue teapot", 2_450, "4000 0000 0000 0002")
    instance = await client.start(place_order, order, id="order-1")
    note(f"started saga {instance}: reserve stock, charge the card (declined), ship")
    state = await outcome(client, instance)
    note(f"=> {summary(state)}")
    note("the reservation was released because a later step failed for good")


async def crash_and_resume(client: Client, url: str, worker: Process) -> None:
    """Order 2: the worker dies mid-step; another worker resumes from the journal."""
    banner("2. A crash in the middle of a saga, and the resume")
    order = Order("2", "a red kettle", 3_900, "4242 4242 4242 4242")
    instance = await client.start(place_order, order, id="order-2")
    note(f"started saga {instance}")
    await step_running(client, instance, "ship_parcel")
    worker.kill()  # SIGKILL: no clean-up, no last words, exactly like a crash
    await worker.wait()
    state = await client.describe(instance)
    done = [s.name for s in state.steps.values() if s.status == "completed"]
    note(f"killed the worker with SIGKILL while it was shipping; the journal says: {state.status},")
    note(f"completed steps {done}, ship_parcel started and never finished (version {state.version})")
    replacement = await start_worker(url, "worker-2")
    note(f"worker-2 takes the saga once worker-1's {LEASE_SECONDS:g} s lease runs out,")
    note("rebuilds its state from the journal, and runs the interrupted step again")
    state = await outcome(client, instance)
    note(f"=> {summary(state)}")
    note("reserve_stock and charge_card ran once each: their results came from the journal")
    await stop_worker(replacement)


async def demo(url: str) -> None:
    """Run both sagas against the journal at ``url``."""
    client = await Client.connect(url)
    try:
        worker = await start_worker(url, "worker-1")
        try:
            await saga_with_compensation(client)
            await crash_and_resume(client, url, worker)
        finally:
            if worker.returncode is None:
                await stop_worker(worker)
    finally:
        await client.close()


async def show_journals(url: str) -> None:
    """Print both journals with the replay tool, as a user would run it."""
    banner("3. The journals, as the replay tool shows them")
    for instance in ("order-1", "order-2"):
        print(f"\n$ sagalog replay show {instance} --db {url}", flush=True)
        await anyio.run_process(sagalog_command("replay", "show", instance, "--db", url), stdout=None)


def main(argv: list[str] | None = None) -> int:
    """Run the demo in a fresh ``.sagalog/demo`` directory."""
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    url = f"sqlite:///{DEMO_DIR / 'journal.db'}"
    print(f"sagalog demo: an order saga on the embedded journal {url}")

    async def everything() -> None:
        await demo(url)
        await show_journals(url)

    anyio.run(everything, backend_options=_backend_options())
    banner("Try it yourself")
    command = installed_command()
    note(f"{command} replay list --db {url}")
    note(f"{command} replay state order-2 --at 5 --db {url}")
    note(f"{command} status order-1 --db {url}")
    note(f"{command} dashboard --db {url}    (then open http://127.0.0.1:8787)")
    return 0


def installed_command() -> str:
    """How to type ``sagalog`` here: the virtualenv's script when it is not on PATH."""
    script = Path(sys.executable).parent / "sagalog"
    if shutil.which("sagalog") == str(script) or not script.exists():
        return "sagalog"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _backend_options() -> dict[str, Any]:
    """uvloop when it is installed, as under the worker."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


if __name__ == "__main__":
    sys.exit(main())
