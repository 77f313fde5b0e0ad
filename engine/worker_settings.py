"""How a worker is configured: one frozen record, from flags or ``SAGALOG_*`` variables.

The command line (``sagalog worker``) and embedding code build the same
:class:`WorkerSettings`; :func:`settings_from_env` reads the environment so
a container needs no flags at all.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping

import msgspec
from sagalog.storage import DEFAULT_NAMESPACE, default_url

from sagalog.errors import ConfigurationError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("auto", "json", "text")


def default_worker_id() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in lease tables and logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a worker process needs to know besides its workflow modules."""

    db: str = ""
    """Database URL; empty means :func:`sagalog.storage.default_url` (the SQLite file)."""
    namespace: str = DEFAULT_NAMESPACE
    """Tenant namespace whose work this worker claims."""
    concurrency: int = 100
    """Instances (and so steps) in flight at once."""
    lease_seconds: float = 30.0
    """How long a claim lasts without a heartbeat; a crashed worker's instances
    are taken over this long after it died."""
    worker_id: str = ""
    """Lease owner name; empty means :func:`default_worker_id`."""
    log_level: str = "INFO"
    """One of DEBUG, INFO, WARNING, ERROR."""
    log_format: str = "auto"
    """json, text, or auto: JSON lines unless stderr is a terminal."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port (None: no metrics endpoint)."""
    grace_seconds: float = 30.0
    """On SIGTERM, how long in-flight instances may run before they are cancelled."""
    poll_seconds: float = 1.0
    """Longest wait between looks at the work index when nothing wakes the worker."""
    claim_batch: int = 50
    """Most streams claimed in one query."""
    dashboard_port: int | None = None
    """Serve the operator's console (JSON API and page) on this port (None: off)."""
    dashboard_host: str = "127.0.0.1"
    """Address the console listens on; beyond loopback it always needs a token."""
    dashboard_token: str = ""
    """Console tokens, comma-separated ``NAME=SECRET`` or ``SECRET`` (empty: none)."""
    gc_threshold: int = 50_000
    """Allocations between two passes of Python's garbage collector over its
    youngest objects (Python's own default is 700; 0 keeps it). A worker
    holds thousands of live instances, and at 700 the collector's passes
    over them took a quarter of its CPU."""

    @property
    def url(self) -> str:
        """The database URL to open."""
        return self.db or default_url()

    @property
    def owner(self) -> str:
        """The lease owner name."""
        return self.worker_id or default_worker_id()

    @property
    def heartbeat_seconds(self) -> float:
        """Leases are renewed three times per lease period, so one missed beat is harmless."""
        return self.lease_seconds / 3


def validate(settings: WorkerSettings) -> WorkerSettings:
    """Return ``settings`` unchanged, or raise ConfigurationError naming the bad field."""
    if settings.concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, not {settings.concurrency}")
    if settings.lease_seconds < 0.5:
        raise ConfigurationError(
            f"lease must be at least 0.5 seconds, not {settings.lease_seconds:g}"
        )
    if settings.grace_seconds < 0:
        raise ConfigurationError(f"grace period cannot be negative ({settings.grace_seconds:g})")
    if settings.poll_seconds <= 0:
        raise ConfigurationError(f"poll interval must be positive, not {settings.poll_seconds:g}")
    if settings.claim_batch < 1:
        raise ConfigurationError(f"claim batch must be at least 1, not {settings.claim_batch}")
    if settings.gc_threshold < 0:
        raise ConfigurationError(f"gc threshold cannot be negative ({settings.gc_threshold})")
    if settings.log_level.upper() not in LOG_LEVELS:
        raise ConfigurationError(
            f"unknown log level {settings.log_level!r}: use one of {', '.join(LOG_LEVELS)}"
        )
    if settings.log_format.lower() not in LOG_FORMATS:
        raise ConfigurationError(
            f"unknown log format {settings.log_format!r}: use one of {', '.join(LOG_FORMATS)}"
        )
    port = settings.metrics_port
    if port is not None and not 0 <= port <= 65535:
        raise ConfigurationError(f"metrics port must be between 0 and 65535, not {port}")
    port = settings.dashboard_port
    if port is not None and not 0 <= port <= 65535:
        raise ConfigurationError(f"dashboard port must be between 0 and 65535, not {port}")
    return settings


# Environment variable -> (field, converter). Flags override these.
ENVIRONMENT: dict[str, tuple[str, type]] = {
    "SAGALOG_DB": ("db", str),
    "SAGALOG_NAMESPACE": ("namespace", str),
    "SAGALOG_CONCURRENCY": ("concurrency", int),
    "SAGALOG_LEASE": ("lease_seconds", float),
    "SAGALOG_WORKER_ID": ("worker_id", str),
    "SAGALOG_LOG_LEVEL": ("log_level", str),
    "SAGALOG_LOG_FORMAT": ("log_format", str),
    "SAGALOG_METRICS_PORT": ("metrics_port", int),
    "SAGALOG_GRACE": ("grace_seconds", float),
    "SAGALOG_POLL": ("poll_seconds", float),
    "SAGALOG_DASHBOARD_PORT": ("dashboard_port", int),
    "SAGALOG_DASHBOARD_HOST": ("dashboard_host", str),
    "SAGALOG_DASHBOARD_TOKEN": ("dashboard_token", str),
    "SAGALOG_GC_THRESHOLD": ("gc_threshold", int),
}


def env_values(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The settings fields given by ``SAGALOG_*`` variables, converted.

    Raises:
        ConfigurationError: a variable holds a value of the wrong kind.
    """
    source = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, (field, convert) in ENVIRONMENT.items():
        raw = source.get(name, "").strip()
        if not raw:
            continue
        try:
            values[field] = convert(raw)
        except ValueError:
            raise ConfigurationError(
                f"{name}={raw!r} is not a valid {convert.__name__}"
            ) from None
    return values


def settings_from_env(
    environ: Mapping[str, str] | None = None, **overrides: object
) -> WorkerSettings:
    """Settings from ``SAGALOG_*`` variables, then ``overrides`` (None values ignored), validated."""
    values = env_values(environ)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = WorkerSettings(**values)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigurationError(f"invalid worker setting: {exc}") from None
    return validate(settings)
