"""The console's JSON API: routes, their handlers, and the errors they answer.

Reads fold the journal (the only source of truth) on each request, through
the same functions ``sagalog replay`` and the :class:`Client` use. Actions go
through the :class:`Client` with the actor and the caller's address as event
metadata, so the journal itself is the audit log. An action first checks
the instance's status and answers 409 without writing anything when the
action does not apply; the Client's own checks still guard the append.

``docs/console.md`` is the reference of every route and error code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from sagalog.engine.client import STATUSES, Client
from sagalog.engine.console.auth import Tokens
from sagalog.engine.console.http import Request, Response, error_response, json_response
from sagalog.engine.console.views import (
    event_json,
    instance_detail,
    instance_row,
    iso,
    session_detail,
    session_row,
    timeline_steps,
)
from sagalog.engine.sessions import Sessions
from sagalog.engine.workflow import Registry
from sagalog.replay.events import decode_event
from sagalog.replay.folding import load_state
from sagalog.replay.redact import Redactor
from sagalog.replay.saga import SagaFold, SagaState
from sagalog.replay.sessions import SessionState
from sagalog.storage import Journal, StreamFilter, StreamInfo

from sagalog.errors import (
    DecodingError,
    EncodingError,
    NonDeterminismError,
    NotFoundError,
    OperationalError,
    UnknownWorkflowError,
    WorkflowError,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The page's files, shipped in the package."""

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
SUMMARY_SCAN = 10_000
"""The summary counts the statuses of at most this many most recently active instances."""

SESSION_STATUSES = ("open", "closed", "expired")
WORKFLOW_PREFIX = "wf-"
SESSION_PREFIX = "session-"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,190}$")
_FILE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")

MetricsSource = Callable[[], Mapping[str, float]]
"""Current metric values by name (a worker's), for the summary."""

WorkersSource = Callable[[], list[dict[str, Any]]]
"""What the workers serving the console report about themselves."""


