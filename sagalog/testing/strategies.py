"""Hypothesis strategies for saga plans and faults (``pip install sagalog[testing]``).

``plans()`` draws :class:`~sagalog.testing.plans.Op` lists for
:func:`~sagalog.testing.plans.plan_saga`; ``faults()`` draws where a fault
strikes; ``scripts()`` draws per-attempt behaviours, for a user's own steps too.
"""

from __future__ import annotations

from hypothesis import strategies as st

from sagalog.testing.harness import Fault, FaultKind, SignalMode
from sagalog.testing.plans import STEP_ATTEMPTS, Behaviour, Op, StepSpec

TAGS = "abcdefghjk"


def scripts(
    *, transient: int = STEP_ATTEMPTS - 2, end: tuple[Behaviour, ...] = ("ok", "fatal")
) -> st.SearchStrategy[tuple[Behaviour, ...]]:
    """Per-attempt behaviours: up to ``transient`` retryable failures or hangs, then one of ``end``.

    The default leaves a plan step one attempt to spare, so a crash (which
    spends the attempt it interrupts) cannot change how the step ends.
    """
    kinds: list[Behaviour] = ["retry", "hang"]
    failures = st.lists(st.sampled_from(kinds), max_size=transient)
    return st.builds(lambda f, e: (*f, e), failures, st.sampled_from(end))


def undo_scripts() -> st.SearchStrategy[tuple[Behaviour, ...]]:
    """A compensation's behaviours: any failures (enough to exhaust its retries), then success."""
    kinds: list[Behaviour] = ["retry", "hang", "fatal"]
    failures = st.lists(st.sampled_from(kinds), max_size=3)
    return failures.map(lambda f: (*f, "ok"))


def step_specs(
    *, undo: bool | None = None, exhaust: bool = False, fatal: bool = True
) -> st.SearchStrategy[StepSpec]:
    """One plan step; ``undo`` forces a compensation (True), forbids one (False) or draws it (None).

    ``exhaust`` lets a step use up all its attempts with transient failures;
    ``fatal`` lets it end in a permanent failure.
    """
    end: tuple[Behaviour, ...] = ("ok", "fatal") if fatal else ("ok",)
    script = scripts(transient=STEP_ATTEMPTS + 1 if exhaust else STEP_ATTEMPTS - 2, end=end)
    comp = st.none() if undo is False else undo_scripts() if undo else st.none() | undo_scripts()
    return st.builds(StepSpec, st.sampled_from(TAGS), script, comp)


def ops(*, exhaust: bool = False, racy: bool = True) -> st.SearchStrategy[Op]:
    """One plan instruction of any kind.

    With ``racy`` false, no member of a ``gather`` fails: which siblings of a
    failing member complete first depends on timing, which a crash changes.
    """
    one = step_specs(exhaust=exhaust).map(lambda s: (s,))
    many = st.lists(step_specs(exhaust=exhaust), min_size=1, max_size=3).map(tuple)
    members = many if racy else st.lists(step_specs(fatal=False), min_size=1, max_size=3).map(tuple)
    return st.one_of(
        st.builds(Op, st.just("step"), one),
        st.builds(Op, st.just("gather"), members),
        st.builds(Op, st.sampled_from(["sleep", "signal"])),
        st.builds(Op, st.just("catch"), one),
        st.builds(Op, st.just("child"), many),
    )


def plans(
    *, min_size: int = 1, max_size: int = 6, exhaust: bool = False, racy: bool = True
) -> st.SearchStrategy[list[Op]]:
    """Saga plans for :func:`~sagalog.testing.plans.plan_saga` (see :func:`ops`)."""
    return st.lists(ops(exhaust=exhaust, racy=racy), min_size=min_size, max_size=max_size)


def signal_modes() -> st.SearchStrategy[SignalMode]:
    """When signals arrive: early (before the wait), late (while it waits) or never (it times out)."""
    return st.sampled_from(["late", "early", "never"])


def faults(
    appends: int, kinds: tuple[FaultKind, ...] = ("crash", "cancel", "takeover", "crash_cancel")
) -> st.SearchStrategy[Fault]:
    """A fault of one of ``kinds`` at one of the worker's ``appends`` append points
    (a cancel may also come before the first)."""

    def at(kind: FaultKind) -> st.SearchStrategy[Fault]:
        first = 0 if kind == "cancel" else 1
        return st.builds(Fault, st.just(kind), st.integers(first, max(1, appends)))

    return st.sampled_from(kinds).flatmap(at)


def crash_points(appends: int, *, enumerate_up_to: int = 12, sample: int = 3) -> st.SearchStrategy[list[int]]:
    """Append numbers to crash at: every one of ``appends`` when there are at most
    ``enumerate_up_to``, else ``sample`` of them drawn (the last one always included)."""
    if appends <= enumerate_up_to:
        return st.just(list(range(1, appends + 1)))
    drawn = st.lists(st.integers(1, appends), min_size=sample - 1, max_size=sample - 1, unique=True)
    return drawn.map(lambda points: sorted({*points, appends}))
