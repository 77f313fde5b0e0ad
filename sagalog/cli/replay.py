"""``sagalog replay``: inspect, time-travel, verify, export and import journals.

Every command here is a thin layer over :mod:`sagalog.replay` (the library
functions the tests also call): it parses options, opens the journal, calls
one function and prints.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from sagalog.cli.common import (
    add_db_options,
    add_json_option,
    open_from_args,
    print_json,
    print_table,
    run,
    to_jsonable,
)
from sagalog.clock import SYSTEM_CLOCK
from sagalog.engine.workflow import Registry, load_modules
from sagalog.errors import ReplayToolError
from sagalog.replay.executor import WorkflowFunction, default_decode
from sagalog.replay.inspect import ListQuery, list_instances, print_tail, print_timeline
from sagalog.replay.redact import DEFAULT_MASKED_FIELDS, Redactor
from sagalog.replay.timetravel import resolve_stream, state_at, state_diff
from sagalog.replay.transfer import export_histories, import_file
from sagalog.replay.verify import ProgressBar, format_report, verify_file, verify_journal
from sagalog.storage import Journal

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str) -> datetime:
    """An ISO time (UTC unless it says otherwise) or a relative one: ``30m``, ``2h``, ``7d`` ago."""
    match = _RELATIVE.match(text.strip())
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return SYSTEM_CLOCK.now() - timedelta(seconds=seconds)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use an ISO time (2026-01-31T12:00) or an age (30m, 2h, 7d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: must be 0 or more")
    return value


def _redactor(args: argparse.Namespace) -> Redactor:
    if args.mask is not None:
        return Redactor(args.mask.split(","), enabled=not args.unmasked)
    return Redactor.from_env(enabled=not args.unmasked)


def _add_redaction(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--unmasked", action="store_true", help="show sensitive fields instead of masking them"
    )
    parser.add_argument(
        "--mask",
        metavar="FIELDS",
        default=None,
        help="comma-separated field names to mask (env SAGALOG_MASK_FIELDS; default: "
        f"{','.join(DEFAULT_MASKED_FIELDS)})",
    )


def _with_journal(body: Callable[[Journal, argparse.Namespace], Awaitable[int]]) -> Callable[..., int]:
    """A command entry point that opens the journal, runs ``body`` and closes it."""

    def entry(args: argparse.Namespace) -> int:
        async def main() -> int:
            journal = await open_from_args(args)
            try:
                return await body(journal, args)
            finally:
                await journal.close()

        return run(main)

    return entry


# --- the commands ----------------------------------------------------------


async def _list(journal: Journal, args: argparse.Namespace) -> int:
    query = ListQuery(
        kind=args.kind,
        workflow=args.workflow,
        status=args.status,
        contains=args.contains,
        since=args.since,
        until=args.until,
        limit=args.limit,
        offset=args.offset,
    )
    found = await list_instances(journal, query)
    if args.json:
        print_json(found)
        return 0
    rows = [
        [
            s.stream_id,
            s.kind,
            s.workflow or "",
            s.status or "",
            str(s.version),
            s.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            s.last_type,
        ]
        for s in found
    ]
    print_table(rows, ["ID", "KIND", "WORKFLOW", "STATUS", "EVENTS", "LAST ACTIVITY (UTC)", "LAST EVENT"])
    if len(found) == args.limit:
        print(f"(more may follow: --offset {args.offset + args.limit})")
    return 0


async def _show(journal: Journal, args: argparse.Namespace) -> int:
    await print_timeline(journal, args.id, redactor=_redactor(args), full=args.full, as_json=args.json)
    return 0


async def _state(journal: Journal, args: argparse.Namespace) -> int:
    redactor = _redactor(args)
    if args.diff is not None:
        diff = await state_diff(journal, args.id, args.diff[0], args.diff[1], redactor=redactor)
        if args.json:
            print_json(diff)
            return 0
        print(f"{diff.stream_id}: state from version {diff.from_version} to {diff.to_version}")
        if not diff.changes:
            print("  (no change)")
        for change in diff.changes:
            match change.op:
                case "added":
                    print(f"  + {change.path}: {_short(change.after)}")
                case "removed":
                    print(f"  - {change.path}: {_short(change.before)}")
                case _:
                    print(f"  ~ {change.path}: {_short(change.before)} -> {_short(change.after)}")
        return 0
    view = await state_at(journal, args.id, args.at, redactor=redactor)
    if args.json:
        print_json(view)
        return 0
    print(f"{view.stream_id} at version {view.version} of {view.of}")
    _print_tree(view.state, "  ")
    return 0


def _short(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


def _print_tree(value: Any, indent: str) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                print(f"{indent}{key}:")
                _print_tree(item, indent + "  ")
            else:
                print(f"{indent}{key}: {_short(item)}")
    elif isinstance(value, list) and value:
        for item in value:
            if isinstance(item, dict) and item:
                print(f"{indent}-")
                _print_tree(item, indent + "  ")
            else:
                print(f"{indent}- {_short(item)}")
    else:
        print(f"{indent}{_short(value)}")


async def _export(journal: Journal, args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        raise ReplayToolError("name the instances or sessions to export, or pass --all")
    ids = None if args.all else args.ids
    for ident in ids or ():  # before creating the output file: an unknown id writes nothing
        await resolve_stream(journal, ident)
    if args.output in (None, "-"):
        report = await export_histories(journal, ids, sys.stdout)
    else:
        handle = _open_for_writing(args.output)
        with handle:
            report = await export_histories(journal, ids, handle)
    print(f"exported {report.streams} streams, {report.events} events", file=sys.stderr)
    return 0


def _open_for_writing(path: str) -> TextIO:
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise ReplayToolError(f"cannot write {path}: {exc.strerror or exc}") from None


async def _import(journal: Journal, args: argparse.Namespace) -> int:
    report = await import_file(journal, args.file)
    print(f"imported {report.streams} streams, {report.events} events into namespace {journal.namespace}")
    return 0


async def _tail(journal: Journal, args: argparse.Namespace) -> int:
    await print_tail(
        journal,
        redactor=_redactor(args),
        as_json=args.json,
        after=args.after,
        limit=args.limit,
        idle_timeout=args.timeout,
    )
    return 0


# --- wiring --------------------------------------------------------------------


def registry_code(registry: Registry) -> dict[str, Any]:
    """The verify options that make replay decode values exactly as the live runner does.

    An adapter between the engine's registry and :mod:`sagalog.replay.verify`
    (which, one layer down, knows nothing of registries).
    """

    def lookup(name: str) -> WorkflowFunction | None:
        found = registry.workflows.get(name)
        return None if found is None else found.run

    def decode_args(name: str, data: bytes) -> tuple[Any, ...]:
        return registry.workflow(name).decode_args(data)

    def decode_result(kind: str, name: str, data: bytes) -> Any:
        step = registry.steps.get(name) if kind == "step" else None
        return default_decode(kind, name, data) if step is None else step.decode_result(data)

    return {"lookup": lookup, "decode_args": decode_args, "decode_result": decode_result}


async def _verify(args: argparse.Namespace) -> int:
    code = registry_code(load_modules(args.modules))
    progress = None if args.no_progress or args.json or not sys.stderr.isatty() else ProgressBar(sys.stderr)
    options: dict[str, Any] = {"workflow": args.workflow, "since": args.since, "progress": progress, **code}
    if args.file is not None:
        if args.db is not None:
            raise ReplayToolError("pass either --file or --db, not both")
        report = verify_file(args.file, **options)
    else:
        journal = await open_from_args(args)
        try:
            report = await verify_journal(journal, **options)
        finally:
            await journal.close()
    if args.json:
        print_json(
            {**to_jsonable(report), "passed": report.passed, "events_per_second": report.events_per_second}
        )
    else:
        print("\n".join(format_report(report)))
    return 0 if report.passed else 1


def _verify_command(args: argparse.Namespace) -> int:
    return run(lambda: _verify(args))


def register(subparsers: Any) -> None:
    """Add ``sagalog replay ...`` to the command line."""
    group = subparsers.add_parser("replay", help="inspect, time-travel, verify, export and import journals")
    sub = group.add_subparsers(dest="replay_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="instances and sessions, most recently active first")
    add_db_options(p)
    add_json_option(p)
    p.add_argument("--kind", choices=["workflow", "session"], help="only workflows or only sessions")
    p.add_argument("--workflow", help="only instances of this workflow")
    p.add_argument("--status", help="only this status (running, completed, failed, open, closed, ...)")
    p.add_argument("--contains", metavar="TEXT", help="only ids containing TEXT")
    p.add_argument("--since", type=parse_time, help="active at or after (ISO time or age: 30m, 2h, 7d)")
    p.add_argument("--until", type=parse_time, help="last active before (ISO time or age)")
    p.add_argument("--limit", type=_positive, default=50, help="page size (default: %(default)s)")
    p.add_argument("--offset", type=_positive, default=0, help="skip this many (paging)")
    p.set_defaults(run=_with_journal(_list))

    p = sub.add_parser("show", help="an instance's or session's events as a timeline")
    add_db_options(p)
    add_json_option(p)
    _add_redaction(p)
    p.add_argument("id", help="instance or session id (or stream id: wf-..., session-...)")
    p.add_argument("--full", action="store_true", help="print whole payloads and metadata")
    p.set_defaults(run=_with_journal(_show))

    p = sub.add_parser("state", help="the state folded up to a version, or what changed between two")
    add_db_options(p)
    add_json_option(p)
    _add_redaction(p)
    p.add_argument("id", help="instance or session id")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--at", type=_positive, metavar="VERSION", help="fold up to VERSION (default: all)")
    when.add_argument("--diff", type=_positive, nargs=2, metavar=("V1", "V2"), help="changes from V1 to V2")
    p.set_defaults(run=_with_journal(_state))

    p = sub.add_parser(
        "verify", help="replay stored histories against the current code (exit 1 on divergence)"
    )
    add_db_options(p)
    add_json_option(p)
    p.add_argument("modules", nargs="+", metavar="MODULE", help="modules defining the workflows")
    p.add_argument("--workflow", help="only instances of this workflow")
    p.add_argument("--since", type=parse_time, help="only instances active since (ISO time or age)")
    p.add_argument("--file", metavar="FILE.jsonl", help="verify the histories of an export file instead")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")
    p.set_defaults(run=_verify_command)

    p = sub.add_parser("export", help="write histories as JSON Lines (stdout by default)")
    add_db_options(p)
    p.add_argument("ids", nargs="*", metavar="ID", help="instances or sessions to export")
    p.add_argument("--all", action="store_true", help="export every stream of the namespace")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(run=_with_journal(_export))

    p = sub.add_parser("import", help="import an export file (all or nothing)")
    add_db_options(p)
    p.add_argument("file", help="a file written by `sagalog replay export`")
    p.set_defaults(run=_with_journal(_import))

    p = sub.add_parser("tail", help="follow new events live, in global order")
    add_db_options(p)
    add_json_option(p)
    _add_redaction(p)
    p.add_argument("--after", type=_positive, metavar="POSITION", help="start after this global position")
    p.add_argument("--limit", type=_positive, help="stop after this many events")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after this long without events")
    p.set_defaults(run=_with_journal(_tail))
