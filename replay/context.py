"""The ``ctx`` workflow code receives: its identity, recorded values, patches, its session.

Recorded values (``ctx.now()``, ``ctx.uuid()``, ``ctx.random()``) are
commands to yield; patches and the session read and record through the
:class:`~sagalog.replay.executor.Executor` that runs the instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sagalog.replay.commands import Now, Random, Uuid
from sagalog.replay.sessions import SessionCommands  # issue 5: ctx.session

from sagalog.errors import WorkflowError

if TYPE_CHECKING:
    from sagalog.replay.executor import Executor


class WorkflowContext:
    """The ``ctx`` a workflow receives: recorded time and randomness, patches, its identity."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    @property
    def instance_id(self) -> str:
        """This instance's id."""
        return self._executor.instance_id

    @property
    def workflow(self) -> str:
        """This workflow's name."""
        return self._executor.workflow

    def now(self) -> Now:
        """A command: ``t = yield ctx.now()`` gives the current time, recorded for replay."""
        return Now()

    def uuid(self) -> Uuid:
        """A command: ``u = yield ctx.uuid()`` gives a random UUID string, recorded."""
        return Uuid()

    def random(self) -> Random:
        """A command: ``x = yield ctx.random()`` gives a float in [0, 1), recorded."""
        return Random()

    # -- sessions (issue 5) ----------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The session this instance was started in (None when none)."""
        return self._executor.session_id

    @property
    def session(self) -> SessionCommands:
        """Commands on this instance's session: ``state = yield ctx.session.set("k", v)``.

        Raises:
            WorkflowError: the instance was not started in a session.
        """
        if self._executor.session_id is None:
            raise WorkflowError(
                f"workflow {self.workflow!r} (instance {self.instance_id!r}) was not started in "
                "a session: start it with session_id=... to use ctx.session"
            )
        return SessionCommands(self._executor.session_id)

    def patched(self, change_id: str) -> bool:
        """True where the instance runs the new code of change ``change_id``.

        Instances that reached this point before the change was deployed
        replay with False (their history has no marker here); all others get
        True and a marker is journaled. Not a command: call it without yield.
        """
        return self._executor.patched(change_id)

    def deprecate_patch(self, change_id: str) -> None:
        """Mark ``change_id`` as no longer branching (the old code path is gone).

        Histories that hold the patch marker replay through this call; new
        runs record nothing. Remove the call once no instance with the marker
        is left.
        """
        self._executor.deprecate_patch(change_id)
