"""The workflow API: ``@workflow`` and ``@step``, and the registry that names them.

A ``@workflow`` is a generator function ``fn(ctx, *args)``; calling it inside
another workflow yields a child workflow call. A ``@step`` is an ``async
def`` or a plain ``def`` (run in a worker thread); calling it inside a
workflow returns a :class:`~sagalog.replay.commands.StepCall` to ``yield``.

Arguments and results travel as msgpack (msgspec). Typed values come back
typed: a workflow's arguments are converted to its parameters' annotations,
and a step's result to its return annotation (``-> Reservation`` gives a
``Reservation`` Struct back, not a dict); without annotations they come back
as plain msgpack values (dicts, lists, ...).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, get_type_hints, overload

import msgspec
from sagalog.engine.breaker import BreakerPolicy
from sagalog.engine.retry import RetryPolicy
from sagalog.replay.commands import ChildCall, StepCall
from sagalog.replay.executor import WorkflowContext
from sagalog.replay.sessions import Policy
from sagalog.storage import encode_value

from sagalog.errors import DecodingError, InvalidCommandError, UnknownWorkflowError, WorkflowError


class StepContext(msgspec.Struct, frozen=True):
    """What a running step knows about itself (see :func:`step_context`)."""

    instance_id: str
    """The workflow instance."""
    workflow: str
    """The workflow's name."""
    step: str
    """The step's name."""
    seq: int
    """The step's command index in the instance."""
    attempt: int
    """1, 2, 3, ...: grows with every retry and every crash-interrupted attempt."""
    sessions: Any = None
    """The runner's ``sagalog.engine.sessions.Sessions``, for the built-in session steps (issue 5)."""

    @property
    def idempotency_key(self) -> str:
        """``<instance>:<step index>``: the same for every attempt, to pass to external services."""
        return f"{self.instance_id}:{self.seq}"


CURRENT_STEP: ContextVar[StepContext | None] = ContextVar("sagalog_step", default=None)


def step_context() -> StepContext:
    """The running step's context (instance, step index, attempt, idempotency key).

    Raises:
        WorkflowError: called outside a step run by sagalog.
    """
    current = CURRENT_STEP.get()
    if current is None:
        raise WorkflowError("step_context() is only available inside a step run by sagalog")
    return current


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to untyped values
        return {}


def _typed(annotation: Any) -> Any:
    """``annotation`` if msgspec can decode into it, else Any."""
    if annotation is inspect.Parameter.empty:
        return Any
    try:
        msgspec.msgpack.Decoder(annotation)
    except TypeError:
        return Any
    return annotation


