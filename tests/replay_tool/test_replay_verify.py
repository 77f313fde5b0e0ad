"""Verify: stored histories replayed against the current code, without running steps."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rt_helpers import GOLDEN, START, run_workflow
from rt_workflows import COMPATIBLE, INCOMPATIBLE, NAME, V1
from sagalog.engine.workflow import DEFAULT_REGISTRY, Registry
from sagalog.replay.timetravel import state_at
from sagalog.replay.transfer import export_histories, import_histories, read_histories
from sagalog.replay.verify import (
    ProgressBar,
    VerifyReport,
    format_report,
    verify_file,
    verify_journal,
)
from sagalog.storage import ANY_VERSION, Journal, NewEvent, connect, encode_value

from sagalog.cli.replay import registry_code
from sagalog.clock import ManualClock
from sagalog.errors import CorruptImportError

pytestmark = pytest.mark.anyio

ORDERS = [{"id": n, "total": 10 * n} for n in range(1, 5)]


async def fill_shop(journal: Journal, clock: ManualClock) -> None:
    """Orders 1 and 2 completed, 3 and 4 waiting for approval, all recorded with V1."""
    for order in ORDERS:
        signals = ["approved"] if order["id"] <= 2 else []
        await run_workflow(journal, clock, V1, NAME, f"o-{order['id']}", order, signals=signals)


@pytest.fixture
async def shop(journal_url: str) -> Any:
    clock = ManualClock(START)
    journal = await connect(journal_url, clock=clock)
    try:
        await fill_shop(journal, clock)
        yield journal
    finally:
        await journal.close()


def counts(report: VerifyReport) -> tuple[int, int, int, int, int]:
    return (report.replayed, report.ok, report.diverged, report.failed, report.events)


async def test_unchanged_code_replays_every_history(shop: Journal) -> None:
    report = await verify_journal(shop, **registry_code(V1))
    assert counts(report) == (4, 4, 0, 0, 2 * 10 + 2 * 5)
    assert report.passed and report.problems == []


async def test_incompatible_change_reports_the_first_diverging_event(shop: Journal) -> None:
    report = await verify_journal(shop, **registry_code(INCOMPATIBLE))
    assert counts(report)[:4] == (4, 0, 4, 0) and not report.passed
    first = report.problems[0]
    assert (first.stream_id, first.workflow, first.outcome) == ("wf-o-1", NAME, "diverged")
    assert first.divergence is not None
    assert (first.divergence.version, first.divergence.recorded, first.divergence.now) == (
        2,
        "StepScheduled('shop.reserve')",
        "StepScheduled('shop.bill')",
    )
    assert format_report(report)[:3] == [
        f"DIVERGED wf-o-1 ({NAME}) at event 2",
        "  recorded: StepScheduled('shop.reserve')",
        "  now:      StepScheduled('shop.bill')",
    ]


async def test_compatible_change_after_the_last_recorded_event(shop: Journal) -> None:
    report = await verify_journal(shop, **registry_code(COMPATIBLE))
    # Running instances stopped at the approval wait: the new step comes after their history.
    assert [p.stream_id for p in report.problems] == ["wf-o-1", "wf-o-2"]
    assert report.ok == 2
    assert report.problems[0].divergence is not None
    assert report.problems[0].divergence.version == 7
    assert report.problems[0].divergence.recorded == "StepScheduled('shop.charge')"
    assert report.problems[0].divergence.now == "StepScheduled('shop.notify')"
    last_completed = (await shop.read_stream("wf-o-2"))[-1].recorded_at
    later = await verify_journal(
        shop, since=last_completed.replace(microsecond=1), **registry_code(COMPATIBLE)
    )
    assert counts(later)[:4] == (2, 2, 0, 0)


async def test_unknown_workflow_and_corrupt_history_fail(shop: Journal) -> None:
    await shop.append("wf-broken", 0, [NewEvent("WorkflowStarted", b"\xc1")])
    await shop.append("wf-o-4", ANY_VERSION, [NewEvent("StepCompleted", b"\xc1", {"schema": "1"})])
    await shop.append("ledger-1", 0, [NewEvent("Posted", encode_value(1))])
    report = await verify_journal(shop, **registry_code(V1))
    assert counts(report)[:4] == (5, 3, 0, 2)
    messages = {p.stream_id: p.error for p in report.problems}
    assert messages["wf-broken"] == "the history does not start with WorkflowStarted"
    assert messages["wf-o-4"].startswith("event 6 (StepCompleted) of 'wf-o-4' cannot be decoded")
    assert "FAILED   wf-broken: the history does not start with WorkflowStarted" in format_report(report)
    empty = await verify_journal(shop, **registry_code(Registry()), workflow=NAME)
    assert counts(empty)[:4] == (4, 0, 0, 4)
    assert empty.problems[0].error == f"workflow {NAME!r} is not defined by the loaded modules"


async def test_workflow_filter(shop: Journal) -> None:
    assert counts(await verify_journal(shop, workflow="other", **registry_code(V1))) == (0, 0, 0, 0, 0)
    assert (await verify_journal(shop, workflow=NAME, **registry_code(V1))).replayed == 4


async def test_progress_bar(shop: Journal) -> None:
    clock = ManualClock(START)
    out = io.StringIO()
    calls: list[tuple[int, int, int]] = []

    def progress(done: int, total: int, events: int) -> None:
        clock.advance(0.5)
        calls.append((done, total, events))
        bar(done, total, events)

    bar = ProgressBar(out, clock=clock, width=4)
    await verify_journal(shop, progress=progress, **registry_code(V1))
    assert calls == [(1, 4, 10), (2, 4, 20), (3, 4, 25), (4, 4, 30)]
    assert out.getvalue() == (
        "\r[#...] 1/4 histories  20 events/s"
        "\r[##..] 2/4 histories  20 events/s"
        "\r[###.] 3/4 histories  17 events/s"
        "\r[####] 4/4 histories  15 events/s\n"
    )


# --- golden histories stored next to the tests -------------------------------


def test_golden_history_replays() -> None:
    report = verify_file(GOLDEN / "shop_v1.jsonl", **registry_code(V1))
    assert counts(report) == (2, 2, 0, 0, 15)


def test_golden_nondeterministic_history_diverges() -> None:
    report = verify_file(GOLDEN / "shop_nondeterministic.jsonl", **registry_code(V1))
    assert counts(report)[:4] == (2, 0, 2, 0)
    divergence = report.problems[0].divergence
    assert divergence is not None
    assert (divergence.version, divergence.recorded, divergence.now) == (
        2,
        "StepScheduled('shop.bill')",
        "StepScheduled('shop.reserve')",
    )


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text((GOLDEN / "shop_v1.jsonl").read_text().replace('"version":3', '"version":"3"', 1))
    with pytest.raises(CorruptImportError, match=r"x\.jsonl, line 4: not an exported event"):
        verify_file(path, **registry_code(V1))


# --- export -> import -> the same verdicts and states -------------------------


def comparable(report: VerifyReport) -> tuple[Any, ...]:
    return (counts(report), report.problems)


@given(
    orders=st.lists(
        st.tuples(st.integers(1, 1000), st.booleans()), min_size=1, max_size=4, unique_by=lambda o: o[0]
    ),
    gaps=st.integers(0, 5),
)
def test_verify_and_state_survive_export_import(orders: list[tuple[int, bool]], gaps: int) -> None:
    async def run() -> None:
        clock = ManualClock(START)
        source = await connect("memory://", clock=clock)
        for number, approved in orders:
            order = {"id": number, "total": number * 3}
            signals = ["approved"] if approved else []
            await run_workflow(source, clock, V1, NAME, f"p-{number}", order, signals=signals)
            clock.advance(gaps)
        out = io.StringIO()
        await export_histories(source, None, out)
        target = await connect("memory://")
        await import_histories(target, read_histories(io.StringIO(out.getvalue())))
        for registry in (V1, INCOMPATIBLE, COMPATIBLE):
            here, there = [await verify_journal(j, **registry_code(registry)) for j in (source, target)]
            assert comparable(here) == comparable(there)
        for number, _ in orders:
            for at in (None, 3):
                assert await state_at(target, f"p-{number}", at) == await state_at(source, f"p-{number}", at)

    anyio.run(run)


# --- the command line -------------------------------------------------------


@pytest.fixture
def shop_module(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Write a module registering one version of the shop in the default registry."""
    written: list[str] = []
    sys.path.insert(0, str(tmp_path))

    def write(version: str) -> str:
        name = f"shop_{version.lower()}_{len(written)}"
        (tmp_path / f"{name}.py").write_text(
            "from rt_workflows import " + version + " as code\n"
            "from sagalog.engine.workflow import DEFAULT_REGISTRY\n"
            "for item in [*code.workflows.values(), *code.steps.values()]:\n"
            "    DEFAULT_REGISTRY.add(item)\n"
        )
        written.append(name)
        return name

    yield write
    sys.path.remove(str(tmp_path))
    for name in written:
        sys.modules.pop(name, None)
    DEFAULT_REGISTRY.workflows.pop(NAME, None)
    for step_name in list(V1.steps):
        DEFAULT_REGISTRY.steps.pop(step_name, None)


