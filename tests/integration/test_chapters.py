"""Every chapter in _toc.yml (and the template) executes without error under the smoke profile,
and every chapter runs its ``gpu``-profile code path on tiny random checkpoints of the profile's
hub models (toy sizes; nothing downloads)."""

from __future__ import annotations

import dataclasses
import json
import re

import jupytext
import pytest
from nbclient import NotebookClient

from analysis.config import OVERRIDES_ENV, PROFILES, ROOT, size_fields
from analysis.models import HUB_MODELS, MODELS_DIR_ENV, load_model
from analysis.studies import registry


def toc_chapters() -> list[str]:
    toc = (ROOT / "_toc.yml").read_text()
    return re.findall(r"^\s*(?:root|-\s*file):\s*(\S+)\s*$", toc, flags=re.M)


def test_toc_lists_existing_chapters():
    chapters = toc_chapters()
    assert chapters and chapters[0] == "book/intro"
    for chapter in chapters:
        assert (ROOT / f"{chapter}.md").exists(), chapter


def execute(chapter: str, profile: str) -> list[dict]:
    """Execute one chapter in a fresh kernel (environment as set); its code cells' outputs.

    Fails on any error (nbclient names the cell), and on any warning or traceback printed into
    the page, and unless ``book.start`` and ``book.finish`` both ran under ``profile``."""
    nb = jupytext.read(ROOT / f"{chapter}.md")
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "book")}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    stem = chapter.rsplit("/", 1)[-1].lstrip("_")
    banner = f"chapter {stem!r}, profile: {profile}"
    assert banner in text  # book.start(<its own name>) ran under the profile
    assert f"under the {profile!r} profile" in text.split(banner, 1)[1]  # book.finish()
    warnings = [
        line
        for o in outputs
        if o.get("name") == "stderr"
        for line in o.get("text", "").splitlines()
        if "Warning" in line or "Traceback" in line
    ]
    assert not warnings, f"{chapter} printed warnings into the page: {warnings[:3]}"
    return outputs


@pytest.mark.chapter
@pytest.mark.parametrize("chapter", toc_chapters() + ["book/_template"])
def test_chapter_executes_under_smoke(chapter, monkeypatch):
    monkeypatch.setenv("ANALYSIS_PROFILE", "smoke")
    monkeypatch.setenv("ANALYSIS_QUIET", "1")
    execute(chapter, "smoke")


def toy_sizes(gpu, smoke) -> dict:
    """The ``gpu`` config with ``smoke``'s sizes: the fields marked as sizes
    (:func:`analysis.config.size_fields`) come from ``smoke``; models, methods, switches and layer
    choices stay ``gpu``'s."""
    changes = {}
    for name in size_fields(gpu):
        theirs = getattr(smoke, name)
        if dataclasses.is_dataclass(theirs):
            changes[name] = dataclasses.asdict(theirs)
        elif isinstance(theirs, tuple) and theirs and dataclasses.is_dataclass(theirs[0]):
            changes[name] = [dataclasses.asdict(v) for v in theirs]
        else:
            changes[name] = theirs
    return changes


@pytest.fixture(scope="module")
def gpu_toy(tmp_path_factory, smollm2, tiny_checkpoint):
    """A folder of tiny random checkpoints under every hub name the ``gpu`` profile uses, and a
    profile-overrides file that gives ``gpu`` the smoke profile's sizes on the CPU."""
    root = tmp_path_factory.mktemp("gpu_toy")
    for name in HUB_MODELS:
        encoder = name.startswith("bert")
        tok = load_model("minilm-l6").tokenizer if encoder else smollm2.tokenizer
        tiny_checkpoint(root / "models" / name, name, layers=4, tokenizer=tok)
    # random weights know no fact: the toy run keeps every screened one ("fact_screen": "all")
    profile = toy_sizes(PROFILES["gpu"], PROFILES["smoke"]) | {"device": "cpu", "fact_screen": "all"}
    tables = {key: registry.configs(key) for key in registry.STUDIES}
    profile["extra"] = {key: toy_sizes(t["gpu"], t["smoke"]) for key, t in tables.items()}
    (root / "overrides.json").write_text(json.dumps({"gpu": profile}, indent=1))
    return root


@pytest.mark.chapter
@pytest.mark.parametrize("chapter", toc_chapters())
def test_chapter_runs_its_gpu_code_path_on_tiny_hub_architectures(chapter, monkeypatch, gpu_toy):
    monkeypatch.setenv("ANALYSIS_PROFILE", "gpu")
    monkeypatch.setenv("ANALYSIS_QUIET", "1")
    monkeypatch.setenv(OVERRIDES_ENV, str(gpu_toy / "overrides.json"))
    monkeypatch.setenv(MODELS_DIR_ENV, str(gpu_toy / "models"))
    monkeypatch.setenv("ANALYSIS_CACHE_DIR", str(gpu_toy / "cache"))
    text = "".join(o.get("text", "") for o in execute(chapter, "gpu"))
    assert "SmolLM2-135M-Instruct" not in text  # no fallback to the embedded model
