"""analysis.config profiles and the analysis.cache disk cache."""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
import types

import pytest
import torch

from analysis import cache
from analysis.cache import CacheError, DiskCache, cache_key, cached, cached_map
from analysis.config import PROFILES, Profile, get_profile


def test_profiles_scale_up():
    smoke, cpu, gpu = (PROFILES[n] for n in ("smoke", "cpu", "gpu"))
    for field in ("eval_tokens", "calib_tokens", "n_facts", "n_probe_examples"):
        assert getattr(smoke, field) < getattr(cpu, field) < getattr(gpu, field), field


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("ANALYSIS_PROFILE", "gpu")
    assert get_profile().name == "gpu"
    monkeypatch.delenv("ANALYSIS_PROFILE")
    assert get_profile().name == "cpu"
    assert get_profile("smoke") is PROFILES["smoke"]


def test_unknown_profile_says_what_to_do(monkeypatch):
    monkeypatch.setenv("ANALYSIS_PROFILE", "laptop")
    with pytest.raises(ValueError, match="smoke, cpu, gpu.*ANALYSIS_PROFILE"):
        get_profile()


def test_key_depends_on_every_input():
    base = cache_key("f", {"a": 1}, "m")
    assert base == cache_key("f", {"a": 1}, "m")
    assert len({base, cache_key("g", {"a": 1}, "m"), cache_key("f", {"a": 2}, "m"), cache_key("f", {"a": 1}, "n")}) == 4
    assert cache_key("p", PROFILES["smoke"]) != cache_key("p", PROFILES["cpu"])
    assert cache_key("p", Profile("x")) == cache_key("p", Profile("x"))


def test_cached_computes_once(tmp_path):
    cache, calls = DiskCache(tmp_path), []

    def compute():
        calls.append(1)
        return {"t": torch.arange(3)}

    a = cached("thing", compute, {"n": 3}, cache=cache)
    b = cached("thing", compute, {"n": 3}, cache=cache)
    assert len(calls) == 1 and torch.equal(a["t"], b["t"])
    assert not list(tmp_path.rglob("*.tmp"))  # nothing half-written left behind


