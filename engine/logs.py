"""Structured logs: every record carries the instance, workflow, step, attempt and trace.

The Runner binds a :class:`LogContext` (a ``contextvars`` variable) around
the work on an instance and around each step attempt; tasks started inside
inherit it, as anyio copies the context into new tasks. :class:`ContextFilter`
copies the fields onto every record that passes a handler, so a step's own
``logging`` calls carry them too. :func:`configure` sets up the worker's
handler: JSON lines when stderr is not a terminal (a log collector reads
them), readable text when it is.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import msgspec

from sagalog.errors import ConfigurationError

LogFormat = Literal["auto", "json", "text"]
LOG_FORMATS: tuple[str, ...] = ("auto", "json", "text")
FIELDS = ("instance_id", "workflow", "step", "attempt", "trace_id")
"""The context fields every record gets (empty when unknown)."""


class LogContext(msgspec.Struct, frozen=True):
    """What the current task is working on."""

    instance_id: str = ""
    """The workflow instance."""
    workflow: str = ""
    """Its workflow name."""
    step: str = ""
    """The step or compensation whose attempt runs."""
    attempt: int = 0
    """That attempt's number (from 1)."""
    trace_id: str = ""
    """The instance's trace (32 hex digits) when tracing is on."""


EMPTY = LogContext()
CURRENT: ContextVar[LogContext] = ContextVar("sagalog_log_context", default=EMPTY)


def bind(**fields: Any) -> Token[LogContext]:
    """Add ``fields`` to the current context; undo with :func:`reset` and the token."""
    return CURRENT.set(msgspec.structs.replace(CURRENT.get(), **fields))


def update(**fields: Any) -> None:
    """Add ``fields`` to the current context until the enclosing :func:`bind` is reset."""
    CURRENT.set(msgspec.structs.replace(CURRENT.get(), **fields))


def reset(token: Token[LogContext]) -> None:
    """Restore the context from before :func:`bind`."""
    CURRENT.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current :class:`LogContext` onto each record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Set ``record.instance_id`` & co. unless the caller passed them in ``extra``."""
        context = CURRENT.get()
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, getattr(context, name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields
    that are set, and ``exception`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [instance=... workflow=... step=name#attempt trace=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The usual line, with the context fields that are set in brackets."""
        text = super().format(record)
        fields = {name: getattr(record, name, "") for name in FIELDS}
        parts = []
        if fields["instance_id"]:
            parts.append(f"instance={fields['instance_id']}")
        if fields["workflow"]:
            parts.append(f"workflow={fields['workflow']}")
        if fields["step"]:
            parts.append(f"step={fields['step']}#{fields['attempt']}")
        if fields["trace_id"]:
            parts.append(f"trace={fields['trace_id']}")
        if not parts:
            return text
        first, newline, rest = text.partition("\n")  # keep a traceback below the line
        return f"{first} [{' '.join(parts)}]{newline}{rest}"


def check_format(fmt: str) -> str:
    """``fmt`` lower-cased, or ConfigurationError naming the choices."""
    if fmt.lower() not in LOG_FORMATS:
        raise ConfigurationError(f"unknown log format {fmt!r}: use one of {', '.join(LOG_FORMATS)}")
    return fmt.lower()


def configure(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records to ``stream`` (default stderr) in ``fmt``.

    ``auto`` is JSON unless the stream is a terminal. Replaces the handlers a
    previous call installed; returns the new handler.
    """
    out = sys.stderr if stream is None else stream
    chosen = check_format(fmt)
    if chosen == "auto":
        chosen = "text" if out.isatty() else "json"
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.set_name("sagalog")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "sagalog"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("psycopg").setLevel(logging.WARNING)
    return handler
