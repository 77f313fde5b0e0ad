"""Structured logs: JSON lines carrying instance, workflow, step, attempt and trace;
text on a terminal; a bad format named in the error."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from obs_workflows import REGISTRY
from opentelemetry.sdk.trace import TracerProvider
from sagalog.engine import Runner, WorkerSettings
from sagalog.engine import logs as log_setup
from sagalog.engine.tracing import TRACEPARENT, Tracing, trace_id_of
from sagalog.engine.worker_settings import settings_from_env, validate
from sagalog.storage import connect

from sagalog.cli import main
from sagalog.clock import ManualClock
from sagalog.errors import ConfigurationError

pytestmark = pytest.mark.anyio


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing JSON lines into a buffer; put back as it was afterwards."""
    root = logging.getLogger()
    level = root.level
    out = io.StringIO()
    handler = log_setup.configure("INFO", "json", out)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in out.getvalue().splitlines()]


async def test_a_steps_own_log_records_carry_the_instance_step_attempt_and_trace(
    captured: io.StringIO,
) -> None:
    journal = await connect("memory://")
    runner = Runner(journal, REGISTRY, clock=ManualClock(), worker_id="w")
    runner.tracing = Tracing(TracerProvider())
    instance = await runner.start("declined", "lamp")
    await runner.run_until_idle()
    logging.getLogger("obs.outside").info("no instance here")

    trace = trace_id_of((await journal.read_stream(f"wf-{instance}"))[0].metadata[TRACEPARENT])
    records = lines(captured)
    reserving = next(r for r in records if r["message"] == "reserving lamp")
    assert set(reserving) == {
        "time", "level", "logger", "message", "instance_id", "workflow", "step", "attempt", "trace_id"
    }  # fmt: skip
    assert reserving["time"].endswith("+00:00")
    assert (reserving["level"], reserving["logger"]) == ("INFO", "obs.steps")
    assert (reserving["instance_id"], reserving["workflow"], reserving["trace_id"]) == (
        instance, "declined", trace
    )  # fmt: skip
    assert (reserving["step"], reserving["attempt"]) == ("reserve", 1)
    releasing = next(r for r in records if r["message"] == "releasing r-lamp")
    assert (releasing["step"], releasing["instance_id"]) == ("release", instance)
    outside = next(r for r in records if r["message"] == "no instance here")
    assert set(outside) == {"time", "level", "logger", "message"}


def test_an_exception_travels_in_the_json_record(captured: io.StringIO) -> None:
    token = log_setup.bind(instance_id="i-1", workflow="order")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("sagalog.worker").exception("unexpected error advancing wf-i-1")
    finally:
        log_setup.reset(token)
    (record,) = lines(captured)
    assert (record["level"], record["instance_id"], record["workflow"]) == ("ERROR", "i-1", "order")
    assert record["exception"].startswith("Traceback") and "RuntimeError: boom" in record["exception"]
    assert log_setup.CURRENT.get() == log_setup.EMPTY  # reset restores the empty context


def test_text_on_a_terminal_with_the_context_in_brackets() -> None:
    out = Terminal()
    handler = log_setup.configure("INFO", "auto", out)
    try:
        token = log_setup.bind(instance_id="i-2", workflow="order", step="reserve", attempt=3)
        logging.getLogger("obs").warning("slow")
        log_setup.reset(token)
        logging.getLogger("obs").warning("plain")
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = out.getvalue().splitlines()
    assert first.endswith("WARNING obs: slow [instance=i-2 workflow=order step=reserve#3]")
    assert second.endswith("WARNING obs: plain")


def test_auto_is_json_when_not_a_terminal() -> None:
    out = io.StringIO()
    handler = log_setup.configure("INFO", "auto", out)
    try:
        logging.getLogger("obs").info("hello")
    finally:
        logging.getLogger().removeHandler(handler)
    assert msgspec.json.decode(out.getvalue())["message"] == "hello"


def test_an_unknown_log_format_is_refused_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown log format 'xml': use one of auto, json, text"):
        validate(WorkerSettings(log_format="xml"))
    with pytest.raises(ConfigurationError, match=r"unknown log format 'yaml'"):
        settings_from_env({"SAGALOG_LOG_FORMAT": "yaml"})
    assert settings_from_env({"SAGALOG_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SystemExit):
        main(["worker", "obs_workflows", "--log-format", "xml"])
    assert "invalid choice: 'xml'" in capsys.readouterr().err
