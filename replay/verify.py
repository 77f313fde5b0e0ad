"""Verify stored histories against the current workflow code, without running steps.

Like Temporal's Replayer: each history is driven through THE executor
(:func:`sagalog.replay.executor.replay_history`), which feeds the generator
its recorded results and checks every command it yields against the recorded
decision. A history the code no longer reproduces is reported with its first
diverging event, what was recorded and what the code yields now. Code added
after the last recorded event is compatible: replay stops at the end of the
history, and the new commands are simply the next decisions.

Histories come from a journal (read a page of streams at a time, a few
streams concurrently) or from an export file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import anyio
import msgspec
from sagalog.replay.events import WorkflowStarted, decode_event
from sagalog.replay.executor import ResultDecoder, WorkflowFunction, default_decode, replay_history
from sagalog.replay.timetravel import WORKFLOW_PREFIX
from sagalog.replay.transfer import History, load_file
from sagalog.storage import Journal, StreamFilter

from sagalog.clock import SYSTEM_CLOCK, Clock
from sagalog.errors import DecodingError, NonDeterminismError

WorkflowLookup = Callable[[str], WorkflowFunction | None]
"""Finds the current code of a workflow by its registered name (None: not defined)."""

ArgsDecoder = Callable[[str, bytes], tuple[Any, ...]]
"""``decode(workflow, data)``: a workflow's recorded arguments as its code now takes them."""

Progress = Callable[[int, int, int], None]
"""``progress(done, total, events)``: called after each history."""

Outcome = Literal["ok", "diverged", "failed"]


class Divergence(msgspec.Struct, frozen=True):
    """Where a history and the current code part ways."""

    version: int
    """The stream version of the first diverging event."""
    recorded: str
    """What the history holds there."""
    now: str
    """What the code yields now."""


class InstanceResult(msgspec.Struct, frozen=True):
    """The verdict on one history."""

    stream_id: str
    """The history's stream."""
    workflow: str
    """Its workflow name ("" when the history cannot say)."""
    events: int
    """Number of events replayed."""
    outcome: Outcome
    """``ok``; ``diverged`` (non-deterministic); ``failed`` (cannot be replayed)."""
    divergence: Divergence | None = None
    """For ``diverged``: the first diverging event."""
    error: str = ""
    """For ``failed`` (and ``diverged``): the message."""


class VerifyReport(msgspec.Struct, frozen=True):
    """The verdict on a set of histories."""

    replayed: int
    """Histories replayed."""
    ok: int
    """Histories the code reproduces."""
    diverged: int
    """Histories the code no longer reproduces."""
    failed: int
    """Histories that could not be replayed (unknown workflow, undecodable event, ...)."""
    events: int
    """Events replayed in all."""
    seconds: float
    """Time taken."""
    problems: list[InstanceResult]
    """Every diverged or failed history, in the order verified."""

    @property
    def passed(self) -> bool:
        """True when every history replayed fine (the exit status is 0)."""
        return self.diverged == 0 and self.failed == 0

    @property
    def events_per_second(self) -> float:
        """Replay throughput."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def started_event(history: History) -> WorkflowStarted | None:
    """A history's first event when it is a readable ``WorkflowStarted``."""
    if not history.events or history.events[0].type != "WorkflowStarted":
        return None
    try:
        started = decode_event(history.events[0])
    except DecodingError:
        return None
    return started if isinstance(started, WorkflowStarted) else None


def workflow_of(history: History) -> str | None:
    """The workflow name in a history's first event, or None when it has none."""
    started = started_event(history)
    return None if started is None else started.workflow


