"""Test kit for sagalog workflows: generated sagas, injected faults, invariant checkers.

Part of the facade layer. The checkers (:mod:`sagalog.testing.invariants`)
and the harness need nothing beyond sagalog; the hypothesis strategies live
in :mod:`sagalog.testing.strategies` and need the ``testing`` extra
(``pip install 'sagalog[testing]'``). docs/guarantees.md shows how to use
them on your own workflows.
"""

from sagalog.testing.harness import (
    NO_FAULT,
    Crash,
    Fault,
    FaultKind,
    Outcome,
    Run,
    SignalMode,
    SteppingClock,
    TappedJournal,
    decoded,
    drive,
    executions_after_completion,
    family,
    histories,
    is_crash,
    outcome,
    read_everything,
    run_instance,
)
from sagalog.testing.invariants import (
    TERMINAL_EVENTS,
    check_all,
    check_compensations,
    check_completions,
    check_global,
    check_history,
    check_terminal,
    check_versions,
    terminal_status,
)
from sagalog.testing.plans import (
    CURRENT_WORLD,
    PLAN_REGISTRY,
    Behaviour,
    Effect,
    Fatal,
    Op,
    StepSpec,
    World,
    behaviour,
    plan_child,
    plan_saga,
)

__all__ = [
    "CURRENT_WORLD",
    "NO_FAULT",
    "PLAN_REGISTRY",
    "TERMINAL_EVENTS",
    "Behaviour",
    "Crash",
    "Effect",
    "Fatal",
    "Fault",
    "FaultKind",
    "Op",
    "Outcome",
    "Run",
    "SignalMode",
    "StepSpec",
    "SteppingClock",
    "TappedJournal",
    "World",
    "behaviour",
    "check_all",
    "check_compensations",
    "check_completions",
    "check_global",
    "check_history",
    "check_terminal",
    "check_versions",
    "decoded",
    "drive",
    "executions_after_completion",
    "family",
    "histories",
    "is_crash",
    "outcome",
    "plan_child",
    "plan_saga",
    "read_everything",
    "run_instance",
    "terminal_status",
]
