"""Parents and children at run time: what a Runner reads and appends for them.

:class:`Family` does the I/O around the pure decisions of
:mod:`sagalog.engine.children`: it reads a child's parent to tell whether the
child is an orphan, delivers an ended child's outcome to its parent, cancels
the children a cancelled parent leaves behind, and feeds a parent the
``ChildFailed`` of children whose id was in use. The Runner calls it from its
commit path; it reaches back into the Runner only through the callables it is
given (:class:`Describe`, :class:`~sagalog.engine.stepping.Tick`,
:class:`Cancel`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sagalog.engine.children import may_be_orphan, orphan_verdict, outcome_for_parent, owes_parent
from sagalog.engine.inputs import ignore_conflict
from sagalog.engine.instances import create_decided
from sagalog.engine.live import Live
from sagalog.engine.loader import Loader
from sagalog.engine.stepping import Tick
from sagalog.engine.workflow import Registry
from sagalog.replay.events import ChildFailed, ParentNotified, WorkflowEvent, encode_event, stream_id
from sagalog.replay.saga import SagaState
from sagalog.storage import Journal, Schedule

from sagalog.clock import Clock
from sagalog.errors import NotFoundError


class Describe(Protocol):
    """Reads an instance's state (``Runner.describe``)."""

    async def __call__(self, instance_id: str) -> SagaState:
        """The instance's state; raises NotFoundError when there is none."""
        ...


class Cancel(Protocol):
    """Asks an instance to cancel (``Runner.cancel``)."""

    async def __call__(self, instance_id: str, reason: str) -> None:
        """Cancel ``instance_id``, recording ``reason``."""
        ...


class Family:
    """The parent/child plumbing of one Runner.

    Args:
        journal: where parents and children live.
        registry: the workflows this process can run (a parent without code
            here gets a child's outcome appended for whoever has it).
        clock: when a parent told of a child's outcome is ready.
        meta: the Runner's event metadata (its worker id), for what this appends.
        loader: the Runner's loader; a child that told its parent is dropped from its cache.
        describe: reads a parent's state (``Runner.describe``).
        tick: commits a child's outcome to a parent this process runs (``Runner._tick``).
        cancel: cancels a child (``Runner.cancel``).
    """

    def __init__(
        self,
        journal: Journal,
        registry: Registry,
        clock: Clock,
        meta: dict[str, str],
        loader: Loader,
        describe: Describe,
        tick: Tick,
        cancel: Cancel,
    ) -> None:
        self.journal = journal
        self.registry = registry
        self.clock = clock
        self._meta = meta
        self._loader = loader
        self._describe = describe
        self._tick = tick
        self._cancel = cancel

    async def orphaned(self, live: Live) -> list[WorkflowEvent]:
        """A cancel for a child whose parent never recorded starting it and never will.

        Once the parent has recorded it (see ``children.orphan_verdict``), or
        while it may still, the child runs; the parent is read until then only.
        """
        # Runs on every commit: the common case (not a child, or one already
        # adopted) must cost nothing more than these two checks.
        state = live.state
        if live.adopted or not may_be_orphan(state):
            return []
        assert state.parent_id is not None
        try:
            parent = await self._describe(state.parent_id)
        except NotFoundError:
            return []
        verdict = orphan_verdict(state, parent)
        if verdict == "adopted":
            live.adopted = True
            return []
        return [] if verdict == "undecided" else [verdict]

    async def cancel_child(self, parent_id: str, child_id: str) -> None:
        """Cancel a child its cancelled parent decided to cancel (a ``ChildCancelRequested``)."""
        await self._cancel(child_id, f"parent {parent_id} was cancelled")

    async def after_end(self, state: SagaState) -> None:
        """Deliver an ended child's outcome to its parent, then mark the child done."""
        if not owes_parent(state):
            return
        assert state.parent_id is not None
        event = outcome_for_parent(state)
        parent = await self._describe(state.parent_id)
        if parent.terminal:
            pass  # nothing waits for it any more (an orphan, see orphaned): only mark it done
        elif parent.workflow in self.registry.workflows and parent.status != "parked":
            await self._tick(state.parent_id, [event], None)
        else:  # no code for the parent here: record the outcome for whoever has it
            schedule = Schedule(None if parent.status == "parked" else self.clock.now())
            with ignore_conflict():
                await self.journal.append(
                    stream_id(state.parent_id), parent.version, [encode_event(event, self._meta)],
                    schedule=schedule,
                )  # fmt: skip
        with ignore_conflict():
            await self.journal.append(
                stream_id(state.instance_id),
                state.version,
                [encode_event(ParentNotified(state.parent_id), self._meta)],
                schedule=Schedule(None),
            )
        self._loader.forget(state.instance_id)

    # -- child ids already in use (like Temporal's WorkflowAlreadyStartedError) ----

    async def after_refusals(
        self, live: Live, refused: list[ChildFailed], now: datetime
    ) -> list[WorkflowEvent]:
        """Feed the refused children's ``ChildFailed`` (the error is thrown at their
        ``yield``) and return them with the decisions the code made next."""
        ex = live.executor
        extra: list[WorkflowEvent] = []
        while refused:
            ex.feed([(ex.version + i, event) for i, event in enumerate(refused, 1)])
            more = ex.decide(now)
            extra += refused
            refused = await create_decided(self.journal, live.state, more, live.meta, now)
            extra += more
        return extra
