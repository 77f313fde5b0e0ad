"""``sagalog worker MODULE [MODULE ...]``: run a worker process until SIGTERM."""

from __future__ import annotations

import argparse

from sagalog.errors import ConfigurationError

DESCRIPTION = """\
Import the modules (which define workflows and steps with @workflow/@step),
then claim ready workflow instances from the journal and advance them until
SIGTERM or SIGINT. The first signal drains (no new claims, in-flight steps get
the grace period, leases are released); a second one exits at once.
Every option can also be set with the environment variable shown.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``worker`` command."""
    parser = subparsers.add_parser(
        "worker",
        help="run a worker process for the given workflow modules",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("modules", nargs="+", metavar="MODULE", help="module to import, e.g. myapp.workflows")
    add = parser.add_argument
    add("--db", help="database URL (SAGALOG_DB; default: the embedded SQLite file .sagalog/journal.db)")
    add("--namespace", help="tenant namespace (SAGALOG_NAMESPACE; default: default)")
    add("--concurrency", type=int, help="instances in flight at once (SAGALOG_CONCURRENCY; default: 100)")
    add("--lease", type=float, dest="lease_seconds", metavar="SECONDS",
        help="lease duration; a dead worker's work moves on after this (SAGALOG_LEASE; default: 30)")
    add("--grace", type=float, dest="grace_seconds", metavar="SECONDS",
        help="how long in-flight work may finish after SIGTERM (SAGALOG_GRACE; default: 30)")
    add("--worker-id", help="lease owner name (SAGALOG_WORKER_ID; default: host-pid-random)")
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR (SAGALOG_LOG_LEVEL; default: INFO)")
    add("--log-format", choices=("auto", "json", "text"),
        help="json lines, text, or auto: json unless stderr is a terminal (SAGALOG_LOG_FORMAT)")
    add("--metrics-port", type=int, metavar="PORT",
        help="serve /metrics, /healthz and /readyz on this port (SAGALOG_METRICS_PORT; default: off)")
    add("--dashboard-port", type=int, metavar="PORT",
        help="serve the operator's console on this port (SAGALOG_DASHBOARD_PORT; default: off)")
    add("--dashboard-host", metavar="HOST",
        help="address the console listens on (SAGALOG_DASHBOARD_HOST; default: 127.0.0.1)")
    add("--dashboard-token", action="append", metavar="TOKEN",
        help="console token NAME=SECRET or SECRET, repeatable (SAGALOG_DASHBOARD_TOKEN, comma-separated)")
    add("--gc-threshold", type=int, metavar="N",
        help="allocations between garbage-collector passes; 0 keeps Python's 700 "
        "(SAGALOG_GC_THRESHOLD; default: 50000)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Build the settings from flags over environment variables and run the worker."""
    from sagalog.engine.worker_process import run_worker
    from sagalog.engine.worker_settings import settings_from_env

    settings = settings_from_env(
        db=args.db,
        namespace=args.namespace,
        concurrency=args.concurrency,
        lease_seconds=args.lease_seconds,
        grace_seconds=args.grace_seconds,
        worker_id=args.worker_id,
        log_level=args.log_level,
        log_format=args.log_format,
        metrics_port=args.metrics_port,
        dashboard_port=args.dashboard_port,
        dashboard_host=args.dashboard_host,
        dashboard_token=",".join(args.dashboard_token) if args.dashboard_token else None,
        gc_threshold=args.gc_threshold,
    )
    for module in args.modules:
        check_importable(module)
    return run_worker(settings, args.modules)


def check_importable(module: str) -> None:
    """Raise ConfigurationError with a hint when ``module`` cannot be found."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        found, error = None, str(exc)
    else:
        error = ""
    if found is None:
        raise ConfigurationError(
            f"cannot import workflow module {module!r}{': ' + error if error else ''} "
            "(is its directory on PYTHONPATH, and is it spelled as a dotted module name?)"
        )
