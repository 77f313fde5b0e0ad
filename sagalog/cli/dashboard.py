"""``sagalog dashboard``: serve the operator's console (JSON API and web page) until stopped."""

from __future__ import annotations

import argparse
import os
import signal

from sagalog.cli.common import add_db_options, open_from_args, run
from sagalog.errors import ConfigurationError

DESCRIPTION = """\
Serve the operator's console: a web page and a JSON API to list and filter
instances and sessions, follow an instance's timeline, look at its state at
any version, and cancel, signal, retry or skip a failed compensation. Every
action is recorded in the journal with the actor and the caller's address.

Tokens are NAME=SECRET (NAME is the actor recorded) or a bare SECRET (actor
"operator"); with any token configured, every /api request needs
'Authorization: Bearer SECRET'. Listening beyond loopback with no token makes
one up and prints it once. Stop with SIGTERM or Ctrl-C.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dashboard`` command."""
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the operator's console (web page and JSON API)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_options(parser)
    env = os.environ.get
    parser.add_argument(
        "--host",
        default=env("SAGALOG_DASHBOARD_HOST", "127.0.0.1"),
        help="address to listen on (env SAGALOG_DASHBOARD_HOST; default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port to listen on, 0 for any free one (env SAGALOG_DASHBOARD_PORT; default: 8787)",
    )
    parser.add_argument(
        "--token",
        action="append",
        dest="tokens",
        metavar="TOKEN",
        default=None,
        help="NAME=SECRET or SECRET; repeatable (env SAGALOG_DASHBOARD_TOKEN, comma-separated)",
    )
    parser.add_argument(
        "-m",
        "--module",
        action="append",
        dest="modules",
        metavar="MODULE",
        default=[m for m in env("SAGALOG_MODULES", "").split(",") if m],
        help="import this module first, so parked instances can be retried "
        "(repeatable; SAGALOG_MODULES, comma-separated)",
    )
    parser.set_defaults(run=_run)


def _port(args: argparse.Namespace) -> int:
    from sagalog.engine.console import DEFAULT_PORT

    if args.port is not None:
        port: int = args.port
    else:
        raw = os.environ.get("SAGALOG_DASHBOARD_PORT", "").strip()
        try:
            port = int(raw) if raw else DEFAULT_PORT
        except ValueError:
            raise ConfigurationError(f"SAGALOG_DASHBOARD_PORT={raw!r} is not a valid int") from None
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"dashboard port must be between 0 and 65535, not {port}")
    return port


def _run(args: argparse.Namespace) -> int:
    import anyio

    from sagalog.engine.console import resolve_tokens, serve_console
    from sagalog.engine.workflow import load_modules

    port = _port(args)
    tokens = args.tokens
    if tokens is None:
        tokens = [t for t in os.environ.get("SAGALOG_DASHBOARD_TOKEN", "").split(",") if t.strip()]
    resolve_tokens("127.0.0.1", tokens)  # refuse malformed tokens before connecting
    registry = load_modules(list(args.modules)) if args.modules else None

    async def main() -> int:
        journal = await open_from_args(args)
        try:
            async with anyio.create_task_group() as tg:
                try:
                    bound = await tg.start(
                        lambda task_status: serve_console(
                            journal,
                            host=args.host,
                            port=port,
                            tokens=tokens,
                            registry=registry,
                            task_status=task_status,
                        )
                    )
                except OSError as exc:
                    raise ConfigurationError(
                        f"cannot listen on {args.host}:{port}: {exc.strerror or exc}"
                    ) from None
                shown = f"[{args.host}]" if ":" in args.host else args.host
                print(
                    f"sagalog dashboard on http://{shown}:{bound}/ (namespace {journal.namespace})",
                    flush=True,
                )
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        break
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await journal.close()
        return 0

    return run(main)