def verify_history(
    history: History,
    lookup: WorkflowLookup,
    *,
    decode_args: ArgsDecoder | None = None,
    decode_result: ResultDecoder = default_decode,
) -> InstanceResult:
    """Replay one history against the current code and give the verdict.

    Args:
        lookup: the current code of a workflow by name.
        decode_args: typed decoding of the recorded arguments (default: plain msgpack).
        decode_result: typed decoding of recorded step results (default: plain msgpack).
    """
    count = len(history.events)
    started = started_event(history)
    if started is None:
        return InstanceResult(
            history.stream_id, "", count, "failed", error="the history does not start with WorkflowStarted"
        )
    name = started.workflow
    fn = lookup(name)
    if fn is None:
        return InstanceResult(
            history.stream_id,
            name,
            count,
            "failed",
            error=f"workflow {name!r} is not defined by the loaded modules",
        )
    try:
        args = None if decode_args is None else decode_args(name, started.args)
        replay_history(
            fn,
            args,
            history.events,
            instance_id=history.stream_id.removeprefix(WORKFLOW_PREFIX),
            workflow=name,
            decode_result=decode_result,
        )
    except NonDeterminismError as exc:
        divergence = Divergence(exc.version, exc.recorded, exc.yielded)
        return InstanceResult(history.stream_id, name, count, "diverged", divergence, str(exc))
    except DecodingError as exc:
        return InstanceResult(history.stream_id, name, count, "failed", error=str(exc))
    except Exception as exc:  # workflow code may raise anything; one history must not stop the run
        return InstanceResult(history.stream_id, name, count, "failed", error=f"{type(exc).__name__}: {exc}")
    return InstanceResult(history.stream_id, name, count, "ok")


class _Tally:
    """Counts verdicts as they come."""

    def __init__(self, clock: Clock, total: int, progress: Progress | None) -> None:
        self.clock = clock
        self.started = clock.now()
        self.total = total
        self.progress = progress
        self.results = {"ok": 0, "diverged": 0, "failed": 0}
        self.events = 0
        self.problems: list[InstanceResult] = []

    def add(self, result: InstanceResult) -> None:
        self.results[result.outcome] += 1
        self.events += result.events
        if result.outcome != "ok":
            self.problems.append(result)
        if self.progress is not None:
            self.progress(sum(self.results.values()), self.total, self.events)

    def report(self) -> VerifyReport:
        seconds = (self.clock.now() - self.started).total_seconds()
        return VerifyReport(
            replayed=sum(self.results.values()),
            ok=self.results["ok"],
            diverged=self.results["diverged"],
            failed=self.results["failed"],
            events=self.events,
            seconds=seconds,
            problems=self.problems,
        )


def _selected(history: History, workflow: str | None, since: datetime | None) -> bool:
    if not history.stream_id.startswith(WORKFLOW_PREFIX):
        return False
    if since is not None and (not history.events or history.events[-1].recorded_at < since):
        return False
    return workflow is None or workflow_of(history) == workflow


