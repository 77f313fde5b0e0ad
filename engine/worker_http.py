"""The worker's small HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

An anyio TCP listener inside the worker's task group rather than
prometheus_client's ``start_http_server``, which would start a thread the
worker cannot cancel. Each connection answers one GET and closes.

* ``/metrics``: Prometheus text of the worker's registry.
* ``/healthz``: liveness. It is answered by the worker's own event loop, so
  an answer at all means the loop is not stuck; 200 ``{"status": "ok"}``.
* ``/readyz``: readiness. 200 when a real query reaches the database and its
  schema is current; 503 with the reason otherwise (or while draining).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import msgspec
from anyio.abc import SocketStream, TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST

Readiness = Callable[[], Awaitable[str]]
"""Returns "" when ready, else why not (one line for an operator)."""

_JSON = b"application/json"
_MAX_REQUEST = 8192


class StatusServer:
    """Serves the worker's metrics and health on one port."""

    def __init__(self, exposition: Callable[[], bytes], readiness: Readiness, owner: str) -> None:
        self._exposition = exposition
        self._readiness = readiness
        self._owner = owner

    async def serve(
        self, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on ``port`` (0: any free port) until cancelled; ``task_status`` gets the bound port."""
        listener = await anyio.create_tcp_listener(local_port=port, reuse_port=False)
        async with listener:
            bound = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(bound)
            await listener.serve(self._answer)

    async def respond(self, path: bytes) -> tuple[bytes, bytes, bytes]:
        """(status line, content type, body) for a GET of ``path``."""
        match path.split(b"?")[0]:
            case b"/" | b"/metrics":
                return b"200 OK", CONTENT_TYPE_LATEST.encode(), self._exposition()
            case b"/healthz":
                return b"200 OK", _JSON, self._json({"status": "ok", "worker": self._owner})
            case b"/readyz":
                reason = await self._readiness()
                if reason:
                    body = self._json({"status": "unavailable", "worker": self._owner, "reason": reason})
                    return b"503 Service Unavailable", _JSON, body
                return b"200 OK", _JSON, self._json({"status": "ready", "worker": self._owner})
            case _:
                body = self._json({"error": "not found: try /metrics, /healthz or /readyz"})
                return b"404 Not Found", _JSON, body

    @staticmethod
    def _json(value: dict[str, str]) -> bytes:
        return msgspec.json.encode(value) + b"\n"

    async def _answer(self, stream: SocketStream) -> None:
        async with stream:
            request = b""
            with anyio.move_on_after(5):
                while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                    try:
                        request += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            status, kind, body = await self.respond(path)
            head = (
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
            )  # fmt: skip
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(head + body)
