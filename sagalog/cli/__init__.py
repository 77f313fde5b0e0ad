"""The ``sagalog`` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers)``; :func:`main` wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from sagalog.errors import SagalogError

# Modules that add commands; each has register(subparsers). A module missing
# here (not written yet) is skipped, so command groups can land one by one.
COMMAND_MODULES = (
    "sagalog.cli.admin",
    "sagalog.cli.workflows",
    "sagalog.cli.worker",
    "sagalog.cli.replay",
    "sagalog.cli.sessions",
    "sagalog.cli.dashboard",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="sagalog", description="Durable sagas on an append-only event log."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except SagalogError as exc:
        print(f"sagalog: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`sagalog replay show ID | head`): stop quietly,
        # and keep the interpreter from complaining while it flushes stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return status


if __name__ == "__main__":
    sys.exit(main())