class ApiError(Exception):
    """A request the API refuses: answered with ``status`` and the error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


Route = Callable[[Request, "re.Match[str]"], Awaitable[Response]]


class Console:
    """The HTTP API (and the page's static files) over one journal namespace.

    Args:
        journal: the journal to read and act on.
        tokens: bearer tokens; empty means no authentication.
        registry: workflows this process knows (needed to unpark: the code must replay).
        static_dir: where ``index.html``, ``app.js`` and ``style.css`` are.
        metrics: current metric values, when a worker serves the console.
        workers: what the serving worker reports about itself.
        redactor: masks sensitive fields (default: ``SAGALOG_MASK_FIELDS``).
    """

    def __init__(
        self,
        journal: Journal,
        *,
        tokens: Tokens | None = None,
        registry: Registry | None = None,
        static_dir: Path = STATIC_DIR,
        metrics: MetricsSource | None = None,
        workers: WorkersSource | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.journal = journal
        self.tokens = tokens or Tokens()
        self.client = Client(journal, registry)
        self.sessions = Sessions(journal)
        self.static_dir = static_dir
        self.metrics = metrics
        self.workers = workers
        self.redactor = redactor or Redactor.from_env()
        self._fold = SagaFold()
        get, post = "GET", "POST"
        self._routes: list[tuple[re.Pattern[str], dict[str, Route]]] = [
            (re.compile(r"^/api/instances$"), {get: self._instances}),
            (re.compile(r"^/api/instances/([^/]+)$"), {get: self._instance}),
            (re.compile(r"^/api/instances/([^/]+)/timeline$"), {get: self._timeline}),
            (re.compile(r"^/api/instances/([^/]+)/state$"), {get: self._state}),
            (re.compile(r"^/api/instances/([^/]+)/cancel$"), {post: self._cancel}),
            (re.compile(r"^/api/instances/([^/]+)/signal$"), {post: self._signal}),
            (re.compile(r"^/api/instances/([^/]+)/retry$"), {post: self._retry}),
            (re.compile(r"^/api/instances/([^/]+)/skip-compensation$"), {post: self._skip}),
            (re.compile(r"^/api/sessions$"), {get: self._sessions}),
            (re.compile(r"^/api/sessions/([^/]+)$"), {get: self._session}),
            (re.compile(r"^/api/summary$"), {get: self._summary}),
            (re.compile(r"^/$"), {get: self._index}),
            (re.compile(r"^/static/([^/]+)$"), {get: self._static}),
        ]

    async def __call__(self, request: Request) -> Response:
        """Answer one request (the :class:`HttpServer` handler)."""
        try:
            if request.path.startswith("/api/") or request.path == "/api":
                self._authenticate(request)
            return await self._route(request)
        except ApiError as exc:
            extra = (("WWW-Authenticate", 'Bearer realm="sagalog"'),) if exc.status == 401 else ()
            return error_response(exc.status, exc.code, exc.message, extra)
        except OperationalError as exc:
            return error_response(503, "database_unavailable", f"the database is unreachable: {exc}")

    def _authenticate(self, request: Request) -> str:
        header = request.header("authorization")
        actor = self.tokens.actor(header)
        if actor is None:
            if not header:
                raise ApiError(
                    401, "unauthorized", "this console needs a token: send 'Authorization: Bearer <token>'"
                )
            raise ApiError(401, "unauthorized", "the token is wrong or not a Bearer token")
        return actor

    async def _route(self, request: Request) -> Response:
        for pattern, methods in self._routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                allowed = ", ".join(methods)
                message = f"{request.method} is not allowed on {request.path}; use {allowed}"
                return error_response(405, "method_not_allowed", message, (("Allow", allowed),))
            return await handler(request, match)
        raise ApiError(404, "not_found", f"there is no route {request.path!r}")

    # -- instances ------------------------------------------------------------

    async def _instances(self, request: Request, _: re.Match[str]) -> Response:
        query = Query(request)
        statuses = query.choices("status", STATUSES)
        workflow = query.text("workflow")
        session = query.text("session")
        since = query.time("since")
        limit = query.limit()
        query.done()
        rows: list[dict[str, Any]] = []
        page, offset = max(limit, 100), 0
        while len(rows) < limit:
            infos = await self.journal.list_streams(
                StreamFilter(prefix=WORKFLOW_PREFIX, since=since, limit=page, offset=offset)
            )
            for info in infos:
                state = await self._fold_listed(info)
                if statuses and state.status not in statuses:
                    continue
                if (workflow is not None and state.workflow != workflow) or (
                    session is not None and state.session_id != session
                ):
                    continue
                rows.append(instance_row(state, info))
                if len(rows) == limit:
                    break
            if len(infos) < page:
                break
            offset += page
        return json_response(200, {"instances": rows})

    async def _fold_listed(self, info: StreamInfo) -> SagaState:
        try:
            state, _ = await load_state(self.journal, info.stream_id, self._fold)
        except DecodingError:
            # An undecodable stream is listed (an operator should see it), as the replay tool does.
            bare = info.stream_id.removeprefix(WORKFLOW_PREFIX)
            return SagaState(bare, status="parked", version=info.version, parked_reason="undecodable events")
        return state

    async def _describe(self, match: re.Match[str]) -> SagaState:
        instance_id = match.group(1)
        if not _ID.match(instance_id):
            raise ApiError(404, "not_found", f"no workflow instance {instance_id!r}")
        try:
            return await self.client.describe(instance_id)
        except NotFoundError:
            raise ApiError(404, "not_found", f"no workflow instance {instance_id!r}") from None
        except DecodingError as exc:
            raise ApiError(
                409, "undecodable", f"workflow instance {instance_id!r} cannot be read: {exc}"
            ) from None

    async def _instance(self, request: Request, match: re.Match[str]) -> Response:
        Query(request).done()
        state = await self._describe(match)
        return json_response(200, instance_detail(state, self.redactor))

    async def _timeline(self, request: Request, match: re.Match[str]) -> Response:
        Query(request).done()
        state = await self._describe(match)
        stored = [e async for e in self.journal.iter_stream(WORKFLOW_PREFIX + state.instance_id)]
        decoded = []
        for event in stored:
            try:
                decoded.append((event.recorded_at, decode_event(event)))
            except DecodingError:
                break  # the steps up to the unreadable event; the events list shows the rest
        body = {
            "id": state.instance_id,
            "workflow": state.workflow,
            "status": state.status,
            "version": len(stored),
            "events": [event_json(e, self.redactor) for e in stored],
            "steps": timeline_steps(decoded),
        }
        return json_response(200, body)

    async def _state(self, request: Request, match: re.Match[str]) -> Response:
        query = Query(request)
        version = query.integer("version")
        query.done()
        current = await self._describe(match)
        stream = WORKFLOW_PREFIX + current.instance_id
        top = await self.journal.stream_version(stream)
        if version is None:
            version = top
        if not 1 <= version <= top:
            raise ApiError(400, "invalid_parameter", f"version must be between 1 and {top}, not {version}")
        state, _ = await load_state(self.journal, stream, self._fold, at_version=version)
        body = {
            "id": current.instance_id,
            "version": version,
            "max_version": top,
            "status": state.status,
            "state": self.redactor.plain(state),
        }
        return json_response(200, body)

    # -- sessions ----------------------------------------------------------------

    async def _sessions(self, request: Request, _: re.Match[str]) -> Response:
        query = Query(request)
        statuses = query.choices("status", SESSION_STATUSES)
        if len(statuses) > 1:
            raise ApiError(
                400, "invalid_parameter", "status of sessions takes one value: open, closed or expired"
            )
        kind = query.text("kind")
        limit = query.limit()
        query.done()
        found = await self.sessions.list_sessions(
            status=statuses[0] if statuses else None,  # type: ignore[arg-type]
            kind=kind,
            limit=limit,
        )
        return json_response(200, {"sessions": [session_row(s) for s in found]})

    async def _session(self, request: Request, match: re.Match[str]) -> Response:
        Query(request).done()
        session_id = match.group(1)
        state = await self._session_state(session_id)
        events = [e async for e in self.journal.iter_stream(SESSION_PREFIX + session_id)]
        return json_response(200, session_detail(state, events, self.redactor))

    async def _session_state(self, session_id: str) -> SessionState:
        if not _ID.match(session_id):
            raise ApiError(404, "not_found", f"no session {session_id!r}")
        try:
            return await self.sessions.get(session_id)
        except NotFoundError:
            raise ApiError(404, "not_found", f"no session {session_id!r}") from None

    # -- summary ---------------------------------------------------------------

    async def _summary(self, request: Request, _: re.Match[str]) -> Response:
        Query(request).done()
        instances: dict[str, int] = {}
        scanned, offset, page = 0, 0, 500
        while scanned < SUMMARY_SCAN:
            infos = await self.journal.list_streams(
                StreamFilter(prefix=WORKFLOW_PREFIX, limit=page, offset=offset)
            )
            for info in infos[: SUMMARY_SCAN - scanned]:
                status = (await self._fold_listed(info)).status
                instances[status] = instances.get(status, 0) + 1
            scanned += len(infos)
            if len(infos) < page:
                break
            offset += page
        sessions: dict[str, int] = {}
        for state in await self.sessions.list_sessions(limit=SUMMARY_SCAN):
            sessions[state.status] = sessions.get(state.status, 0) + 1
        body = {
            "instances": instances,
            "sessions": sessions,
            "scanned": min(scanned, SUMMARY_SCAN),
            "truncated": scanned >= SUMMARY_SCAN,
            "workers": self.workers() if self.workers is not None else [],
            "metrics": dict(self.metrics()) if self.metrics is not None else {},
            "now": iso(self.journal.clock.now()),
        }
        return json_response(200, body)

    # -- actions ---------------------------------------------------------------

    def _audit(self, request: Request, **extra: str) -> dict[str, str]:
        actor = self._authenticate(request)
        return {
            "actor": actor,
            "remote": request.remote,
            "via": "console",
            **{k: v for k, v in extra.items() if v},
        }

    async def _cancel(self, request: Request, match: re.Match[str]) -> Response:
        body = Body(request, {"reason": str})
        state = await self._describe(match)
        if state.terminal or state.status in ("compensating", "compensation_failed"):
            raise ApiError(
                409,
                "not_allowed",
                f"workflow {state.instance_id!r} is {state.status}: it cannot be cancelled",
            )
        if state.status == "parked":
            raise ApiError(
                409,
                "not_allowed",
                f"workflow {state.instance_id!r} is parked: retry (unpark) it once fixed, then cancel",
            )
        if state.cancel_requested is not None:
            raise ApiError(409, "not_allowed", f"workflow {state.instance_id!r} is already being cancelled")
        meta = self._audit(request)
        reason = body.get("reason") or f"cancelled by {meta['actor']} from the console"
        await self.client.cancel(state.instance_id, reason, metadata=meta)
        return await self._done(state.instance_id)

    async def _signal(self, request: Request, match: re.Match[str]) -> Response:
        body = Body(request, {"name": str, "payload": object}, required=("name",))
        name = body.get("name")
        if not name:
            raise ApiError(400, "invalid_body", "the signal name must be a non-empty string")
        state = await self._describe(match)
        if state.terminal:
            raise ApiError(
                409, "not_allowed", f"workflow {state.instance_id!r} has ended ({state.status}): no signal"
            )
        try:
            await self.client.signal(
                state.instance_id, name, body.get("payload"), metadata=self._audit(request)
            )
        except EncodingError as exc:
            raise ApiError(400, "invalid_body", str(exc)) from None
        except WorkflowError as exc:  # it ended since the check above
            raise ApiError(409, "not_allowed", str(exc)) from None
        return await self._done(state.instance_id)

    async def _retry(self, request: Request, match: re.Match[str]) -> Response:
        Body(request, {})
        state = await self._describe(match)
        meta = self._audit(request)
        try:
            if state.status == "parked":
                await self.client.unpark(state.instance_id, meta["actor"], metadata=meta)
            elif state.status == "compensation_failed":
                await self.client.retry_compensation(state.instance_id, meta["actor"], metadata=meta)
            else:
                raise ApiError(
                    409,
                    "not_allowed",
                    f"workflow {state.instance_id!r} is {state.status}: only a parked or "
                    "compensation_failed instance can be retried",
                )
        except (NonDeterminismError, UnknownWorkflowError, DecodingError) as exc:
            raise ApiError(409, "still_cannot_run", f"the instance stays parked: {exc}") from None
        except WorkflowError as exc:  # its status moved since the check above
            raise ApiError(409, "not_allowed", str(exc)) from None
        return await self._done(state.instance_id)

    async def _skip(self, request: Request, match: re.Match[str]) -> Response:
        body = Body(request, {"reason": str})
        state = await self._describe(match)
        if state.status != "compensation_failed":
            raise ApiError(
                409,
                "not_allowed",
                f"workflow {state.instance_id!r} is {state.status}: there is no failed compensation to skip",
            )
        meta = self._audit(request, reason=body.get("reason") or "")
        try:
            await self.client.skip_compensation(state.instance_id, meta["actor"], metadata=meta)
        except WorkflowError as exc:
            raise ApiError(409, "not_allowed", str(exc)) from None
        return await self._done(state.instance_id)

    async def _done(self, instance_id: str) -> Response:
        state = await self.client.describe(instance_id)
        return json_response(
            200, {"ok": True, "id": instance_id, "status": state.status, "version": state.version}
        )

    # -- the page -------------------------------------------------------------------

    async def _index(self, request: Request, _: re.Match[str]) -> Response:
        return await self._file("index.html")

    async def _static(self, request: Request, match: re.Match[str]) -> Response:
        return await self._file(match.group(1))

    async def _file(self, name: str) -> Response:
        path = self.static_dir / name
        kind = CONTENT_TYPES.get(path.suffix.lower())
        if not _FILE.match(name) or kind is None or not await anyio.Path(path).is_file():
            raise ApiError(404, "not_found", f"there is no file {name!r}")
        data = await anyio.Path(path).read_bytes()
        return Response(200, data, kind, (("Cache-Control", "no-cache"),))


# --- parsing what the client sent ------------------------------------------------------


class Query:
    """The query parameters of a request, each taken once; unknown ones are refused."""

    def __init__(self, request: Request) -> None:
        self._params = dict(request.query)

    def _one(self, name: str) -> str | None:
        values = self._params.pop(name, None)
        if values is None:
            return None
        if len(values) > 1:
            raise ApiError(400, "invalid_parameter", f"parameter {name!r} is given {len(values)} times")
        return values[0]

    def text(self, name: str) -> str | None:
        """A string parameter (an empty one counts as absent)."""
        return self._one(name) or None

    def choices(self, name: str, allowed: tuple[str, ...]) -> list[str]:
        """A comma-separated list of values, each one of ``allowed``."""
        raw = self._one(name)
        if not raw:
            return []
        values = [v.strip() for v in raw.split(",") if v.strip()]
        for value in values:
            if value not in allowed:
                raise ApiError(
                    400, "invalid_parameter", f"unknown {name} {value!r}: use one of {', '.join(allowed)}"
                )
        return values

    def integer(self, name: str) -> int | None:
        """A whole-number parameter."""
        raw = self._one(name)
        if raw is None or raw == "":
            return None
        try:
            return int(raw)
        except ValueError:
            raise ApiError(400, "invalid_parameter", f"{name} must be a whole number, not {raw!r}") from None

    def limit(self) -> int:
        """``limit``: 1 to :data:`MAX_LIMIT`, default :data:`DEFAULT_LIMIT`."""
        value = self.integer("limit")
        if value is None:
            return DEFAULT_LIMIT
        if not 1 <= value <= MAX_LIMIT:
            raise ApiError(400, "invalid_parameter", f"limit must be between 1 and {MAX_LIMIT}, not {value}")
        return value

    def time(self, name: str) -> datetime | None:
        """An ISO-8601 time (UTC unless it says otherwise)."""
        raw = self._one(name)
        if not raw:
            return None
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
        except ValueError:
            raise ApiError(
                400,
                "invalid_parameter",
                f"{name} must be an ISO-8601 time such as 2026-01-31T12:00:00Z, not {raw!r}",
            ) from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def done(self) -> None:
        """Refuse parameters nobody took (a typo would otherwise be silently ignored)."""
        if self._params:
            names = ", ".join(sorted(self._params))
            raise ApiError(400, "invalid_parameter", f"unknown query parameter(s): {names}")


class Body:
    """A JSON object body, checked against the fields an action takes.

    An empty body is an empty object. Unknown fields, wrong types and a body
    that is not a JSON object are refused with 400.
    """

    def __init__(self, request: Request, fields: dict[str, type], required: tuple[str, ...] = ()) -> None:
        self._values: dict[str, Any] = {}
        if request.body.strip():
            try:
                value = json.loads(request.body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
            if not isinstance(value, dict):
                raise ApiError(400, "invalid_body", "the request body must be a JSON object")
            self._values = value
        unknown = sorted(set(self._values) - set(fields))
        if unknown:
            allowed = ", ".join(fields) or "none"
            raise ApiError(400, "invalid_body", f"unknown field(s) {', '.join(unknown)} (allowed: {allowed})")
        for name in required:
            if name not in self._values:
                raise ApiError(400, "invalid_body", f"the field {name!r} is required")
        for name, kind in fields.items():
            if name in self._values and kind is not object and not isinstance(self._values[name], kind):
                raise ApiError(400, "invalid_body", f"the field {name!r} must be a {_json_type(kind)}")

    def get(self, name: str) -> Any:
        """A field's value, or None when absent."""
        return self._values.get(name)


def _json_type(kind: type) -> str:
    return {str: "string", int: "number", bool: "boolean", dict: "object", list: "array"}.get(
        kind, kind.__name__
    )
