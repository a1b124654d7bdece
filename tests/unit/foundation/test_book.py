"""analysis.book: the chapter helpers record what a chapter did and export what it showed."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from analysis import book, cache, memory


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


def test_finish_records_where_the_time_and_memory_went(sandbox):
    now = [0.0]  # an injected clock: the computations below advance it instead of sleeping

    def work(seconds: float) -> float:
        now[0] += seconds
        return seconds

    store = cache.DiskCache(sandbox / "c")
    run = dict(cache=store, clock=lambda: now[0])
    cache.cached("demo/before", lambda: work(5.0), config={"a": 1}, **run)  # another chapter's
    book.start("demo", "smoke")
    cache.cached("demo/fast", lambda: work(0.25), config={"a": 1}, **run)
    cache.cached("demo/slow", lambda: work(1.5), config={"a": 1}, **run)
    cache.cached("demo/slow", lambda: work(1.5), config={"a": 2}, **run)
    cache.cached("demo/slow", lambda: work(1.5), config={"a": 1}, **run)  # a hit costs nothing
    cache.cached("demo/before", lambda: work(5.0), config={"a": 1}, **run)  # served from the cache
    book.finish()
    (record,) = book.run_records("smoke")
    ran = record["computations"]
    assert list(ran) == ["demo/slow", "demo/fast"]  # slowest first; the other chapter's is not here
    assert (ran["demo/slow"]["runs"], ran["demo/slow"]["seconds"], ran["demo/fast"]["seconds"]) == (2, 3.0, 0.2)
    assert record["served from the cache"] == ["demo/before"]
    assert (record["cache hits"], record["cache misses"]) == (2, 3)
    if memory.rss() is not None:  # each computation that ran has its measured host peak
        assert ran["demo/fast"]["peak MiB, host RSS"] > 0 and "added MiB, host RSS" in ran["demo/fast"]


def test_timed_prints_the_seconds_of_its_block(capsys):
    ticks = iter([10.0, 13.4])
    with book.timed("the SAEs", clock=lambda: next(ticks)):
        pass
    assert capsys.readouterr().out == "the SAEs ready in 3 s\n"


def test_config_shows_fields_nested_first_as_text(sandbox):
    @dataclasses.dataclass
    class Inner:
        k: int = 4

    @dataclasses.dataclass
    class Outer:
        steps: int = 10
        layers: tuple[int, ...] = (0, 2)
        model: str | None = None
        inner: Inner = dataclasses.field(default_factory=Inner)
        extra: dict = dataclasses.field(default_factory=dict)

    book.start("demo", "smoke", banner=False)
    book.config(Outer(), "sizes (smoke)", skip=("extra",))
    written = (sandbox / "cache" / "book_results" / "smoke" / "demo" / "sizes.csv").read_text()
    assert written == ',sizes (smoke)\ninner.k,4\nsteps,10\nlayers,"(0, 2)"\nmodel,\n'


def test_seed_vs_ours_sets_the_seed_beside_ours():
    frame = book.seed_vs_ours({"ppl": 5.5, "only theirs": 1.0}, {"size": 3, "ppl": 7.25}, "seed 004", "ours")
    assert list(frame.columns) == ["seed 004", "ours"]
    assert list(frame.index) == ["size", "ppl", "only theirs"]
    assert frame.loc["ppl"].tolist() == [5.5, 7.25]
    assert frame.isna().to_numpy().tolist() == [[True, False], [False, False], [False, True]]


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
    assert list(v) == list(book.PINNED)
    assert v["torch"] != "not installed" and v["sae-lens"] != "not installed"
