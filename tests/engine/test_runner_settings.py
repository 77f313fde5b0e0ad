"""Settings made on a Runner after it was built reach the steps it runs (its Stepper)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from saga_helpers import drive, event_types, make_runner
from sagalog.engine import Registry, step, workflow
from sagalog.engine.breaker import BreakerPolicy, Breakers
from sagalog.engine.retry import Retry
from sagalog.engine.tracing import Tracing
from sagalog.storage import open_journal

from sagalog.clock import ManualClock

pytestmark = pytest.mark.anyio


async def test_a_default_retry_set_later_retries_steps_without_a_policy_of_their_own() -> None:
    registry = Registry()
    calls: list[str] = []

    @step(name="flaky", registry=registry)  # no retry policy: the runner's default applies
    def flaky(who: str) -> str:
        calls.append(who)
        raise ConnectionError("service down")

    @workflow(name="uses-default", registry=registry)  # none here either
    def uses_default(ctx: Any, who: str) -> Any:
        return (yield flaky(who))

    clock = ManualClock()
    async with open_journal("memory://", clock=clock) as journal:
        # Built with one attempt only; the policy set afterwards must be the one used.
        runner = make_runner(journal, registry, clock, default_retry=Retry.none())
        policy = Retry.fixed(delay=1, attempts=3)
        runner.default_retry = policy
        assert runner.default_retry is policy and runner.stepper.default_retry is policy
        iid = await runner.start(uses_default, "ann", id="d")
        state = await drive(runner, clock, iid)
        assert state.status == "failed"
        assert calls == ["ann", "ann", "ann"]
        assert runner.steps_run == 3
        assert (await event_types(journal, iid)).count("StepStarted") == 3


async def test_breakers_and_tracing_set_later_are_the_ones_steps_use() -> None:
    registry = Registry()

    @step(name="guarded", registry=registry, retry=Retry.none(), breaker=BreakerPolicy(failures=1))
    def guarded() -> str:
        raise ConnectionError("dependency down")

    @step(name="plain", registry=registry)
    def plain() -> str:
        return "ok"

    @workflow(name="guarded-flow", registry=registry)
    def guarded_flow(ctx: Any) -> Any:
        yield plain()
        return (yield guarded())

    clock = ManualClock()
    async with open_journal("memory://", clock=clock) as journal:
        runner = make_runner(journal, registry, clock)
        breakers = Breakers(clock)
        runner.breakers = breakers
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing = Tracing(provider)
        runner.tracing = tracing
        assert runner.stepper.breakers is breakers and runner.stepper.tracing is tracing
        iid = await runner.start(guarded_flow, id="g")
        state = await drive(runner, clock, iid)
        assert state.status == "failed"
        assert runner.steps_run == 2  # one attempt of each step
        # The failure opened a breaker in the set Breakers, not in the runner's first one.
        assert "guarded" in breakers and breakers.get("guarded").status == "open"
        names = [span.name for span in exporter.get_finished_spans()]
        assert names == ["start guarded-flow", "step plain", "step guarded", "workflow guarded-flow"]
