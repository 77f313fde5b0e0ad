"""Optional OpenTelemetry spans for workflows, steps and compensations.

An instance has one trace. Its context travels in the journal, as a W3C
``traceparent`` in the metadata of the events the engine appends: starting
an instance records the caller's current span (or a new root span) on
``WorkflowStarted``, and whichever worker advances the instance later reads
it back and opens its spans as children of it. A saga resumed by another
worker, days later, therefore continues the same trace.

Spans: ``workflow <name>`` for each advance (a worker running the instance
as far as it can go), ``step <name>`` and ``compensation <name>`` for each
attempt. Configure an SDK ``TracerProvider`` as usual
(``opentelemetry.trace.set_tracer_provider``) to export them.

Without the ``opentelemetry-api`` package every call here is a no-op that
allocates nothing (``pip install 'sagalog[otel]'`` turns it on).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sagalog.storage import Event

try:  # optional dependency: absent means tracing is off, at no cost
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised by a test that hides the package
    otel_trace = None  # type: ignore[assignment]
    TraceContextTextMapPropagator = None  # type: ignore[assignment,misc]

RECHECK_SECONDS = 1.0
"""How often a Tracing on the global provider looks whether a program has set one."""

TRACEPARENT = "traceparent"
"""The event metadata key holding the instance's trace context."""

Attributes = Mapping[str, str | int]


def trace_id_of(traceparent: str | None) -> str:
    """The 32 hex digits of the trace id in a ``traceparent`` ("" for None or a malformed one)."""
    if not traceparent:
        return ""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


def trace_of(events: Sequence[Event]) -> str | None:
    """An instance's trace context: the first ``traceparent`` its events carry (None: none yet)."""
    for event in events:
        found = event.metadata.get(TRACEPARENT)
        if found:
            return found
    return None


class SpanHandle:
    """The span a ``with Tracing.span(...)`` block runs in."""

    __slots__ = ("_span", "traceparent")

    def __init__(self, span: Any = None, traceparent: str | None = None) -> None:
        self._span = span
        self.traceparent = traceparent
        """This span's context as a ``traceparent`` (None when tracing is off or not recording)."""

    def fail(self, error: BaseException) -> None:
        """Record ``error`` on the span and mark it failed (an attempt's error is not raised)."""
        if self._span is not None:
            self._span.record_exception(error)
            self._span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, str(error)))


NO_SPAN = SpanHandle()


class Tracing:
    """Starts the engine's spans with ``provider`` (default: the global tracer provider).

    ``enabled`` is False when OpenTelemetry is not installed; then every method is a no-op.
    """

    def __init__(self, provider: Any = None) -> None:
        self.enabled = otel_trace is not None
        self._provider = provider
        self._tracer: Any = None
        self._propagator = TraceContextTextMapPropagator() if self.enabled else None
        self._global_set = False
        self._next_look = 0.0

    def recording(self) -> bool:
        """Whether spans may be recorded: a provider was given or one was set globally.

        Until a program sets one, the global provider is a proxy whose spans
        record nothing; skipping them then keeps the API-only case as cheap
        as the uninstalled one.
        """
        if not self.enabled:
            return False
        if self._provider is not None or self._global_set:
            return True
        # Looking costs an os.environ lookup per call (a few % of a worker's CPU
        # when done per span), and a global provider is set once for good: look
        # at most every RECHECK_SECONDS until one appears.
        now = time.monotonic()
        if now < self._next_look:
            return False
        self._next_look = now + RECHECK_SECONDS
        self._global_set = not isinstance(otel_trace.get_tracer_provider(), otel_trace.ProxyTracerProvider)
        return self._global_set

    def _get_tracer(self) -> Any:
        if self._tracer is None:
            # With the global provider this is a proxy that follows a provider set later.
            provider = self._provider or otel_trace.get_tracer_provider()
            self._tracer = provider.get_tracer("sagalog")
        return self._tracer

    def _inject(self, span: Any) -> str | None:
        if not span.get_span_context().is_valid:
            return None  # no SDK configured: nothing to carry
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=otel_trace.set_span_in_context(span))  # type: ignore[union-attr]
        return carrier.get(TRACEPARENT)

    def start_trace(self, name: str, attributes: Attributes) -> str | None:
        """The ``traceparent`` for a new instance: the caller's current span when there is
        one, else a new root span named ``name`` (ended at once)."""
        if not self.recording():
            return None
        current = otel_trace.get_current_span()
        if current.get_span_context().is_valid:
            return self._inject(current)
        span = self._get_tracer().start_span(name, attributes=attributes)
        span.end()
        return self._inject(span)

    def span(
        self, name: str, parent: str | None, attributes: Attributes
    ) -> AbstractContextManager[SpanHandle]:
        """A span named ``name``, child of ``parent`` (a ``traceparent``; None: a new trace)."""
        if not self.recording():
            return contextlib.nullcontext(NO_SPAN)
        return self._span(name, parent, attributes)

    @contextlib.contextmanager
    def _span(self, name: str, parent: str | None, attributes: Attributes) -> Iterator[SpanHandle]:
        assert self._propagator is not None
        # Explicitly the instance's context, not whatever span the caller has:
        # the trace belongs to the instance, whichever worker runs it.
        context = self._propagator.extract({TRACEPARENT: parent}) if parent else None
        with self._get_tracer().start_as_current_span(name, context=context, attributes=attributes) as span:
            yield SpanHandle(span, self._inject(span))


TRACING = Tracing()
"""The engine's default: the global tracer provider."""
