"""Every ``sagalog ...`` command shown in the README and docs/ is one the command line accepts.

Shell blocks (```sh, ```console) are scanned; each line that runs ``sagalog``
is parsed by the real argument parser (nothing is executed), so a renamed
command or option fails here instead of in a reader's terminal.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sagalog.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = ("```sh", "```console", "```bash", "```shell")
COMMAND = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ )*(sagalog\s.*)$")


def shown_commands() -> list[tuple[str, str]]:
    """(where, command) for each sagalog command line in a shell block."""
    found = []
    for page in PAGES:
        inside = False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("```"):
                inside = stripped in SHELL_FENCES
                continue
            match = COMMAND.match(stripped) if inside else None
            if match:
                command = re.split(r"\s+#|\s+[|>]\s", match[1])[0]
                found.append((f"{page.relative_to(ROOT)}:{number}", command))
    return found


COMMANDS = shown_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 12


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_the_command_parses(where: str, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit:
        pytest.fail(f"{where}: `{command}` is refused: {capsys.readouterr().err.strip()}")