class _Callable:
    """What steps and workflows share: a name, a signature, encoded arguments."""

    kind = "step"

    def __init__(self, fn: Callable[..., Any], name: str, skip_first: bool) -> None:
        self.fn = fn
        self.name = name
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self._params = params[1:] if skip_first else params
        hints = _hints(fn)
        self._param_types = [_typed(hints.get(p.name, inspect.Parameter.empty)) for p in self._params]
        self._param_index = {p.name: i for i, p in enumerate(self._params)}
        self._bind_signature = self.signature.replace(parameters=self._params)
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self._all_positional = all(p.kind in plain for p in self._params)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """``args`` and ``kwargs`` as positional arguments, checked against the signature."""
        if not kwargs and self._all_positional and len(args) == len(self._params):
            return args  # what binding would give, without building a BoundArguments per call
        try:
            bound = self._bind_signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidCommandError(f"bad arguments for {self.kind} {self.name!r}: {exc}") from None
        bound.apply_defaults()
        return tuple(bound.args) + tuple(bound.kwargs.values())

    def check_encodable(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Refuse arguments msgspec cannot encode, naming the argument and its type."""
        names = [p.name for p in self._params]
        for index, value in enumerate(args):
            label = names[index] if index < len(names) else f"#{index}"
            encode_value(value, f"argument {label!r} of {self.name}")
        for key, value in kwargs.items():
            encode_value(value, f"argument {key!r} of {self.name}")

    def decode_args(self, data: bytes) -> tuple[Any, ...]:
        """Recorded arguments back to values, typed by the parameters' annotations."""
        try:
            raw = msgspec.msgpack.decode(data)
        except msgspec.DecodeError as exc:
            raise DecodingError(f"arguments of {self.name!r} cannot be decoded: {exc}") from exc
        if not isinstance(raw, list):
            raise DecodingError(f"arguments of {self.name!r} are not a list")
        return tuple(self._convert(value, index) for index, value in enumerate(raw))

    def decode_kwargs(self, data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """A step's recorded ``[args, kwargs]`` back to values."""
        try:
            args, kwargs = msgspec.msgpack.decode(data)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            raise DecodingError(f"arguments of step {self.name!r} cannot be decoded: {exc}") from exc
        convert = self._convert
        typed_args = tuple([convert(value, index) for index, value in enumerate(args)])
        if not kwargs:
            return typed_args, {}
        names = self._param_index
        typed_kwargs = {
            key: convert(value, names[key]) if key in names else value for key, value in kwargs.items()
        }
        return typed_args, typed_kwargs

    def _convert(self, value: Any, index: int) -> Any:
        types = self._param_types
        if index >= len(types) or (wanted := types[index]) is Any:
            return value
        try:
            return msgspec.convert(value, wanted, strict=False)
        except msgspec.ValidationError as exc:
            name = self._params[index].name
            wanted = getattr(self._param_types[index], "__name__", repr(self._param_types[index]))
            raise DecodingError(
                f"argument {name!r} of {self.name!r} does not fit its type {wanted}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}>"


class Step(_Callable):
    """A function registered with ``@step``; calling it inside a workflow gives a StepCall."""

    kind = "step"

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
    ) -> None:
        super().__init__(fn, name, skip_first=False)
        self.retry = retry
        self.breaker = breaker
        self.is_async = inspect.iscoroutinefunction(fn)
        self.result_type = _typed(_hints(fn).get("return", inspect.Parameter.empty))
        self._decoder = msgspec.msgpack.Decoder(self.result_type)

    def __call__(self, *args: Any, **kwargs: Any) -> StepCall:
        """A command to ``yield``: run this step durably with these arguments."""
        self.bind(args, kwargs)
        self.check_encodable(args, kwargs)
        return StepCall(self.name, args, kwargs)

    def decode_result(self, data: bytes) -> Any:
        """A recorded result back to a value of the return annotation."""
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecodingError(f"result of step {self.name!r} cannot be decoded: {exc}") from exc


class Workflow(_Callable):
    """A generator function registered with ``@workflow``."""

    kind = "workflow"

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        retry: RetryPolicy | None = None,
        *,
        session: bool = False,
        on_session_end: Policy = "cancel",
    ) -> None:
        super().__init__(fn, name, skip_first=True)
        self.retry = retry
        # -- sessions (issue 5) --
        self.session = session
        """Whether an instance must be started in a session (``session_id=...``)."""
        self.on_session_end: Policy = on_session_end
        """What happens to an instance when its session ends: cancel, signal or none."""

    def __call__(self, *args: Any, id: str | None = None, detached: bool = False) -> ChildCall:
        """A command to ``yield`` inside another workflow: run this one as a child."""
        self.bind(args, {})
        self.check_encodable(args, {})
        return ChildCall(self.name, args, id, detached)

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> bytes:
        """The arguments of a start, checked and encoded (errors name the argument)."""
        positional = self.bind(args, kwargs or {})
        self.check_encodable(positional, {})
        data = encode_value(list(positional), f"arguments of {self.name}")
        self.check_types(data)
        return data

    def check_types(self, data: bytes) -> None:
        """Refuse encoded arguments the workflow could not decode into its parameters' types.

        Caught at start, a wrong shape (``sagalog start`` with JSON missing a
        field) is the caller's error, instead of an instance that fails later.
        """
        try:
            self.decode_args(data)
        except DecodingError as exc:
            raise InvalidCommandError(str(exc)) from None

    def run(self, ctx: WorkflowContext, *args: Any) -> Any:
        """Call the generator function (the executor does this)."""
        return self.fn(ctx, *args)


class Registry:
    """Workflows and steps by name."""

    def __init__(self) -> None:
        self.workflows: dict[str, Workflow] = {}
        self.steps: dict[str, Step] = {}
        # issue 5: the built-in steps behind ctx.session, so that replay (and the
        # replay tool) decodes their recorded results as the live runner does.
        from sagalog.engine.session_steps import register_session_steps

        register_session_steps(self)

    def add(self, item: Workflow | Step) -> None:
        """Register a workflow or step (re-registering the same name replaces it)."""
        if isinstance(item, Workflow):
            self.workflows[item.name] = item
        else:
            self.steps[item.name] = item

    def workflow(self, name: str) -> Workflow:
        """The workflow registered as ``name``.

        Raises:
            UnknownWorkflowError: none is, naming the ones that are.
        """
        found = self.workflows.get(name)
        if found is None:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise UnknownWorkflowError(
                f"unknown workflow {name!r}: registered workflows are {known} "
                "(import the module that defines it, e.g. with --module)"
            )
        return found

    def step(self, name: str) -> Step:
        """The step registered as ``name`` (UnknownWorkflowError when none is)."""
        found = self.steps.get(name)
        if found is None:
            raise UnknownWorkflowError(f"unknown step {name!r}: it is not registered in this process")
        return found

    def resolve(self, workflow: Workflow | str | Callable[..., Any]) -> Workflow:
        """A workflow given as object, name, or the decorated function itself."""
        if isinstance(workflow, Workflow):
            self.workflows.setdefault(workflow.name, workflow)
            return workflow
        if isinstance(workflow, str):
            return self.workflow(workflow)
        raise UnknownWorkflowError(
            f"{workflow!r} is not a workflow: decorate it with @workflow or pass its registered name"
        )


DEFAULT_REGISTRY = Registry()
"""Where ``@workflow`` and ``@step`` register unless told otherwise."""


def load_modules(modules: Iterable[str], registry: Registry | None = None) -> Registry:
    """Import ``modules`` (which register their workflows and steps); return the registry.

    Raises:
        UnknownWorkflowError: a module cannot be imported.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UnknownWorkflowError(f"cannot import workflow module {module!r}: {exc}") from exc
    return registry or DEFAULT_REGISTRY


def _default_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}" if fn.__module__ != "__main__" else fn.__qualname__


@overload
def workflow(fn: Callable[..., Any], /) -> Workflow: ...


@overload
def workflow(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    registry: Registry | None = None,
    session: bool = False,
    on_session_end: Policy = "cancel",
) -> Callable[[Callable[..., Any]], Workflow]: ...


def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    registry: Registry | None = None,
    session: bool = False,
    on_session_end: Policy = "cancel",
) -> Workflow | Callable[[Callable[..., Any]], Workflow]:
    """Register a generator function ``fn(ctx, *args)`` as a workflow.

    Args:
        name: the name it is journaled under (default: ``module.qualname``);
            keep it stable across deployments.
        retry: the default retry policy of its steps.
        registry: where to register (default: the global registry).
        session: True if every instance must be started in a session
            (``start(..., session_id=...)``); it then uses ``ctx.session``.
        on_session_end: what happens to an instance started in a session
            when the session closes or expires: ``cancel`` (it compensates),
            ``signal`` (it receives the ``session_ended`` signal) or ``none``.
    """

    def wrap(func: Callable[..., Any]) -> Workflow:
        if not inspect.isgeneratorfunction(func):
            raise WorkflowError(
                f"@workflow needs a generator function (def {func.__name__}(ctx, ...) that yields "
                f"commands); {func.__name__} is not one"
            )
        if not inspect.signature(func).parameters:
            raise WorkflowError(f"workflow {func.__name__} must take ctx as its first parameter")
        if on_session_end not in ("cancel", "signal", "none"):
            raise WorkflowError(
                f"on_session_end of workflow {func.__name__} must be cancel, signal or none, "
                f"not {on_session_end!r}"
            )
        made = Workflow(
            func, name or _default_name(func), retry, session=session, on_session_end=on_session_end
        )
        (registry or DEFAULT_REGISTRY).add(made)
        return made

    return wrap(fn) if fn is not None else wrap


@overload
def step(fn: Callable[..., Any], /) -> Step: ...


@overload
def step(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    breaker: BreakerPolicy | None = None,
    registry: Registry | None = None,
) -> Callable[[Callable[..., Any]], Step]: ...


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    breaker: BreakerPolicy | None = None,
    registry: Registry | None = None,
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Register a function as a step (``async def`` runs on the loop, ``def`` in a thread).

    Args:
        name: the name it is journaled under (default: ``module.qualname``).
        retry: its retry policy (default: the workflow's, else ``Retry.exponential()``).
        breaker: a circuit breaker for it (shared by every instance in the process).
        registry: where to register (default: the global registry).
    """

    def wrap(func: Callable[..., Any]) -> Step:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise WorkflowError(
                f"@step needs a function that returns a value; {func.__name__} is a generator"
            )
        made = Step(func, name or _default_name(func), retry, breaker)
        (registry or DEFAULT_REGISTRY).add(made)
        return made

    return wrap(fn) if fn is not None else wrap


__all__ = [
    "DEFAULT_REGISTRY",
    "Registry",
    "Step",
    "StepContext",
    "Workflow",
    "load_modules",
    "step",
    "step_context",
    "workflow",
]
