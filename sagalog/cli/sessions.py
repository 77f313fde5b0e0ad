"""``sagalog sessions ...``: look at sessions, close one, read the analytics.

sagalog sessions list [--status S] [--kind K] [--limit N] [--offset N] [--json]
sagalog sessions show SESSION_ID [--json]
sagalog sessions close SESSION_ID [--reason TEXT] [--json]
sagalog sessions stats [--rebuild] [--json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sagalog.cli.common import (
    add_db_options,
    add_json_option,
    open_from_args,
    print_json,
    print_table,
    run,
    to_jsonable,
)
from sagalog.engine.sessions import Sessions
from sagalog.replay import session_analytics
from sagalog.replay.session_analytics import Histogram, SessionStats
from sagalog.replay.sessions import SessionState
from sagalog.storage import Journal

T = TypeVar("T")
STATUSES = ("open", "closed", "expired")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``sessions`` command group."""
    group = subparsers.add_parser("sessions", help="list, show and close sessions; session analytics")
    commands = group.add_subparsers(dest="sessions_command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="sessions, most recently active first")
    listing.add_argument("--status", choices=STATUSES, help="only sessions with this status")
    listing.add_argument("--kind", help="only sessions of this kind")
    listing.add_argument(
        "--limit", type=_count(1), default=50, help="at most this many (default: %(default)s)"
    )
    listing.add_argument("--offset", type=_count(0), default=0, help="skip this many matches first")
    listing.set_defaults(run=run_list)

    show = commands.add_parser("show", help="one session's state, folded from its events")
    show.add_argument("session_id", metavar="SESSION_ID")
    show.set_defaults(run=run_show)

    close = commands.add_parser("close", help="close a session (recorded as SessionClosed)")
    close.add_argument("session_id", metavar="SESSION_ID")
    close.add_argument("--reason", default="closed from the command line", help="why (recorded)")
    close.set_defaults(run=run_close)

    stats = commands.add_parser("stats", help="open sessions per kind, hourly counts, durations")
    stats.add_argument(
        "--rebuild", action="store_true", help="fold from the first event instead of the stored copy"
    )
    stats.set_defaults(run=run_stats)

    for parser in (listing, show, close, stats):
        add_db_options(parser)
        add_json_option(parser)


def _count(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is too small: use a number >= {least}")
        return value

    return parse


def _with_journal(args: argparse.Namespace, body: Callable[[Journal], Awaitable[T]]) -> T:
    async def main() -> T:
        journal = await open_from_args(args)
        try:
            return await body(journal)
        finally:
            await journal.close()

    return run(main)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def state_json(state: SessionState) -> dict[str, Any]:
    """A session as JSON, with its next deadline added."""
    data: dict[str, Any] = to_jsonable(state)
    data["next_deadline"] = to_jsonable(state.next_deadline)
    return data


def run_list(args: argparse.Namespace) -> int:
    """Print sessions as a table (or a JSON list)."""
    states = _with_journal(
        args,
        lambda j: Sessions(j).list_sessions(
            status=args.status, kind=args.kind, limit=args.limit, offset=args.offset
        ),
    )
    if args.json:
        print_json([state_json(s) for s in states])
        return 0
    if not states:
        print("no sessions")
        return 0
    rows = [
        [
            s.session_id,
            s.kind,
            s.status,
            _when(s.created_at),
            _when(s.last_active_at),
            _when(s.next_deadline if s.is_open else s.ended_at),
            str(s.version),
        ]
        for s in states
    ]
    print_table(rows, ["SESSION", "KIND", "STATUS", "CREATED", "LAST ACTIVE", "DEADLINE/ENDED", "EVENTS"])
    return 0


def _print_state(state: SessionState) -> None:
    lines = [
        ("session", state.session_id),
        ("kind", state.kind),
        ("status", state.status + (f" ({state.end_reason})" if state.end_reason else "")),
        ("created", _when(state.created_at)),
        ("last active", _when(state.last_active_at)),
        ("idle timeout", "-" if state.idle_timeout is None else f"{state.idle_timeout:g} s"),
        ("expires", _when(state.expires_at)),
        ("next deadline", _when(state.next_deadline)),
        ("ended", _when(state.ended_at) + (f" by {state.closed_by}" if state.closed_by else "")),
        ("events", f"{state.version} ({state.changes} changes, {state.touches} touches)"),
    ]
    for label, value in lines:
        print(f"{label + ':':<15}{value}")
    print("attributes:" + ("" if state.attributes else "    -"))
    for name, value in sorted(state.attributes.items()):
        print(f"  {name} = {json.dumps(to_jsonable(value), sort_keys=True)}")
    print("workflows:" + ("" if state.workflows else "     -"))
    for bound in state.workflows:
        print(f"  {bound.instance_id}  on end: {bound.policy}  bound {_when(bound.bound_at)}")


def run_show(args: argparse.Namespace) -> int:
    """Print one session."""
    state = _with_journal(args, lambda j: Sessions(j).get(args.session_id))
    if args.json:
        print_json(state_json(state))
    else:
        _print_state(state)
    return 0


def run_close(args: argparse.Namespace) -> int:
    """Close a session; one that already ended is reported and left as it is."""

    async def close(journal: Journal) -> tuple[SessionState, bool]:
        sessions = Sessions(journal)
        before = await sessions.get(args.session_id)
        after = await sessions.close(args.session_id, args.reason)
        return after, after.version != before.version

    state, changed = _with_journal(args, close)
    if args.json:
        print_json({"closed": changed, "session": state_json(state)})
    elif changed:
        print(f"closed session {state.session_id!r} (reason: {state.end_reason})")
    else:
        print(f"session {state.session_id!r} had already ended ({state.status}); nothing changed")
    return 0


def _histogram_line(histogram: Histogram, unit: str) -> str:
    if not histogram.count:
        return "none yet"
    mean = histogram.sum / histogram.count
    buckets = ", ".join(
        f"<={bound:g}{unit}: {count}"
        for bound, count in zip(histogram.bounds, histogram.counts, strict=False)
        if count
    )
    if histogram.counts[-1]:
        buckets += f"{', ' if buckets else ''}more: {histogram.counts[-1]}"
    return f"{histogram.count} sessions, mean {mean:.1f}{unit} ({buckets})"


def _print_stats(stats: SessionStats) -> None:
    kinds = ", ".join(f"{kind} {n}" for kind, n in stats.open_by_kind.items())
    open_now = sum(stats.open_by_kind.values())
    print(f"open now:           {open_now}" + (f" ({kinds})" if kinds else ""))
    print(f"opened (all time):  {stats.opened}")
    print(f"closed (all time):  {stats.closed}")
    print(f"expired (all time): {stats.expired}")
    print(f"duration:           {_histogram_line(stats.duration_seconds, 's')}")
    print(f"events per session: {_histogram_line(stats.events_per_session, '')}")
    if stats.undecodable:
        print(f"undecodable events: {stats.undecodable} (skipped)")
    print(f"as of position:     {stats.position}")
    if stats.per_hour:
        print()
        rows = [[_when(h.hour), str(h.opened), str(h.closed), str(h.expired)] for h in stats.per_hour[-24:]]
        print_table(rows, ["HOUR (UTC)", "OPENED", "CLOSED", "EXPIRED"])


def run_stats(args: argparse.Namespace) -> int:
    """Print the session analytics, brought up to date from the journal."""

    async def load(journal: Journal) -> SessionStats:
        if args.rebuild:
            return (await session_analytics.rebuild(journal)).stats()
        return (await session_analytics.load(journal)).stats()

    stats = _with_journal(args, load)
    if args.json:
        print_json(stats)
    else:
        _print_stats(stats)
    return 0
