"""The client: start, signal, cancel and inspect workflow instances from any process.

A :class:`Client` writes and reads the journal; it never runs a step (that
is the workers' job). Starting, signalling and cancelling are appends that
put the instance in the work index, where a worker claims it. Reading is a
fold of the instance's stream (snapshot + tail), so ``describe`` is always
what the journal says, never a cached copy.

:class:`SyncClient` is the same for code without an event loop: it runs the
async client in an anyio blocking portal (one event-loop thread owned by the
client and closed with it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, get_args

import anyio.from_thread
from sagalog.engine.runner import Runner
from sagalog.engine.workflow import Registry, load_modules
from sagalog.replay.folding import load_state
from sagalog.replay.saga import SagaFold, SagaState, Status
from sagalog.storage import DEFAULT_NAMESPACE, Journal, StreamFilter, check_stream_id, connect

from sagalog.errors import InvalidArgumentError

T = TypeVar("T")

STATUSES: tuple[str, ...] = tuple(s for s in get_args(Status) if s != "absent")
"""The statuses ``list(status=...)`` accepts."""

WORKFLOW_PREFIX = "wf-"


class Client:
    """Start and inspect workflow instances in one namespace of a journal.

    Args:
        journal: where the instances live.
        registry: the workflows this process knows, to check names and
            arguments when starting (``None``: the default registry).
    """

    def __init__(self, journal: Journal, registry: Registry | None = None) -> None:
        self.journal = journal
        self._runner = Runner(journal, registry, clock=journal.clock, worker_id="client")
        self._fold = SagaFold()
        self._owns_journal = False

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        modules: Sequence[str] = (),
    ) -> Client:
        """Open the journal at ``url`` (default: ``SAGALOG_DB`` or the SQLite file).

        Args:
            modules: modules to import first, so their workflows can be started by name.
        """
        registry = load_modules(list(modules)) if modules else None
        journal = await connect(url, namespace=namespace)
        client = cls(journal, registry)
        client._owns_journal = True
        return client

    async def close(self) -> None:
        """Close the journal if this client opened it."""
        if self._owns_journal:
            await self.journal.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writing ---------------------------------------------------------

    async def start(
        self, workflow: Any, *args: Any, id: str | None = None, session_id: str | None = None
    ) -> str:
        """Start ``workflow`` (a ``@workflow`` or its name) with ``args``; returns its id.

        Idempotent by ``id``: starting an id that exists returns it unchanged.
        ``session_id`` binds the instance to an open session (``ctx.session``).

        Raises:
            UnknownWorkflowError: no workflow of that name is registered here.
            EncodingError: an argument cannot be encoded (names the argument).
            InvalidCommandError: the arguments do not fit the workflow's parameters.
            WorkflowError: the workflow needs a session and none was given.
            SessionNotFoundError, SessionClosedError, SessionExpiredError:
                ``session_id`` names no open session.
        """
        return await self._runner.start(workflow, *args, id=id, session_id=session_id)

    async def execute(
        self,
        workflow: Any,
        *args: Any,
        id: str | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """:meth:`start` ``workflow`` and wait for its :meth:`result`, one read fewer than the two.

        Raises:
            what :meth:`start` and :meth:`result` raise; on ``TimeoutError``
            the instance goes on (its id is in the message).
        """
        return await self._runner.execute(workflow, *args, id=id, session_id=session_id, timeout=timeout)

    async def signal(
        self, id: str, name: str, payload: Any = None, *, metadata: Mapping[str, str] | None = None
    ) -> None:
        """Deliver signal ``name`` with ``payload`` to instance ``id``.

        ``metadata`` is recorded with the event (audit: ``actor``, ``remote``).

        Raises:
            NotFoundError: there is no such instance.
        """
        await self._runner.signal(id, name, payload, metadata=metadata)

    async def cancel(
        self, id: str, reason: str = "cancelled by a client", *, metadata: Mapping[str, str] | None = None
    ) -> None:
        """Ask instance ``id`` to cancel (it compensates what it did); a no-op once it ended.

        ``metadata`` is recorded with the event (audit: ``actor``, ``remote``).
        """
        await self._runner.cancel(id, reason, metadata=metadata)

    # -- operator actions ------------------------------------------------

    async def retry_compensation(
        self, id: str, actor: str = "", *, metadata: Mapping[str, str] | None = None
    ) -> SagaState:
        """Run the failed compensation of a ``compensation_failed`` instance again.

        A worker picks the instance up at once; ``actor`` is recorded in the journal.

        Raises:
            WorkflowError: the instance is not waiting for an operator.
        """
        return await self._runner.retry_compensation(checked_id(id), actor, metadata=metadata)

    async def skip_compensation(
        self, id: str, actor: str = "", *, metadata: Mapping[str, str] | None = None
    ) -> SagaState:
        """Give up on the failed compensation (handled by hand) and go on with the next one.

        Raises:
            WorkflowError: the instance is not waiting for an operator.
        """
        return await self._runner.skip_compensation(checked_id(id), actor, metadata=metadata)

    async def unpark(
        self, id: str, actor: str = "", *, metadata: Mapping[str, str] | None = None
    ) -> SagaState:
        """Let a parked instance run again once what parked it is fixed (deployed code, data).

        Raises:
            WorkflowError: the instance is not parked.
            NonDeterminismError, UnknownWorkflowError, DecodingError: it still cannot run.
        """
        return await self._runner.unpark(checked_id(id), actor, metadata=metadata)

    # -- reading ---------------------------------------------------------

    async def result(self, id: str, timeout: float | None = None) -> Any:
        """Wait for instance ``id`` to end and return its result.

        Raises:
            WorkflowFailedError, WorkflowCancelledError: it did not complete.
            TimeoutError: ``timeout`` seconds passed first.
        """
        return await self._runner.result(id, timeout)

    async def describe(self, id: str) -> SagaState:
        """The instance's state folded from its journal.

        Raises:
            NotFoundError: there is no such instance.
        """
        return await self._runner.describe(id)

    async def list(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[SagaState]:
        """Instances, most recently active first, filtered by status, workflow and activity.

        Args:
            status: only instances in this status (see :data:`STATUSES`).
            workflow: only instances of this workflow name.
            since: only instances with events at or after this time.
            limit: at most this many.
        """
        if status is not None and status not in STATUSES:
            raise InvalidArgumentError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
        if limit < 1:
            raise InvalidArgumentError(f"limit must be at least 1, not {limit}")
        found: list[SagaState] = []
        offset, page = 0, max(limit, 100)
        while len(found) < limit:
            streams = await self.journal.list_streams(
                StreamFilter(prefix=WORKFLOW_PREFIX, since=since, limit=page, offset=offset)
            )
            for info in streams:
                state, _ = await load_state(self.journal, info.stream_id, self._fold)
                if (status is None or state.status == status) and (
                    workflow is None or state.workflow == workflow
                ):
                    found.append(state)
                    if len(found) == limit:
                        break
            if len(streams) < page:
                break
            offset += page
        return found


def checked_id(id: str) -> str:
    """Refuse an instance id that could not name a stream."""
    check_stream_id(WORKFLOW_PREFIX + id)
    return id


class SyncClient(AbstractContextManager["SyncClient"]):
    """The :class:`Client` for synchronous code; close it (or use ``with``) when done."""

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        modules: Sequence[str] = (),
    ) -> None:
        self._portal_cm = anyio.from_thread.start_blocking_portal("asyncio")
        self._portal = self._portal_cm.__enter__()
        try:
            self._client = self._portal.call(
                functools.partial(Client.connect, url, namespace=namespace, modules=modules)
            )
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    def _call(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kw: Any) -> T:
        async def invoke() -> T:
            return await func(*args, **kw)

        return self._portal.call(invoke)

    def start(self, workflow: Any, *args: Any, id: str | None = None, session_id: str | None = None) -> str:
        """See :meth:`Client.start`."""
        return self._call(self._client.start, workflow, *args, id=id, session_id=session_id)

    def execute(
        self,
        workflow: Any,
        *args: Any,
        id: str | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """See :meth:`Client.execute`."""
        return self._call(
            self._client.execute, workflow, *args, id=id, session_id=session_id, timeout=timeout
        )

    def signal(self, id: str, name: str, payload: Any = None) -> None:
        """See :meth:`Client.signal`."""
        self._call(self._client.signal, id, name, payload)

    def cancel(self, id: str, reason: str = "cancelled by a client") -> None:
        """See :meth:`Client.cancel`."""
        self._call(self._client.cancel, id, reason)

    def retry_compensation(self, id: str, actor: str = "") -> SagaState:
        """See :meth:`Client.retry_compensation`."""
        return self._call(self._client.retry_compensation, id, actor)

    def skip_compensation(self, id: str, actor: str = "") -> SagaState:
        """See :meth:`Client.skip_compensation`."""
        return self._call(self._client.skip_compensation, id, actor)

    def unpark(self, id: str, actor: str = "") -> SagaState:
        """See :meth:`Client.unpark`."""
        return self._call(self._client.unpark, id, actor)

    def result(self, id: str, timeout: float | None = None) -> Any:
        """See :meth:`Client.result`."""
        return self._call(self._client.result, id, timeout)

    def describe(self, id: str) -> SagaState:
        """See :meth:`Client.describe`."""
        return self._call(self._client.describe, id)

    def list(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[SagaState]:
        """See :meth:`Client.list`."""
        return self._call(self._client.list, status=status, workflow=workflow, since=since, limit=limit)

    def close(self) -> None:
        """Close the journal and stop the portal's event loop."""
        try:
            self._portal.call(self._client.close)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