@pytest.fixture
def shop_url(db_url: str) -> str:
    async def fill() -> None:
        clock = ManualClock(START)
        journal = await connect(db_url, clock=clock)
        try:
            await fill_shop(journal, clock)
        finally:
            await journal.close()

    anyio.run(fill)
    return db_url


def test_cli_verify(shop_url: str, shop_module: Callable[[str], str], sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "verify", shop_module("V1"), "--db", shop_url)
    assert result.status == 0, result.err
    assert result.out.startswith("replayed 4 histories (30 events) in ")
    assert ": 4 ok, 0 diverged, 0 failed; " in result.out
    assert result.err == ""  # no progress bar when stderr is not a terminal

    result = sagalog("replay", "verify", shop_module("INCOMPATIBLE"), "--db", shop_url)
    assert result.status == 1
    assert result.out.splitlines()[:3] == [
        f"DIVERGED wf-o-1 ({NAME}) at event 2",
        "  recorded: StepScheduled('shop.reserve')",
        "  now:      StepScheduled('shop.bill')",
    ]
    assert ": 0 ok, 4 diverged, 0 failed; " in result.out

    result = sagalog("replay", "verify", shop_module("COMPATIBLE"), "--json", "--db", shop_url)
    assert result.status == 1
    report = json.loads(result.out)
    assert (report["ok"], report["diverged"], report["passed"]) == (2, 2, False)
    assert report["problems"][0]["divergence"] == {
        "version": 7,
        "recorded": "StepScheduled('shop.charge')",
        "now": "StepScheduled('shop.notify')",
    }


def test_cli_verify_file(shop_module: Callable[[str], str], sagalog: Callable[..., Any]) -> None:
    module = shop_module("V1")
    result = sagalog("replay", "verify", module, "--file", str(GOLDEN / "shop_v1.jsonl"))
    assert result.status == 0 and ": 2 ok, 0 diverged, 0 failed; " in result.out
    result = sagalog("replay", "verify", module, "--file", str(GOLDEN / "shop_nondeterministic.jsonl"))
    assert result.status == 1 and "DIVERGED wf-g-1 (shop.order) at event 2" in result.out


def test_cli_verify_bad_module(sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "verify", "no_such_module_xyz", "--file", str(GOLDEN / "shop_v1.jsonl"))
    assert result.status == 1
    assert result.err.startswith(
        "sagalog: error: cannot import workflow module 'no_such_module_xyz': No module named"
    )