def test_corrupt_entry_is_recomputed_with_a_warning(tmp_path):
    cache = DiskCache(tmp_path)
    cached("x", lambda: 1, cache=cache)
    path = cache.path("x", cache_key("x"))
    path.write_bytes(b"\x80garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        assert cached("x", lambda: 2, cache=cache) == 2
    assert cached("x", lambda: 3, cache=cache) == 2


def test_interrupted_sweep_resumes(tmp_path):
    cache, seen = DiskCache(tmp_path), []

    def cell(i):
        if i == 3 and not seen.count("failed"):
            seen.append("failed")
            raise KeyboardInterrupt
        seen.append(i)
        return i * i

    with pytest.raises(KeyboardInterrupt):
        cached_map("sweep", range(5), cell, cache=cache)
    assert seen == [0, 1, 2, "failed"]
    assert cached_map("sweep", range(5), cell, cache=cache) == [0, 1, 4, 9, 16]
    assert seen == [0, 1, 2, "failed", 3, 4]  # cells 0-2 came from disk


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_cache_dir_says_what_to_do(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(CacheError, match="ANALYSIS_CACHE_DIR"):
        cached("x", lambda: 1, cache=DiskCache(ro / "cache"))


def test_cache_dir_that_is_a_file_says_what_to_do(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    calls = []
    with pytest.raises(CacheError, match="ANALYSIS_CACHE_DIR"):
        cached("x", lambda: calls.append(1), cache=DiskCache(blocker / "cache"))
    assert not calls  # refused before the expensive work, not after


def test_profile_overrides_file_changes_fields_and_nested_study_sizes(tmp_path, monkeypatch):
    import json

    from analysis.config import OVERRIDES_ENV, get_profile
    from analysis.studies.capability.config import config_for

    path = tmp_path / "overrides.json"
    extra = {"capability": {"ce_tokens": 32, "sae": {"k": 4}, "ladder": [{"k": 2}], "layers": [0, 1]}}
    path.write_text(json.dumps({"gpu": {"device": "cpu", "eval_tokens": 64, "seeds": [0], "extra": extra}}))
    monkeypatch.setenv(OVERRIDES_ENV, str(path))
    profile = get_profile("gpu")
    assert (profile.device, profile.eval_tokens, profile.seeds, profile.model) == ("cpu", 64, (0,), "gpt2-xl")
    cfg = config_for("gpu")
    assert cfg.ce_tokens == 32 and cfg.layers == (0, 1) and cfg.extra_models == ("gpt2-medium",)
    assert cfg.sae.k == 4 and cfg.sae.train_tokens == 2_000_000  # nested: only k changed
    assert len(cfg.ladder) == 1 and cfg.ladder[0].k == 2 and type(cfg.ladder[0]).__name__ == "SAETrainConfig"
    assert get_profile("cpu") == get_profile("cpu").replace()  # other profiles untouched
    path.write_text(json.dumps({"gpu": {"n_layerz": 3}}))
    with pytest.raises(ValueError, match="unknown fields.*n_layerz"):
        get_profile("gpu")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON"):
        get_profile("gpu")


def test_a_field_marked_out_of_the_key_does_not_change_it():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Sizes:
        tokens: int = 8
        models: tuple = dataclasses.field(default=(), metadata={"cache_key": False})

    @dataclasses.dataclass(frozen=True)
    class Before:  # the same class before the choice existed
        tokens: int = 8

    Before.__name__ = "Sizes"
    assert cache_key("x", Sizes()) == cache_key("x", Sizes(models=("gpt2",))) == cache_key("x", Before())
    assert cache_key("x", Sizes(tokens=9)) != cache_key("x", Sizes())


def _raw_dir(root, digest: str):
    """A raw data folder with one source whose manifest lists one file under ``digest``."""
    import json

    (root / "facts").mkdir(parents=True)
    (root / "facts" / "MANIFEST.json").write_text(json.dumps({"sha256": {"facts.jsonl": digest}}))
    return root


def test_key_changes_with_the_data_the_manifests_describe(tmp_path, monkeypatch):
    """Pointing the data folder at other facts gives other keys, and never the other data's results."""
    import analysis.config

    one, same, other = (_raw_dir(tmp_path / n, d) for n, d in (("a", "1" * 64), ("b", "1" * 64), ("c", "2" * 64)))
    keys, cache = {}, DiskCache(tmp_path / "cache")
    for name, raw in (("one", one), ("same", same), ("other", other), ("none", tmp_path / "missing")):
        monkeypatch.setattr(analysis.config, "RAW_DIR", raw)
        keys[name] = cache_key("screen", {"n": 3}, "m")
        assert cached("screen", lambda name=name: name, {"n": 3}, "m", cache=cache) == (
            "one" if name == "same" else name
        )
    assert keys["one"] == keys["same"] and len({keys["one"], keys["other"], keys["none"]}) == 3


def test_key_follows_a_manifest_rewritten_in_place(tmp_path, monkeypatch):
    import json

    import analysis.config

    raw = _raw_dir(tmp_path / "raw", "1" * 64)
    monkeypatch.setattr(analysis.config, "RAW_DIR", raw)
    before = cache_key("screen")
    (raw / "facts" / "MANIFEST.json").write_text(json.dumps({"sha256": {"facts.jsonl": "3" * 64, "more": "4" * 64}}))
    assert cache_key("screen") != before


def _study_table():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Inner:
        k: int = 8

    @dataclasses.dataclass(frozen=True)
    class Sizes:
        tokens: int = 64
        rate: float = 0.5
        scale: float = 1
        name: str = "a"
        layers: tuple = (0, 1)
        inner: Inner = Inner()

    return {"smoke": Sizes()}


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"sweeps": {"tokens": 8}}, r"unknown study keys \['sweeps'\].*sweep"),
        ({"sweep": {"tokenz": 8}}, r"no fields \['tokenz'\].*tokens"),
        ({"sweep": {"tokens": "8"}}, r"extra\.sweep\.tokens must be an integer.*'8'"),
        ({"sweep": {"tokens": 8.5}}, r"tokens must be an integer"),
        ({"sweep": {"rate": True}}, r"rate must be a number"),
        ({"sweep": {"layers": 3}}, r"layers must be a list"),
        ({"sweep": {"inner": {"k": "4"}}}, r"extra\.sweep\.inner\.k must be an integer"),
        ({"sweep": [1]}, r"extra\.sweep must be an object"),
    ],
)
def test_study_overrides_refuse_typos_and_wrong_types(extra, match):
    from analysis.config import study_config

    with pytest.raises(ValueError, match=match):
        study_config(_study_table(), get_profile("smoke").replace(extra=extra), "sweep")


