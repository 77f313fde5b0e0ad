"""Persistence: the append-only journal and its backends.

Storage knows nothing of workflows. It stores records (stream, version, type,
payload bytes, metadata, namespace) in a global order, plus snapshots. Layers
above import from here only: ``from sagalog.storage import Journal``.
"""

from sagalog.storage.codec import (
    IdentityCodec,
    PayloadCodec,
    ZlibCodec,
    decode_value,
    encode_value,
)
from sagalog.storage.group_commit import CommitObserver
from sagalog.storage.journal import DEFAULT_MAX_PAYLOAD, Journal, check_stream_id
from sagalog.storage.memory import MemoryRecorder
from sagalog.storage.notices import UNKNOWN, Touch
from sagalog.storage.recorder import AppendOutcome, AppendRequest, Recorder
from sagalog.storage.records import (
    ANY_VERSION,
    DEFAULT_NAMESPACE,
    NO_STREAM,
    Claim,
    Event,
    NewEvent,
    Schedule,
    Snapshot,
    StreamFilter,
    StreamInfo,
    WorkItem,
)
from sagalog.storage.retry import Backoff, retry_transient
from sagalog.storage.urls import (
    DEFAULT_URL,
    connect,
    default_url,
    open_journal,
    open_recorder,
    redact_url,
)
from sagalog.storage.watch import Watch

__all__ = [
    "ANY_VERSION",
    "DEFAULT_MAX_PAYLOAD",
    "DEFAULT_NAMESPACE",
    "DEFAULT_URL",
    "NO_STREAM",
    "UNKNOWN",
    "AppendOutcome",
    "AppendRequest",
    "Backoff",
    "Claim",
    "CommitObserver",
    "Event",
    "IdentityCodec",
    "Journal",
    "MemoryRecorder",
    "NewEvent",
    "PayloadCodec",
    "Recorder",
    "Schedule",
    "Snapshot",
    "StreamFilter",
    "StreamInfo",
    "Touch",
    "Watch",
    "WorkItem",
    "ZlibCodec",
    "check_stream_id",
    "connect",
    "decode_value",
    "default_url",
    "encode_value",
    "open_journal",
    "open_recorder",
    "redact_url",
    "retry_transient",
]
