"""Helpers of the console tests: a real stack (a journal, a worker running the
test workflows, the console served over HTTP on a free port) and a client.

``Http`` is a tiny HTTP/1.1 client on h11 and anyio (no new test dependency):
it keeps one connection open, as a browser does.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import h11
from console_workflows import REGISTRY
from sagalog.engine.client import Client
from sagalog.engine.console import serve_console
from sagalog.engine.runner import Runner
from sagalog.engine.worker import Worker
from sagalog.engine.worker_process import RunnerHandler
from sagalog.engine.worker_settings import WorkerSettings
from sagalog.storage import Journal, connect

from sagalog.errors import WorkflowError


@dataclass
class Reply:
    """A response as the tests look at it."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> tuple[str, str]:
        """(code, message) of an error response."""
        error = self.json["error"]
        return error["code"], error["message"]


class Http:
    """One keep-alive connection to the console."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token
        self._stream: anyio.abc.SocketStream | None = None
        self._conn = h11.Connection(h11.CLIENT)
        self.connections = 0

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Reply:
        """Send one request and read the whole response."""
        if self._stream is None or self._conn.our_state is not h11.IDLE:
            await self.close()
            self._stream = await anyio.connect_tcp("127.0.0.1", self.port)
            self._conn = h11.Connection(h11.CLIENT)
            self.connections += 1
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        head = [("Host", "localhost"), ("Content-Length", str(len(data))), *(headers or [])]
        token = token if token is not None else self.token
        if token:
            head.append(("Authorization", f"Bearer {token}"))
        stream, conn = self._stream, self._conn
        out = conn.send(h11.Request(method=method, target=path, headers=head)) or b""
        out += conn.send(h11.Data(data=data)) if data else b""
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send(out)
        response: h11.Response | None = None
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await stream.receive())
                except anyio.EndOfStream:
                    conn.receive_data(b"")
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        assert response is not None
        reply = Reply(
            response.status_code,
            {k.decode().lower(): v.decode() for k, v in response.headers},
            b"".join(chunks),
        )
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.close()
        return reply

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", path, body, **kw)


@dataclass
class Stack:
    """A journal, a worker on it, a client and the console's port."""

    journal: Journal
    client: Client
    worker: Worker
    port: int
    http: Http

    async def settle(self, instance_id: str, *statuses: str) -> str:
        """Wait (bounded) until the instance reaches one of ``statuses``; returns it."""
        with anyio.fail_after(30):
            while True:
                state = await self.client.describe(instance_id)
                # "running" counts once it waits for a signal (nothing more to do alone).
                if state.status in statuses and (state.status != "running" or state.waits):
                    return state.status
                with contextlib.suppress(WorkflowError, TimeoutError):
                    await self.client.result(instance_id, 0.2)

    async def events(self, instance_id: str) -> list[tuple[str, dict[str, str]]]:
        """(type, metadata) of every event of an instance."""
        return [(e.type, e.metadata) for e in await self.journal.read_stream(f"wf-{instance_id}")]


@contextlib.asynccontextmanager
async def running_stack(url: str, tokens: list[str] | None = None) -> AsyncIterator[Stack]:
    """The journal at ``url`` with a worker and the console on a free port."""
    journal = await connect(url)
    try:
        runner = Runner(journal, REGISTRY, worker_id="test-worker")
        settings = WorkerSettings(worker_id="test-worker", poll_seconds=0.05, lease_seconds=5.0)
        worker = Worker(journal, RunnerHandler(runner, runner.sessions), settings, registry=REGISTRY)
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            port = await tg.start(
                lambda task_status: serve_console(
                    journal, port=0, tokens=tokens or [], registry=REGISTRY, task_status=task_status
                )
            )
            http = Http(port)
            try:
                yield Stack(journal, Client(journal, REGISTRY), worker, port, http)
            finally:
                await http.close()
                worker.shutdown()
                tg.cancel_scope.cancel()
    finally:
        await journal.close()
