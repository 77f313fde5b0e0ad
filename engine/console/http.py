"""A small HTTP/1.1 server on anyio and h11, for the operator's console.

Why not a framework: the console is a dozen JSON routes and three static
files, and the engine must stay a library that a worker embeds. h11 does the
protocol (parsing, keep-alive, chunked bodies) without doing any I/O; this
module feeds it bytes from an anyio socket. Every connection is one task in
the server's task group (``Listener.serve``), so cancelling the server's
scope closes every connection with it: nothing is left running.

Limits keep a misbehaving client from holding memory or tasks: the request
body (``max_body``), the header block (h11's own limit), the time to send a
request once started, and how long an idle keep-alive connection is kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import anyio.abc
import h11

log = logging.getLogger("sagalog.console")

MAX_RECV = 65536
_LINGER_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BODY = 1024 * 1024
"""Largest request body accepted (1 MiB); larger ones get 413."""

REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    409: b"Conflict",
    413: b"Content Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


@dataclass(frozen=True)
class Request:
    """One HTTP request, read whole (bodies are small and limited)."""

    method: str
    """``GET``, ``POST``, ..."""
    path: str
    """The decoded path, without the query string."""
    query: dict[str, list[str]]
    """Query parameters; a name given twice has two values."""
    headers: dict[str, str]
    """Header values by lower-case name (repeated headers joined with ``, ``)."""
    body: bytes = b""
    """The request body."""
    remote: str = ""
    """The client's address (IP without the port)."""

    def header(self, name: str) -> str:
        """A header's value, or ``""`` when absent."""
        return self.headers.get(name.lower(), "")


@dataclass(frozen=True)
class Response:
    """What a handler answers."""

    status: int
    """The HTTP status code."""
    body: bytes = b""
    """The whole body."""
    content_type: str = "application/json; charset=utf-8"
    """Its media type."""
    headers: tuple[tuple[str, str], ...] = field(default=())
    """Extra headers."""


Handler = Callable[[Request], Awaitable[Response]]
"""Answers one request; an exception it raises becomes a 500 (and is logged)."""


def json_response(status: int, value: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """A JSON response (UTF-8, not ASCII-escaped)."""
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(status, body, headers=(("Cache-Control", "no-store"), *headers))


def error_response(
    status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """The error shape of every failed request: ``{"error": {"code", "message"}}``."""
    return json_response(status, {"error": {"code": code, "message": message}}, headers)


class HttpServer:
    """Serves ``handler`` over HTTP/1.1 with keep-alive.

    Args:
        handler: answers each request.
        max_body: the largest request body accepted, in bytes.
        idle_timeout: seconds an idle keep-alive connection is kept open.
        request_timeout: seconds a client has to send a request once it began.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        idle_timeout: float = 60.0,
        request_timeout: float = 30.0,
    ) -> None:
        self.handler = handler
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (port 0: any free one) until cancelled.

        ``task_status.started`` receives the bound port.
        """
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        async with listener:
            bound = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(bound)
            # Listener.serve runs one task per connection in its own task group,
            # which this task owns: cancelling serve() closes them all.
            await listener.serve(self.connection)

    async def connection(self, stream: anyio.abc.SocketStream) -> None:
        """Answer the requests of one connection until either side closes it."""
        remote = _remote(stream)
        conn = h11.Connection(h11.SERVER)
        async with stream:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
                while True:
                    response, keep = await self._one(conn, stream, remote)
                    if response is None:
                        return
                    await self._send(conn, stream, response)
                    if conn.their_state is not h11.DONE and conn.their_state is not h11.CLOSED:
                        await _linger(stream)
                        return
                    if not keep or conn.our_state is not h11.DONE:
                        return
                    conn.start_next_cycle()

    async def _one(
        self, conn: h11.Connection, stream: anyio.abc.SocketStream, remote: str
    ) -> tuple[Response | None, bool]:
        """Read one request and answer it; (None, False) when the client went away."""
        try:
            with anyio.move_on_after(self.idle_timeout) as idle:
                event = await _next(conn, stream)
            if idle.cancelled_caught or isinstance(event, h11.ConnectionClosed):
                return None, False
            assert isinstance(event, h11.Request)
            head = _head(event, remote)
            declared = head.header("content-length")
            if declared.isdigit() and int(declared) > self.max_body:
                return self._too_large(), False  # not read: the connection closes after the answer
            if conn.they_are_waiting_for_100_continue:  # curl does for bodies over 1 KiB
                await stream.send(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            with anyio.move_on_after(self.request_timeout) as slow:
                body = await self._body(conn, stream)
            if slow.cancelled_caught:
                return None, False
            if body is None:
                return self._too_large(), False
        except h11.RemoteProtocolError as exc:
            if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                return None, False
            status = exc.error_status_hint
            return error_response(status, "bad_request", f"malformed HTTP request: {exc}"), False
        request = Request(head.method, head.path, head.query, head.headers, body, remote)
        return await self._answer(request), True

    async def _body(self, conn: h11.Connection, stream: anyio.abc.SocketStream) -> bytes | None:
        """The request body, or None once it grows past ``max_body``."""
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await _next(conn, stream)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_body:
                    return None
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in a request body")

    def _too_large(self) -> Response:
        return error_response(413, "body_too_large", f"the request body is larger than {self.max_body} bytes")

    async def _answer(self, request: Request) -> Response:
        try:
            response = await self.handler(request)
        except Exception:
            log.exception("console: %s %s failed", request.method, request.path)
            return error_response(500, "internal_error", "the server failed to answer; see its log")
        log.debug("console: %s %s -> %d", request.method, request.path, response.status)
        return response

    async def _send(self, conn: h11.Connection, stream: anyio.abc.SocketStream, response: Response) -> None:
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *response.headers,
        ]
        if conn.their_state is not h11.DONE:
            headers.append(("Connection", "close"))  # the rest of the request was not read
        reason = REASONS.get(response.status, b"")
        out = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        out = (out or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send(out)


class _Head:
    """The parsed request line and headers."""

    def __init__(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


def _head(event: h11.Request, remote: str) -> _Head:
    target = event.target.decode("latin-1")
    parts = urlsplit(target)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    query = parse_qs(parts.query, keep_blank_values=True)
    return _Head(event.method.decode("ascii"), unquote(parts.path), query, headers)


async def _next(conn: h11.Connection, stream: anyio.abc.SocketStream) -> Any:
    """The next h11 event, reading from the socket as needed."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive(MAX_RECV)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            data = b""
        conn.receive_data(data)


async def _linger(stream: anyio.abc.SocketStream) -> None:
    """Close after an answer sent before the request's body was read (413).

    Closing a socket with unread data makes the kernel send a reset, which
    can destroy the answer before the client reads it. So: stop sending,
    then read and drop what the client still sends, for a bounded time and
    amount, until it closes its side.
    """
    with contextlib.suppress(
        anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError
    ):
        await stream.send_eof()
        with anyio.move_on_after(2.0):
            dropped = 0
            while dropped < _LINGER_BYTES:
                dropped += len(await stream.receive(MAX_RECV))


def _remote(stream: anyio.abc.SocketStream) -> str:
    try:
        address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except (anyio.TypedAttributeLookupError, OSError):
        return ""
    return str(address[0]) if isinstance(address, tuple) else str(address)
