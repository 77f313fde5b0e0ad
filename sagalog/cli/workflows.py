"""``sagalog start|signal|cancel|status|list``: the client from the command line.

Arguments and payloads are JSON when they parse as JSON (``42``, ``'{"a": 1}'``,
``'"text"'``) and plain strings otherwise. Every command prints a short
human summary, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sagalog.cli.common import add_db_options, add_json_option, print_json, print_table, run, to_jsonable
from sagalog.errors import DecodingError, InvalidArgumentError
from sagalog.storage import decode_value

if TYPE_CHECKING:
    from sagalog.engine.client import Client
    from sagalog.replay.saga import SagaState

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``start``, ``signal``, ``cancel``, the operator actions, ``status`` and ``list``."""
    start = _command(subparsers, "start", "start a workflow instance", _start)
    start.add_argument("workflow", help="the workflow's registered name")
    start.add_argument("args", nargs="*", metavar="ARG", help="arguments (JSON, or plain text)")
    start.add_argument("--id", help="instance id (default: a new UUID); starting an existing id is a no-op")
    start.add_argument("--session", metavar="SESSION_ID", help="bind the instance to this open session")
    start.add_argument("--wait", type=float, nargs="?", const=3600.0, metavar="SECONDS",
                       help="wait for the result (default: up to an hour)")

    signal = _command(subparsers, "signal", "send a signal to an instance", _signal)
    signal.add_argument("id", help="instance id")
    signal.add_argument("name", help="signal name")
    signal.add_argument("payload", nargs="?", default="null", help="payload (JSON, or plain text)")

    cancel = _command(subparsers, "cancel", "cancel an instance (it compensates)", _cancel)
    cancel.add_argument("id", help="instance id")
    cancel.add_argument("--reason", default="cancelled from the command line", help="recorded reason")

    for name, help in (
        ("retry-compensation", "run a compensation_failed instance's failed compensation again"),
        ("skip-compensation", "skip a compensation_failed instance's failed compensation (undone by hand)"),
        ("unpark", "let a parked instance run again, once what parked it is fixed"),
    ):
        operator = _command(subparsers, name, help, _operator)
        operator.add_argument("id", help="instance id")
        operator.add_argument("--actor", default=os.environ.get("USER", ""),
                              help="who acts, recorded in the journal (default: $USER)")

    status = _command(subparsers, "status", "show an instance's state from its journal", _status)
    status.add_argument("id", help="instance id")

    listing = _command(subparsers, "list", "list instances, most recently active first", _list)
    listing.add_argument("--status", help="only this status (running, completed, failed, ...)")
    listing.add_argument("--workflow", help="only this workflow name")
    listing.add_argument("--since", help="only active since: an ISO time or 30s, 10m, 2h, 1d ago")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default: %(default)s)")


def _command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    action: Callable[[Client, argparse.Namespace], Awaitable[int]],
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    add_db_options(parser)
    parser.add_argument(
        "-m", "--module", action="append", dest="modules", metavar="MODULE",
        default=[m for m in os.environ.get("SAGALOG_MODULES", "").split(",") if m],
        help="import this module first (repeatable; SAGALOG_MODULES, comma-separated)",
    )
    add_json_option(parser)
    parser.set_defaults(run=lambda args: _with_client(args, action))
    return parser


Action = Callable[["Client", argparse.Namespace], Awaitable[int]]


def _with_client(args: argparse.Namespace, action: Action) -> int:
    from sagalog.engine.client import Client

    async def main() -> int:
        client = await Client.connect(args.db, namespace=args.namespace, modules=args.modules)
        try:
            return await action(client, args)
        finally:
            await client.close()

    return run(main)


