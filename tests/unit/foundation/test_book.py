"""analysis.book: the chapter helpers record what a chapter did and export what it showed."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis import book, cache


@pytest.fixture()
def sandbox(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "CACHE_DIR", tmp_path / "cache")
    return tmp_path


def test_finish_records_runtime_profile_and_cache_use(sandbox, capsys):
    book.start("demo", "smoke")
    cache.cached("demo/x", lambda: 1, config={"a": 1}, cache=cache.DiskCache(sandbox / "c"))
    cache.cached("demo/x", lambda: 1, config={"a": 1}, cache=cache.DiskCache(sandbox / "c"))
    book.finish()
    out = capsys.readouterr().out
    assert "chapter 'demo', profile: smoke" in out and "under the 'smoke' profile" in out
    (record,) = book.run_records("smoke")
    assert (record["chapter"], record["profile"], record["cache hits"], record["cache misses"]) == (
        "demo",
        "smoke",
        1,
        1,
    )
    assert record["cores"] >= 1 and record["seconds"] >= 0
    assert book.run_records("cpu") == []


def test_finish_records_where_the_time_went(sandbox):
    import time

    store = cache.DiskCache(sandbox / "c")
    cache.cached("demo/before", lambda: time.sleep(1.1), config={"a": 1}, cache=store)  # another chapter's
    book.start("demo", "smoke")
    cache.cached("demo/slow", lambda: time.sleep(1.2), config={"a": 1}, cache=store)
    cache.cached("demo/slow", lambda: time.sleep(1.2), config={"a": 1}, cache=store)  # a hit costs nothing
    cache.cached("demo/fast", lambda: 1, config={"a": 1}, cache=store)
    book.finish()
    (record,) = book.run_records("smoke")
    assert list(record["slowest computations"]) == ["demo/slow"]  # under a second is left out
    assert 1.2 <= record["slowest computations"]["demo/slow"] < 2.4


def test_table_writes_csv_and_verdict_json(sandbox):
    book.start("demo", "smoke", banner=False)
    frame = pd.DataFrame({"claim": ["a", "b"], "verdict": ["reproduced", "not reproduced"]}).set_index("claim")
    book.table(frame, "verdicts", verdicts=True)
    folder = sandbox / "cache" / "book_results" / "smoke" / "demo"
    assert pd.read_csv(folder / "verdicts.csv", index_col=0).equals(frame)
    assert [r["verdict"] for r in json.loads((folder / "verdicts.json").read_text())] == [
        "reproduced",
        "not reproduced",
    ]
    with pytest.raises(ValueError, match="needs a name"):
        book.table(frame, "  ")


def test_versions_name_the_pinned_packages():
    v = book.versions()
    assert v["torch"].startswith("2.13") and v["sae-lens"] != "not installed"
