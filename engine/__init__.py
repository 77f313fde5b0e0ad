"""Running workflows live: decorators, the in-process runner, steps, retries.

``engine`` owns concurrency and I/O; it builds on ``sagalog.replay`` (the
executor and the events) and ``sagalog.storage`` (the journal). The public
names are re-exported by the ``sagalog`` facade.
"""

from sagalog.engine.breaker import BreakerPolicy, Breakers, CircuitBreaker
from sagalog.engine.client import Client, SyncClient
from sagalog.engine.embedded import run, run_async
from sagalog.engine.retry import DEFAULT_RETRY, Retry, RetryPolicy, resolve_policy
from sagalog.engine.runner import Runner
from sagalog.engine.sessions import Sessions
from sagalog.engine.steps import StepTimeoutError
from sagalog.engine.worker import Worker
from sagalog.engine.worker_process import RunnerHandler
from sagalog.engine.worker_settings import WorkerSettings
from sagalog.engine.workflow import (
    DEFAULT_REGISTRY,
    Registry,
    Step,
    StepContext,
    Workflow,
    load_modules,
    step,
    step_context,
    workflow,
)

__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_RETRY",
    "BreakerPolicy",
    "Breakers",
    "CircuitBreaker",
    "Client",
    "Registry",
    "Retry",
    "RetryPolicy",
    "Runner",
    "RunnerHandler",
    "Sessions",
    "Step",
    "StepContext",
    "StepTimeoutError",
    "SyncClient",
    "Worker",
    "WorkerSettings",
    "Workflow",
    "load_modules",
    "resolve_policy",
    "run",
    "run_async",
    "step",
    "step_context",
    "workflow",
]