def verify_histories(
    histories: Sequence[History],
    lookup: WorkflowLookup,
    *,
    workflow: str | None = None,
    since: datetime | None = None,
    decode_args: ArgsDecoder | None = None,
    decode_result: ResultDecoder = default_decode,
    clock: Clock = SYSTEM_CLOCK,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify histories held in memory (e.g. read from an export file).

    Only workflow streams (``wf-``) are verified; ``workflow`` and ``since``
    (last event at or after) narrow them down.
    """
    chosen = [h for h in histories if _selected(h, workflow, since)]
    tally = _Tally(clock, len(chosen), progress)
    for history in chosen:
        tally.add(verify_history(history, lookup, decode_args=decode_args, decode_result=decode_result))
    return tally.report()


def verify_file(
    path: str | Path,
    lookup: WorkflowLookup,
    **options: Any,
) -> VerifyReport:
    """Verify the workflow histories of an export file (see :func:`verify_histories`).

    Raises:
        CorruptImportError: a bad line in the file (with its number).
    """
    return verify_histories(load_file(path), lookup, **options)


async def _stream_ids(journal: Journal, since: datetime | None) -> list[str]:
    ids: list[str] = []
    page = 1000
    while True:
        infos = await journal.list_streams(
            StreamFilter(prefix=WORKFLOW_PREFIX, since=since, limit=page, offset=len(ids))
        )
        ids += [info.stream_id for info in infos]
        if len(infos) < page:
            return ids


async def _read_many(journal: Journal, stream_ids: Sequence[str], readers: int) -> list[History]:
    found: dict[str, History] = {}
    limiter = anyio.CapacityLimiter(readers)

    async def read(stream_id: str) -> None:
        async with limiter:
            found[stream_id] = History(stream_id, await journal.read_stream(stream_id))

    async with anyio.create_task_group() as group:
        for stream_id in stream_ids:
            group.start_soon(read, stream_id)
    return [found[s] for s in stream_ids]


async def verify_journal(
    journal: Journal,
    lookup: WorkflowLookup,
    *,
    workflow: str | None = None,
    since: datetime | None = None,
    decode_args: ArgsDecoder | None = None,
    decode_result: ResultDecoder = default_decode,
    clock: Clock = SYSTEM_CLOCK,
    progress: Progress | None = None,
    page: int = 200,
    readers: int = 8,
) -> VerifyReport:
    """Verify every workflow history of a journal's namespace against the current code.

    Args:
        lookup: the current code of each workflow by name (e.g. a registry's ``get``).
        workflow: only instances of this workflow.
        since: only instances active at or after this time.
        progress: called after each history, e.g. :class:`ProgressBar`.
        page: histories held in memory at once.
        readers: streams read concurrently.
    """
    stream_ids = sorted(await _stream_ids(journal, since))
    tally = _Tally(clock, len(stream_ids), progress)
    for start in range(0, len(stream_ids), page):
        for history in await _read_many(journal, stream_ids[start : start + page], readers):
            if workflow is not None and workflow_of(history) != workflow:
                tally.total -= 1
                continue
            tally.add(verify_history(history, lookup, decode_args=decode_args, decode_result=decode_result))
    return tally.report()


# --- output --------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar, redrawn in place (for a terminal's stderr)."""

    def __init__(self, out: TextIO | None = None, *, clock: Clock = SYSTEM_CLOCK, width: int = 30) -> None:
        self.out = out or sys.stderr
        self.clock = clock
        self.width = width
        self.started = clock.now()
        self._last_fill = -1

    def __call__(self, done: int, total: int, events: int) -> None:
        """Redraw when the bar moves (at most ``width`` + 1 times)."""
        fill = self.width if total <= 0 else min(self.width, done * self.width // total)
        if fill == self._last_fill and done != total:
            return
        self._last_fill = fill
        seconds = (self.clock.now() - self.started).total_seconds()
        rate = f"{events / seconds:,.0f} events/s" if seconds > 0 else ""
        bar = "#" * fill + "." * (self.width - fill)
        self.out.write(f"\r[{bar}] {done}/{total} histories  {rate}")
        if done >= total:
            self.out.write("\n")
        self.out.flush()


def format_report(report: VerifyReport) -> list[str]:
    """The human-readable report: each problem, then the summary line."""
    lines: list[str] = []
    for problem in report.problems:
        name = f" ({problem.workflow})" if problem.workflow else ""
        if problem.divergence is not None:
            lines += [
                f"DIVERGED {problem.stream_id}{name} at event {problem.divergence.version}",
                f"  recorded: {problem.divergence.recorded}",
                f"  now:      {problem.divergence.now}",
            ]
        else:
            lines.append(f"FAILED   {problem.stream_id}{name}: {problem.error}")
    lines.append(
        f"replayed {report.replayed} histories ({report.events} events) in {report.seconds:.2f} s: "
        f"{report.ok} ok, {report.diverged} diverged, {report.failed} failed; "
        f"{report.events_per_second:,.0f} events/s"
    )
    return lines


def lookup_in(workflows: Iterable[tuple[str, WorkflowFunction]]) -> WorkflowLookup:
    """A lookup over ``(name, function)`` pairs."""
    table = dict(workflows)
    return table.get
