"""THE SLOW ONE: a real worker process on PostgreSQL is killed (kill -9) at a generated point.

A generated plan (steps, gathers, caught failures; no long timers) is started
on PostgreSQL and served by ``sagalog worker plan_worker``. When the
instance's stream reaches a generated number of events the worker gets
SIGKILL, and a second worker takes the instance over once the lease expires.
Then guarantees 1, 2 and 7 (sagalog.testing.check_all) and 4 (the outcome
equals an in-process run without a crash; no step ran again after its
completion was recorded, by the steps' own execution log) must hold.
Few examples: each costs seconds of real time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from props import examples, new_id
from sagalog.engine import Runner
from sagalog.replay import TERMINAL
from sagalog.storage import Event, connect

from sagalog.testing import (
    PLAN_REGISTRY,
    Op,
    StepSpec,
    check_all,
    histories,
    outcome,
    plan_saga,
    read_everything,
    run_instance,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.postgres]

HERE = Path(__file__).resolve().parent
TOOLS = HERE.parents[1] / "tools"
sys.path.insert(0, str(TOOLS))
from chaos import WorkerProcess  # noqa: E402

# Behaviours that cost little real time (a retry waits its 1 s backoff).
quick_specs = st.builds(
    StepSpec,
    st.sampled_from("abcdef"),
    st.sampled_from([("ok",), ("ok",), ("retry", "ok"), ("fatal",)]),
    st.none() | st.just(("ok",)),
)
calm_specs = st.builds(StepSpec, st.sampled_from("ghj"), st.just(("ok",)), st.none() | st.just(("ok",)))
quick_plans = st.lists(
    st.one_of(
        st.builds(Op, st.just("step"), quick_specs.map(lambda s: (s,))),
        st.builds(Op, st.just("catch"), quick_specs.map(lambda s: (s,))),
        st.builds(Op, st.just("gather"), st.lists(calm_specs, min_size=1, max_size=3).map(tuple)),
    ),
    min_size=1,
    max_size=4,
)


def ran_after_completion(log: Path, found: dict[str, list[Event]]) -> list[str]:
    """Executions that began after their completion was recorded (by wall time)."""
    done = {}
    for instance, events in found.items():
        for event in events:
            if event.type in ("StepCompleted", "CompensationCompleted"):
                from sagalog.replay import decode_event

                done[(instance, decode_event(event).seq)] = event.recorded_at.timestamp()  # type: ignore[union-attr]
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [f"{r['what']} attempt {r['attempt']}" for r in rows
            if (r["instance"], r["seq"]) in done and r["t"] > done[(r["instance"], r["seq"])]]  # fmt: skip


async def wait_ended(journal: object, iid: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = await histories(journal, iid)  # type: ignore[arg-type]
        if found and all(e and e[-1].type in TERMINAL_TYPES for e in found.values()):
            return True
        await anyio.sleep(0.1)
    return False


TERMINAL_TYPES = {f"Workflow{s.capitalize()}" for s in TERMINAL} | {"ParentNotified"}


@examples(0.12, least=2)
@given(plan=quick_plans, where=st.floats(0.0, 1.0))
async def test_real_kill_9_at_a_generated_point_then_another_worker_resumes(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory, plan: list[Op], where: float
) -> None:
    reference = await connect("memory://")
    await run_instance(reference, PLAN_REGISTRY, plan_saga, [plan], instance_id="ref")
    expected = list((await outcome(reference, "ref")).values())
    events = len((await histories(reference, "ref"))["ref"])
    await reference.close()
    kill_at = 2 + int(where * (events - 2))  # stream length at which the worker dies

    workdir = tmp_path_factory.mktemp("kill9")
    log = workdir / "effects.jsonl"
    path = os.pathsep.join(p for p in [str(HERE), str(TOOLS), os.environ.get("PYTHONPATH", "")] if p)
    spawn = {"log_dir": workdir, "lease": 1.0, "modules": ("plan_worker",),
             "extra_env": {"PYTHONPATH": path, "PLAN_EFFECTS": str(log)}}  # fmt: skip
    journal = await connect(pg_url)
    iid = new_id()
    first = await WorkerProcess.spawn(pg_url, name="doomed", **spawn)  # type: ignore[arg-type]
    second = None
    try:
        await Runner(journal, PLAN_REGISTRY).start(plan_saga, plan, id=iid)
        with anyio.move_on_after(20):
            while len(await journal.read_stream(f"wf-{iid}")) < kill_at:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        assert len(await journal.read_stream(f"wf-{iid}")) >= kill_at, first.log_text()
        first.kill()
        await first.wait()
        second = await WorkerProcess.spawn(pg_url, name="heir", **spawn)  # type: ignore[arg-type]
        assert await wait_ended(journal, iid, 60), second.log_text()
    finally:
        first.kill()
        await first.wait()
        if second is not None:
            second.terminate()
            await second.wait()
    found = await histories(journal, iid)
    # On failure: what each instance recorded, and what each worker said.
    story = "\n".join(
        [f"{i}: {[e.type for e in events]}" for i, events in found.items()]
        + [first.log_text(), second.log_text() if second is not None else ""]
    )
    assert check_all(found, await read_everything(journal)) == [], story
    assert list((await outcome(journal, iid)).values()) == expected, story
    assert ran_after_completion(log, found) == [], story
    await journal.close()
