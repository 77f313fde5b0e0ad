"""The runnable examples of docs/sessions.md run (each ``<!-- run -->`` block)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "sessions.md"
BLOCK = re.compile(r"^<!-- run -->\n```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[int, str]]:
    text = PAGE.read_text()
    return [(text[: m.start(1)].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_the_page_has_examples() -> None:
    assert len(blocks()) == 2


@pytest.mark.parametrize(("line", "code"), blocks(), ids=[f"line {line}" for line, _ in blocks()])
def test_example_runs(line: int, code: str) -> None:
    source = "\n" * (line - 1) + code  # keep the page's line numbers in tracebacks
    exec(compile(source, str(PAGE), "exec"), {"__name__": f"sessions_doc_{line}"})
