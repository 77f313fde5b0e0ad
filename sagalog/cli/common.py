"""What every command shares: database options, running async code, output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import anyio
import msgspec

from sagalog.storage import DEFAULT_NAMESPACE, Journal, connect, default_url

T = TypeVar("T")


def add_db_options(parser: argparse.ArgumentParser) -> None:
    """``--db`` and ``--namespace``, defaulting to ``SAGALOG_DB`` / ``SAGALOG_NAMESPACE``."""
    parser.add_argument(
        "--db",
        default=None,
        help="database URL (env SAGALOG_DB; default: the embedded SQLite file .sagalog/journal.db)",
    )
    parser.add_argument(
        "--namespace",
        default=os.environ.get("SAGALOG_NAMESPACE", DEFAULT_NAMESPACE),
        help="tenant namespace (env SAGALOG_NAMESPACE; default: %(default)s)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json`` for machine-readable output."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


async def open_from_args(args: argparse.Namespace, *, migrate: bool = True) -> Journal:
    """Connect the journal named by ``--db`` / ``--namespace`` (caller closes it)."""
    return await connect(args.db or default_url(), namespace=args.namespace, migrate=migrate)


def run(func: Callable[[], Awaitable[T]]) -> T:
    """Run an async entry point of a command."""
    return anyio.run(func)


def to_jsonable(value: Any) -> Any:
    """Structs, datetimes and bytes turned into plain JSON values."""
    return msgspec.to_builtins(value, builtin_types=(), enc_hook=_enc_hook)


def _enc_hook(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot show {type(value).__name__}")


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    json.dump(to_jsonable(value), sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    """Print aligned columns (plain text, fine when piped)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