def parse_value(text: str) -> Any:
    """JSON when ``text`` parses as JSON, else ``text`` itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO time, or an age like ``10m`` (s, m, h, d) before ``now``."""
    now = now or datetime.now(UTC)
    relative = _RELATIVE.match(text.strip())
    if relative:
        return now - timedelta(seconds=float(relative[1]) * _UNITS[relative[2]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgumentError(
            f"--since {text!r} is neither an ISO time (2026-01-31T12:00) nor an age (30s, 10m, 2h, 1d)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def decoded(data: bytes | None) -> Any:
    """A msgpack result or payload as a plain value (shown raw when undecodable)."""
    if data is None:
        return None
    try:
        return decode_value(data)
    except DecodingError:
        return f"<{len(data)} undecodable bytes>"


async def _start(client: Client, args: argparse.Namespace) -> int:
    values = [parse_value(a) for a in args.args]
    instance_id = await client.start(args.workflow, *values, id=args.id, session_id=args.session)
    outcome: dict[str, Any] = {"id": instance_id, "workflow": args.workflow}
    if args.wait is not None:
        try:
            outcome["result"] = to_jsonable(await client.result(instance_id, args.wait))
        except TimeoutError:
            raise InvalidArgumentError(
                f"{instance_id} did not finish within {args.wait:g} s "
                "(is a worker running? see `sagalog worker --help`)"
            ) from None
        outcome["status"] = "completed"
    if args.json:
        print_json(outcome)
    else:
        print(f"started {args.workflow} as {instance_id}")
        if "result" in outcome:
            print(f"completed: {json.dumps(outcome['result'])}")
    return 0


async def _signal(client: Client, args: argparse.Namespace) -> int:
    await client.signal(args.id, args.name, parse_value(args.payload))
    if args.json:
        print_json({"id": args.id, "signal": args.name})
    else:
        print(f"sent signal {args.name!r} to {args.id}")
    return 0


async def _cancel(client: Client, args: argparse.Namespace) -> int:
    # Cancelling an ended instance records nothing: say so rather than promise a compensation.
    state = await client.describe(args.id)
    if state.terminal:
        if args.json:
            print_json({"id": args.id, "cancel_requested": None, "status": state.status})
        else:
            print(f"{args.id} had already ended ({state.status}); nothing changed")
        return 0
    await client.cancel(args.id, args.reason)
    if args.json:
        print_json({"id": args.id, "cancel_requested": args.reason})
    else:
        print(f"asked {args.id} to cancel ({args.reason}); it compensates what it did")
    return 0


async def _operator(client: Client, args: argparse.Namespace) -> int:
    actions = {
        "retry-compensation": client.retry_compensation,
        "skip-compensation": client.skip_compensation,
        "unpark": client.unpark,
    }
    state = await actions[args.command](args.id, args.actor)
    if args.json:
        print_json(state_summary(state))
    else:
        print(f"{args.command}: {args.id} is now {state.status} (version {state.version})")
    return 0


def state_summary(state: SagaState) -> dict[str, Any]:
    """The fields of a state worth showing, with results decoded."""
    return {
        "id": state.instance_id,
        "workflow": state.workflow,
        "status": state.status,
        "version": state.version,
        "steps": [
            {"seq": s.seq, "name": s.name, "kind": s.kind, "status": s.status, "attempts": s.attempts,
             "result": decoded(s.result), "error": f"{s.error_type}: {s.message}" if s.error_type else ""}
            for s in sorted(state.steps.values(), key=lambda s: s.seq)
        ],
        "waiting_for": sorted(set(state.waits.values())),
        "timers": sorted(t.isoformat() for t in state.timers.values()),
        "result": decoded(state.result),
        "error": f"{state.error_type}: {state.message}" if state.error_type else "",
        "parked_reason": state.parked_reason,
        "cancel_requested": state.cancel_requested,
    }


async def _status(client: Client, args: argparse.Namespace) -> int:
    summary = state_summary(await client.describe(args.id))
    if args.json:
        print_json(summary)
        return 0
    print(f"{summary['id']}: {summary['workflow']} is {summary['status']} (version {summary['version']})")
    if summary["steps"]:
        rows = [[str(s["seq"]), s["name"], s["kind"], s["status"], str(s["attempts"]),
                 s["error"] or json.dumps(to_jsonable(s["result"]))] for s in summary["steps"]]
        print_table(rows, ["#", "STEP", "KIND", "STATUS", "ATTEMPTS", "RESULT / ERROR"])
    for label in ("waiting_for", "timers"):
        if summary[label]:
            print(f"{label.replace('_', ' ')}: {', '.join(summary[label])}")
    if summary["status"] == "completed":
        print(f"result: {json.dumps(to_jsonable(summary['result']))}")
    for label in ("error", "parked_reason", "cancel_requested"):
        if summary[label]:
            print(f"{label.replace('_', ' ')}: {summary[label]}")
    return 0


async def _list(client: Client, args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    states = await client.list(status=args.status, workflow=args.workflow, since=since, limit=args.limit)
    if args.json:
        print_json([{"id": s.instance_id, "workflow": s.workflow, "status": s.status,
                     "version": s.version} for s in states])
        return 0
    if not states:
        print("no instances")
        return 0
    print_table([[s.instance_id, s.workflow, s.status, str(s.version)] for s in states],
                ["ID", "WORKFLOW", "STATUS", "EVENTS"])
    return 0
