"""Every chapter in _toc.yml (and the template) executes without error under the smoke profile."""

from __future__ import annotations

import re

import jupytext
import pytest
from nbclient import NotebookClient

from analysis.config import ROOT


def toc_chapters() -> list[str]:
    toc = (ROOT / "_toc.yml").read_text()
    return re.findall(r"^\s*(?:root|-\s*file):\s*(\S+)\s*$", toc, flags=re.M)


def test_toc_lists_existing_chapters():
    chapters = toc_chapters()
    assert chapters and chapters[0] == "book/intro"
    for chapter in chapters:
        assert (ROOT / f"{chapter}.md").exists(), chapter


@pytest.mark.chapter
@pytest.mark.parametrize("chapter", toc_chapters() + ["book/_template"])
def test_chapter_executes_under_smoke(chapter, monkeypatch):
    monkeypatch.setenv("ANALYSIS_PROFILE", "smoke")
    monkeypatch.setenv("ANALYSIS_QUIET", "1")
    nb = jupytext.read(ROOT / f"{chapter}.md")
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "book")}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    stem = chapter.rsplit("/", 1)[-1].lstrip("_")
    assert f"chapter {stem!r}, profile: smoke" in text  # book.start(<its own name>) ran under smoke
    assert "under the 'smoke' profile" in text.split(f"chapter {stem!r}, profile: smoke", 1)[1]  # book.finish()
    warnings = [
        line
        for o in outputs
        if o.get("name") == "stderr"
        for line in o.get("text", "").splitlines()
        if "Warning" in line or "Traceback" in line
    ]
    assert not warnings, f"{chapter} printed warnings into the page: {warnings[:3]}"