def test_study_overrides_take_json_shapes():
    from analysis.config import study_config

    extra = {"sweep": {"tokens": 8, "rate": 1, "scale": 0.25, "layers": [2], "inner": {"k": 2}}}
    cfg = study_config(_study_table(), get_profile("smoke").replace(extra=extra), "sweep")
    assert (cfg.tokens, cfg.rate, cfg.scale, cfg.layers, cfg.inner.k) == (8, 1, 0.25, (2,), 2)


def test_overrides_file_refuses_an_unknown_study_key_and_a_wrong_type(tmp_path, monkeypatch):
    import json

    from analysis.config import OVERRIDES_ENV

    path = tmp_path / "overrides.json"
    monkeypatch.setenv(OVERRIDES_ENV, str(path))
    path.write_text(json.dumps({"gpu": {"extra": {"sweeps": {"n_shuffles": 2}}}}))
    with pytest.raises(ValueError, match=r"gpu\.extra has unknown study keys \['sweeps'\]"):
        get_profile("gpu")
    path.write_text(json.dumps({"gpu": {"eval_tokens": "64"}}))
    with pytest.raises(ValueError, match=r"gpu\.eval_tokens must be an integer"):
        get_profile("gpu")


def test_study_keys_name_every_study_that_reads_extra():
    """Each ``study_config(..., "<key>")`` call in the library uses a key of STUDY_KEYS, and only those."""
    import re
    from pathlib import Path

    from analysis.config import ROOT, STUDY_KEYS

    used = set()
    for path in Path(ROOT, "analysis").rglob("*.py"):
        used |= set(re.findall(r"study_config\([^)]*\"(\w+)\"\)", path.read_text()))
    assert used == set(STUDY_KEYS)


def test_an_entry_whose_class_moved_still_loads(tmp_path, monkeypatch):
    """A result class pickled under one module loads from its new module through ``cache.MOVED``;
    without the entry, the old pickle is unreadable and recomputed."""
    old, new = types.ModuleType("old_results"), types.ModuleType("new_results")

    @dataclasses.dataclass
    class Result:
        x: int

    Result.__module__, Result.__qualname__ = old.__name__, "Result"
    old.Result = new.Result = Result
    monkeypatch.setitem(sys.modules, old.__name__, old)
    store = cache.DiskCache(tmp_path)
    store.save("r", "a", Result(3))
    store.save("r", "b", Result(4))
    monkeypatch.delitem(sys.modules, old.__name__)  # the class moved: its old module is gone
    monkeypatch.setitem(sys.modules, new.__name__, new)
    with pytest.warns(UserWarning, match="unreadable"):
        assert store.load("r", "a") == (False, None)
    monkeypatch.setitem(cache.MOVED, old.__name__, new.__name__)
    hit, value = store.load("r", "b")
    assert hit and value.x == 4
