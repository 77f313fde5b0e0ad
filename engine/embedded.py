"""``sagalog.run``: run one workflow to completion inside this process."""

from __future__ import annotations

import functools
from typing import Any

import anyio
from sagalog.engine.runner import Runner
from sagalog.engine.workflow import Registry, Workflow
from sagalog.replay.events import stream_id
from sagalog.replay.saga import TERMINAL
from sagalog.storage import Journal, connect

from sagalog.clock import SYSTEM_CLOCK, Clock


async def run_async(
    workflow: Workflow | str,
    *args: Any,
    url: str | None = None,
    journal: Journal | None = None,
    id: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    registry: Registry | None = None,
) -> Any:
    """Start ``workflow`` with ``args`` and run it (and its children) until it ends.

    Args:
        url: the journal to use when ``journal`` is not given (default:
            ``SAGALOG_DB`` or the SQLite file ``.sagalog/journal.db``).
        journal: an open journal to use instead of ``url``.
        id: the instance id (idempotent: an existing instance is resumed).
        clock: the clock timers wait on.

    Returns:
        The workflow's result.

    Raises:
        WorkflowFailedError, WorkflowCancelledError, WorkflowParkedError: it did not complete.
    """
    if journal is None:
        opened = await connect(url, clock=clock)
        try:
            return await run_async(workflow, *args, journal=opened, id=id, clock=clock, registry=registry)
        finally:
            await opened.close()
    runner = Runner(journal, registry, clock=clock, worker_id="sagalog.run")
    instance_id = await runner.start(workflow, *args, id=id)
    while True:
        await runner.run_until_idle()
        state = await runner.describe(instance_id)
        while state.continued_as is not None:
            state = await runner.describe(state.continued_as)
        if state.status in TERMINAL or state.status in ("parked", "compensation_failed"):
            return await runner.result(instance_id)
        wake = await journal.next_ready_at()
        if wake is None:  # waits for a signal from elsewhere
            last = await journal.read_stream(stream_id(state.instance_id), state.version, 1)
            await journal.wait_for_new(last[0].position if last else 0, 1.0)
        else:
            await clock.sleep(max(0.0, (wake - clock.now()).total_seconds()))


def run(
    workflow: Workflow | str,
    *args: Any,
    url: str | None = None,
    id: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    registry: Registry | None = None,
) -> Any:
    """Run one workflow to completion in this process and return its result.

    A blocking call for scripts: ``sagalog.run(place_order, order)``. Inside
    async code use :func:`run_async`.
    """
    call = functools.partial(run_async, workflow, *args, url=url, id=id, clock=clock, registry=registry)
    return anyio.run(call)
