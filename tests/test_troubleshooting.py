"""Every message docs/troubleshooting.md quotes is one the code can print.

The page quotes messages in ```text blocks, with ``…`` where a value goes.
Each quoted line must be matched by a message template of the source: a
string literal (f-strings and implicitly joined literals included) whose
placeholders (``{…}``, ``%s``) match anything.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "troubleshooting.md"
SOURCES = ["engine", "replay", "storage", "sagalog"]
PERCENT = re.compile(r"%(?:\.\d+)?[sdfr]")


def quoted_messages() -> list[str]:
    """The lines of the page's ```text blocks, without the command line's prefix."""
    lines, inside = [], False
    for line in PAGE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            inside = stripped == "```text"
            continue
        if inside and stripped:
            lines.append(stripped.removeprefix("sagalog: error: "))
    return lines


def template(node: ast.AST) -> str | None:
    """A string literal as text with ``…`` for each placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return PERCENT.sub("…", node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(
            PERCENT.sub("…", part.value) if isinstance(part, ast.Constant) else "…" for part in node.values
        )
    return None


def templates() -> list[re.Pattern[str]]:
    """Every string literal of the package as a pattern where placeholders match anything."""
    found = []
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                text = template(node)
                # A template that is mostly placeholders (f"{exc}") would match anything.
                if text and len(text.replace("…", "")) >= 12:
                    pattern = ".*".join(re.escape(part) for part in text.split("…"))
                    found.append(re.compile(pattern))
    return found


def test_the_page_quotes_messages() -> None:
    assert len(quoted_messages()) >= 15


def test_every_quoted_message_is_printed_by_the_code() -> None:
    patterns = templates()
    stale = [line for line in quoted_messages() if not any(p.fullmatch(line) for p in patterns)]
    assert stale == [], f"troubleshooting.md quotes messages the code no longer prints: {stale}"
