"""The journal's meaning: workflow events, state folds, and the executor.

``replay`` knows nothing of workers or databases beyond the Journal protocol.
Layers above import from here only: ``from sagalog.replay import SagaFold``.
"""

from sagalog.replay.commands import (
    ChildCall,
    Command,
    ContinueAsNew,
    Gather,
    Now,
    Random,
    Sleep,
    SleepUntil,
    StepCall,
    Uuid,
    WaitSignal,
    child,
    continue_as_new,
    gather,
    sleep,
    sleep_until,
    wait_signal,
)
from sagalog.replay.events import (
    DECISION_TYPES,
    EVENT_TYPES,
    SCHEMA_VERSION,
    WorkflowEvent,
    decode_event,
    encode_event,
    instance_id_of,
    stream_id,
)
from sagalog.replay.executor import Executor, WorkflowContext, replay_history
from sagalog.replay.inspect import (
    InstanceSummary,
    ListQuery,
    TimelineEntry,
    follow,
    list_instances,
    print_tail,
    print_timeline,
    timeline,
)
from sagalog.replay.rebuild import RebuildSummary, rebuild_derived
from sagalog.replay.redact import DEFAULT_MASKED_FIELDS, Redactor
from sagalog.replay.saga import TERMINAL, SagaFold, SagaState, StepState, apply_event, ready_at
from sagalog.replay.sessions import SessionState
from sagalog.replay.timetravel import StateDiff, StateView, resolve_stream, state_at, state_diff
from sagalog.replay.transfer import (
    History,
    TransferReport,
    export_histories,
    import_file,
    import_histories,
    read_histories,
)
from sagalog.replay.verify import (
    Divergence,
    InstanceResult,
    VerifyReport,
    verify_file,
    verify_histories,
    verify_journal,
)

__all__ = [
    "DECISION_TYPES",
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "TERMINAL",
    "ChildCall",
    "Command",
    "ContinueAsNew",
    "Executor",
    "Gather",
    "Now",
    "Random",
    "SagaFold",
    "SagaState",
    "SessionState",
    "Sleep",
    "SleepUntil",
    "StepCall",
    "StepState",
    "Uuid",
    "WaitSignal",
    "WorkflowContext",
    "WorkflowEvent",
    "apply_event",
    "child",
    "continue_as_new",
    "decode_event",
    "encode_event",
    "gather",
    "instance_id_of",
    "ready_at",
    "replay_history",
    "sleep",
    "sleep_until",
    "stream_id",
    "wait_signal",
]

# The replay tool (sagalog replay): inspect, time-travel, verify, export/import.
__all__ += [
    "DEFAULT_MASKED_FIELDS",
    "Divergence",
    "History",
    "InstanceResult",
    "InstanceSummary",
    "ListQuery",
    "Redactor",
    "StateDiff",
    "StateView",
    "TimelineEntry",
    "TransferReport",
    "VerifyReport",
    "export_histories",
    "follow",
    "import_file",
    "import_histories",
    "list_instances",
    "print_tail",
    "print_timeline",
    "read_histories",
    "resolve_stream",
    "state_at",
    "state_diff",
    "timeline",
    "verify_file",
    "verify_histories",
    "verify_journal",
]

# Rebuilding derived tables from events (sagalog admin rebuild).
__all__ += ["RebuildSummary", "rebuild_derived"]
