"""OpenTelemetry spans: one trace per instance, carried in event metadata, so a saga
resumed by another worker continues it; and nothing at all without the package."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from obs_workflows import REGISTRY
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sagalog.engine import Registry, Runner, step, workflow
from sagalog.engine.tracing import TRACEPARENT, Tracing, trace_id_of
from sagalog.replay import child as start_child
from sagalog.storage import Journal, connect

from sagalog.clock import ManualClock

pytestmark = pytest.mark.anyio


def traced_runner(
    journal: Journal, clock: ManualClock, worker_id: str, registry: Registry = REGISTRY
) -> tuple[Runner, InMemorySpanExporter]:
    """A runner whose spans go to an exporter of its own (the global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    runner = Runner(journal, registry, clock=clock, worker_id=worker_id)
    runner.tracing = Tracing(provider)
    return runner, exporter


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


async def test_a_saga_resumed_by_another_worker_continues_its_trace() -> None:
    journal = await connect("memory://")
    clock = ManualClock()
    first, first_spans = traced_runner(journal, clock, "first")
    instance = await first.start("napping", 60)
    await first.run_until_idle()  # runs until the durable timer
    assert (await first.describe(instance)).status == "running"

    second, second_spans = traced_runner(journal, clock, "second")
    clock.advance(61)
    await second.run_until_idle()  # another worker wakes it and finishes it
    assert (await second.describe(instance)).status == "completed"

    before = first_spans.get_finished_spans()
    after = second_spans.get_finished_spans()
    assert [s.name for s in before] == ["start napping", "workflow napping"]
    assert sorted(s.name for s in after) == ["step reserve", "workflow napping"]
    root = before[0]
    assert {hex_trace(s) for s in [*before, *after]} == {hex_trace(root)}

    resumed = next(s for s in after if s.name == "workflow napping")
    assert resumed.parent is not None and root.context is not None
    assert resumed.parent.span_id == root.context.span_id  # a child of the instance's root
    step_span = next(s for s in after if s.name == "step reserve")
    assert step_span.parent is not None and resumed.context is not None
    assert step_span.parent.span_id == resumed.context.span_id  # within the advance that ran it
    assert step_span.attributes is not None
    assert step_span.attributes["sagalog.instance_id"] == instance
    assert step_span.attributes["sagalog.attempt"] == 1

    stored = await journal.read_stream(f"wf-{instance}")
    assert {trace_id_of(e.metadata[TRACEPARENT]) for e in stored} == {hex_trace(root)}


async def test_a_failed_attempt_marks_its_span_and_compensations_get_their_own() -> None:
    journal = await connect("memory://")
    runner, spans = traced_runner(journal, ManualClock(), "w")
    instance = await runner.start("declined", "lamp")
    await runner.run_until_idle()
    assert (await runner.describe(instance)).status == "compensated"
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert by_name["step charge"].status.status_code is StatusCode.ERROR
    assert by_name["step charge"].status.description == "card declined for 10"
    assert [e.name for e in by_name["step charge"].events] == ["exception"]
    assert by_name["step reserve"].status.status_code is StatusCode.UNSET
    assert "compensation release" in by_name


async def test_an_instance_started_inside_a_span_joins_that_trace() -> None:
    journal = await connect("memory://")
    runner, spans = traced_runner(journal, ManualClock(), "w")
    tracer = runner.tracing._get_tracer()
    with tracer.start_as_current_span("handle HTTP request") as request:
        instance = await runner.start("order", "book")
    await runner.run_until_idle()
    wanted = format(request.get_span_context().trace_id, "032x")
    assert {hex_trace(s) for s in spans.get_finished_spans()} == {wanted}
    assert "start order" not in {s.name for s in spans.get_finished_spans()}  # no extra root
    first = (await journal.read_stream(f"wf-{instance}"))[0]
    assert trace_id_of(first.metadata[TRACEPARENT]) == wanted


async def test_child_workflows_share_their_parents_trace() -> None:
    registry = Registry()

    @step(name="leaf", registry=registry)
    async def leaf() -> int:
        return 1

    @workflow(name="child", registry=registry)
    def child(ctx: object) -> object:
        return (yield leaf())

    @workflow(name="parent", registry=registry)
    def parent(ctx: object) -> object:
        return (yield start_child("child", id="kid"))

    journal = await connect("memory://")
    runner, exporter = traced_runner(journal, ManualClock(), "w", registry)
    instance = await runner.start("parent")
    await runner.run_until_idle()
    assert (await runner.describe(instance)).status == "completed"
    parent_trace = trace_id_of((await journal.read_stream(f"wf-{instance}"))[0].metadata[TRACEPARENT])
    kid = await journal.read_stream("wf-kid")
    assert trace_id_of(kid[0].metadata[TRACEPARENT]) == parent_trace  # on its WorkflowStarted
    assert {trace_id_of(e.metadata.get(TRACEPARENT)) for e in kid} <= {parent_trace, ""}
    assert {hex_trace(s) for s in exporter.get_finished_spans()} == {parent_trace}


def test_without_opentelemetry_tracing_is_off_and_workflows_run(tmp_path: Path) -> None:
    here = Path(__file__).resolve().parent
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if the package were not installed
        import anyio
        from obs_workflows import REGISTRY
        from sagalog.engine import Runner
        from sagalog.engine.tracing import TRACING
        from sagalog.storage import connect

        async def main():
            journal = await connect("memory://")
            runner = Runner(journal, REGISTRY)
            instance = await runner.start("declined", "lamp")
            await runner.run_until_idle()
            state = await runner.describe(instance)
            keys = {key for e in await journal.read_stream("wf-" + instance) for key in e.metadata}
            print(TRACING.enabled, state.status, sorted(keys))

        anyio.run(main)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-P", "-c", script]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    enabled, status, keys = done.stdout.split(" ", 2)
    assert (enabled, status) == ("False", "compensated")
    assert "traceparent" not in keys and "worker" in keys


async def test_with_the_api_but_no_sdk_configured_nothing_is_recorded() -> None:
    journal = await connect("memory://")
    runner = Runner(journal, REGISTRY, clock=ManualClock())  # the global (proxy) provider
    assert runner.tracing.enabled
    instance = await runner.start("order", "book")
    await runner.run_until_idle()
    assert (await runner.describe(instance)).status == "completed"
    assert not [e for e in await journal.read_stream(f"wf-{instance}") if TRACEPARENT in e.metadata]
