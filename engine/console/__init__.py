"""The operator's console: a JSON API and a web page over the journal.

``sagalog dashboard`` and a worker started with ``--dashboard-port`` serve it
with :func:`serve_console`. :mod:`.http` is the HTTP/1.1 server (anyio + h11),
:mod:`.api` the routes, :mod:`.views` the pure state-to-JSON functions,
:mod:`.auth` the bearer tokens; ``static/`` holds the page (no build step).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

import anyio
import anyio.abc
from sagalog.engine.console.api import Console, MetricsSource, WorkersSource
from sagalog.engine.console.auth import Tokens, is_loopback, resolve_tokens
from sagalog.engine.console.http import HttpServer, Request, Response
from sagalog.engine.workflow import Registry
from sagalog.storage import Journal

log = logging.getLogger("sagalog.console")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787


async def serve_console(
    journal: Journal,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    tokens: Iterable[str] = (),
    registry: Registry | None = None,
    metrics: MetricsSource | None = None,
    workers: WorkersSource | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the console on ``host:port`` until cancelled; ``task_status`` gets the bound port.

    With no token and a host beyond loopback, a token is generated and printed
    once on stderr (the console then requires it).

    Raises:
        ConfigurationError: a malformed token.
        OSError: the address cannot be bound (in use, not local).
    """
    resolved, generated = resolve_tokens(host, tokens)
    console = Console(journal, tokens=resolved, registry=registry, metrics=metrics, workers=workers)
    server = HttpServer(console)
    async with anyio.create_task_group() as tg:
        bound = await tg.start(server.serve, host, port)
        shown = f"[{host}]" if ":" in host else host
        log.info("console on http://%s:%d/ (namespace %s)", shown, bound, journal.namespace)
        if generated is not None:
            print(
                f"sagalog console: listening on {host} beyond loopback with no token configured; "
                f"use this token (actor 'operator'): {generated}",
                file=sys.stderr,
                flush=True,
            )
        task_status.started(bound)


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Console",
    "HttpServer",
    "Request",
    "Response",
    "Tokens",
    "is_loopback",
    "resolve_tokens",
    "serve_console",
]
