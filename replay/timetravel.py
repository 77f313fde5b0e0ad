"""Time travel: a stream's state at any version, and what changed between two.

Generic over :class:`~sagalog.replay.folding.Fold`: ``wf-`` streams fold with
:class:`~sagalog.replay.saga.SagaFold`, ``session-`` streams with
:class:`~sagalog.replay.sessions.SessionFold`, and a caller may pass any fold.
States are compared as plain values (see :class:`Redactor`), so a diff is a
list of paths with their values before and after.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import msgspec
from sagalog.replay.folding import Fold, load_state
from sagalog.replay.redact import Redactor
from sagalog.storage import Journal

from sagalog.errors import NotFoundError, ReplayToolError

WORKFLOW_PREFIX = "wf-"
SESSION_PREFIX = "session-"


def stream_kind(stream_id: str) -> str:
    """``workflow``, ``session`` or ``other``, from the stream id's prefix."""
    if stream_id.startswith(WORKFLOW_PREFIX):
        return "workflow"
    if stream_id.startswith(SESSION_PREFIX):
        return "session"
    return "other"


async def resolve_stream(journal: Journal, ident: str) -> tuple[str, int]:
    """The stream a user means by ``ident``, and its version.

    ``ident`` may be a stream id (``wf-42``, ``session-7``) or a bare instance
    or session id (``42``).

    Raises:
        NotFoundError: no such stream in the journal's namespace.
    """
    candidates = [ident] if ident.startswith((WORKFLOW_PREFIX, SESSION_PREFIX)) else []
    candidates += [f"wf-{ident}", f"session-{ident}", ident]
    for stream_id in dict.fromkeys(candidates):
        version = await journal.stream_version(stream_id)
        if version:
            return stream_id, version
    raise NotFoundError(
        f"no workflow instance or session {ident!r} in namespace {journal.namespace!r} "
        "(see `sagalog replay list`)"
    )


@overload
def fold_for(stream_id: str, *, required: Literal[True] = True) -> Fold[Any]: ...
@overload
def fold_for(stream_id: str, *, required: bool) -> Fold[Any] | None: ...


def fold_for(stream_id: str, *, required: bool = True) -> Fold[Any] | None:
    """The fold that gives a stream's state: SagaFold or SessionFold.

    Raises:
        ReplayToolError: the stream is neither a workflow nor a session and
            ``required`` is true.
    """
    kind = stream_kind(stream_id)
    if kind == "workflow":
        from sagalog.replay.saga import SagaFold

        return SagaFold()
    if kind == "session":
        from sagalog.replay.sessions import SessionFold

        return SessionFold()
    if required:
        raise ReplayToolError(
            f"stream {stream_id!r} is neither a workflow instance (wf-...) nor a session "
            "(session-...): it has no state to fold; use `sagalog replay show` to see its events"
        )
    return None


class StateView(msgspec.Struct, frozen=True):
    """A stream's state at one version."""

    stream_id: str
    """The stream folded."""
    version: int
    """The last event folded in."""
    of: int
    """The stream's current version."""
    state: Any
    """The state as plain values (masked)."""


class Change(msgspec.Struct, frozen=True):
    """One difference between two states."""

    path: str
    """Where, e.g. ``steps[1].status`` (``$`` for the whole state)."""
    op: str
    """``added``, ``removed`` or ``changed``."""
    before: Any = None
    """The value at the first version (None when added)."""
    after: Any = None
    """The value at the second version (None when removed)."""


class StateDiff(msgspec.Struct, frozen=True):
    """What changed in a stream's state from one version to another."""

    stream_id: str
    """The stream folded."""
    from_version: int
    """The earlier version."""
    to_version: int
    """The later version."""
    changes: list[Change]
    """Every difference, in the order the paths appear."""


def _check_version(stream_id: str, version: int, current: int) -> None:
    if version < 0:
        raise ReplayToolError(f"invalid version {version}: versions start at 1 (0 is the empty state)")
    if version > current:
        raise NotFoundError(f"stream {stream_id!r} has {current} events; there is no version {version}")


async def state_at(
    journal: Journal,
    ident: str,
    at: int | None = None,
    *,
    fold: Fold[Any] | None = None,
    redactor: Redactor | None = None,
    use_snapshots: bool = True,
) -> StateView:
    """The state of an instance or session folded up to version ``at`` (default: the latest).

    Raises:
        NotFoundError: unknown id, or ``at`` past the end of the stream.
        ReplayToolError: a negative version, or a stream with no fold.
    """
    stream_id, current = await resolve_stream(journal, ident)
    fold = fold or fold_for(stream_id)
    target = current if at is None else at
    _check_version(stream_id, target, current)
    if target == 0:
        state = fold.initial(stream_id)
    else:
        state, _ = await load_state(journal, stream_id, fold, at_version=target, use_snapshots=use_snapshots)
    return StateView(stream_id, target, current, (redactor or Redactor()).plain(state))


async def state_diff(
    journal: Journal,
    ident: str,
    first: int,
    second: int,
    *,
    fold: Fold[Any] | None = None,
    redactor: Redactor | None = None,
) -> StateDiff:
    """What changed in the state of an instance or session between two versions.

    Raises:
        NotFoundError: unknown id, or a version past the end of the stream.
    """
    before = await state_at(journal, ident, first, fold=fold, redactor=redactor)
    after = await state_at(journal, ident, second, fold=fold, redactor=redactor)
    return StateDiff(before.stream_id, first, second, diff_values(before.state, after.state))


def diff_values(before: Any, after: Any, path: str = "$") -> list[Change]:
    """Differences between two plain values, descending into maps and lists."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[Change] = []
        for key in [*before, *(k for k in after if k not in before)]:
            child = f"{key}" if path == "$" else f"{path}.{key}"
            if key not in after:
                changes.append(Change(child, "removed", before=before[key]))
            elif key not in before:
                changes.append(Change(child, "added", after=after[key]))
            else:
                changes += diff_values(before[key], after[key], child)
        return changes
    if isinstance(before, list) and isinstance(after, list):
        changes = []
        for index in range(max(len(before), len(after))):
            child = f"{path}[{index}]"
            if index >= len(after):
                changes.append(Change(child, "removed", before=before[index]))
            elif index >= len(before):
                changes.append(Change(child, "added", after=after[index]))
            else:
                changes += diff_values(before[index], after[index], child)
        return changes
    return [Change(path, "changed", before=before, after=after)]
