"""The code in the docs and the README runs: every ```python block marked ``<!-- run -->`` is executed.

A block marked runnable runs as its own little module, in a fresh namespace,
with the working directory in a temporary folder and ``SAGALOG_DB`` pointing at
a SQLite file there, so ``sagalog.run`` in a snippet never touches the
repository. Blocks of one page marked ``<!-- run: continue -->`` run in the
namespace of the runnable block before them (for a walkthrough in steps).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = [
    "concepts.md", "api.md", "replay-tool.md", "storage.md", "operations.md", "guarantees.md", "../README.md"
]

MARKER = re.compile(r"^<!--\s*run(?P<continue>:\s*continue)?\s*-->\s*$")
FENCE = re.compile(r"^```python\s*$")


@dataclass(frozen=True)
class Snippet:
    """One runnable block of a page."""

    page: str
    line: int
    code: str
    continues: bool


def snippets(page: str) -> list[Snippet]:
    """The runnable blocks of ``page``, in order."""
    lines = (DOCS / page).read_text().splitlines()
    found: list[Snippet] = []
    index = 0
    while index < len(lines):
        marker = MARKER.match(lines[index].strip())
        if marker is None:
            index += 1
            continue
        start = index + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        if start >= len(lines) or not FENCE.match(lines[start].strip()):
            raise AssertionError(f"{page}:{index + 1}: <!-- run --> is not followed by a ```python block")
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end >= len(lines):
            raise AssertionError(f"{page}:{start + 1}: unterminated ```python block")
        code = "\n".join(lines[start + 1 : end])
        found.append(Snippet(page, start + 2, code, marker.group("continue") is not None))
        index = end + 1
    return found


def groups(page: str) -> list[list[Snippet]]:
    """Runnable blocks grouped so that each ``continue`` block joins the one before."""
    out: list[list[Snippet]] = []
    for snippet in snippets(page):
        if snippet.continues:
            if not out:
                raise AssertionError(f"{page}:{snippet.line}: <!-- run: continue --> with nothing before it")
            out[-1].append(snippet)
        else:
            out.append([snippet])
    return out


CASES = [
    pytest.param(group, id=f"{page}:{group[0].line}")
    for page in PAGES
    if (DOCS / page).exists()
    for group in groups(page)
]


@pytest.mark.parametrize("group", CASES)
def test_doc_snippet_runs(group: list[Snippet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAGALOG_DB", f"sqlite:///{tmp_path / 'journal.db'}")
    namespace: dict[str, object] = {"__name__": f"docs_{Path(group[0].page).stem}_{group[0].line}"}
    for snippet in group:
        # Pad with blank lines so a traceback's line number is the page's.
        source = "\n" * (snippet.line - 1) + snippet.code
        exec(compile(source, str(DOCS / snippet.page), "exec"), namespace)


def python_blocks(page: str) -> list[tuple[int, str]]:
    """Every ```python block of ``page`` (runnable or not), with its first line number."""
    lines = (DOCS / page).read_text().splitlines()
    blocks: list[tuple[int, str]] = []
    start: int | None = None
    for number, line in enumerate(lines, start=1):
        if start is None and FENCE.match(line.strip()):
            start = number + 1
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines[start - 1 : number - 1])))
            start = None
    return blocks


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_compiles(page: str) -> None:
    """Blocks that are not run (signatures, fragments) are at least valid Python."""
    for line, code in python_blocks(page):
        source = "\n" * (line - 1) + code
        compile(source, str(DOCS / page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_both_pages_have_runnable_snippets() -> None:
    for page in PAGES:
        assert (DOCS / page).exists(), f"docs/{page} is missing"
        assert snippets(page), f"docs/{page} has no <!-- run --> block"


def test_the_extractor_finds_marked_blocks_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```python\nskipped = 1\n```\n<!-- run -->\n```python\na = 1\n```\n"
        "<!-- run: continue -->\n\n```python\nb = a + 1\n```\n"
    )
    monkeypatch.setitem(globals(), "DOCS", tmp_path)
    found = snippets("page.md")
    assert [(s.line, s.code, s.continues) for s in found] == [(7, "a = 1", False), (12, "b = a + 1", True)]
    assert [[s.code for s in g] for g in groups("page.md")] == [["a = 1", "b = a + 1"]]


def test_a_marker_without_a_block_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.md").write_text("<!-- run -->\nplain text\n")
    monkeypatch.setitem(globals(), "DOCS", tmp_path)
    with pytest.raises(AssertionError, match=r"bad.md:1: <!-- run --> is not followed by a ```python block"):
        snippets("bad.md")
