"""The reference pages name everything public: docs/api.md every name of ``sagalog.__all__``,
docs/cli.md every command and option of the command line.

A name added to the facade or an option added to a command fails here until
the page mentions it, so the reference cannot fall behind the code.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import sagalog
from sagalog.cli import build_parser

DOCS = Path(__file__).resolve().parent.parent / "docs"


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path (``("replay", "list")``) with a parser of its own."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name)
                yield from commands(sub, (*path, name))


def options(path: tuple[str, ...]) -> list[str]:
    """The option strings of one command (``--help`` aside)."""
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return [o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")]


@pytest.mark.parametrize("name", sagalog.__all__)
def test_api_page_names_every_public_name(name: str) -> None:
    assert re.search(rf"`[^`]*\b{name}\b[^`]*`", (DOCS / "api.md").read_text()), (
        f"docs/api.md does not mention sagalog.{name}"
    )


COMMANDS = list(commands(build_parser()))


def test_the_command_line_has_commands() -> None:
    assert ("replay", "verify") in COMMANDS and ("admin", "rebuild") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_cli_page_names_every_command_and_option(path: tuple[str, ...]) -> None:
    page = (DOCS / "cli.md").read_text()
    assert f"sagalog {' '.join(path)}" in page, f"docs/cli.md does not show `sagalog {' '.join(path)}`"
    missing = [o for o in options(path) if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", page)]
    assert missing == [], f"docs/cli.md does not mention {missing} of `sagalog {' '.join(path)}`"
