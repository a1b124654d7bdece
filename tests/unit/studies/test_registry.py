"""The registry reaches every study the same way, and agrees with the profile's study keys and the book."""

from __future__ import annotations

import dataclasses

import pytest

from analysis.book import chapters
from analysis.config import PROFILES, STUDY_KEYS, size_fields
from analysis.studies import registry


def test_every_study_is_registered_once_under_its_profile_key_and_chapter():
    assert set(registry.STUDIES) == set(STUDY_KEYS)
    assert {s.chapter for s in registry.STUDIES.values()} <= set(chapters())
    assert len({s.chapter for s in registry.STUDIES.values()}) == len(registry.STUDIES)


@pytest.mark.parametrize("key", list(registry.STUDIES))
def test_one_naming_scheme_per_study(key):
    package = registry.study(key).package
    assert callable(registry.verdicts(key)) and registry.verdicts(key) is package.verdicts
    for name in PROFILES:
        cfg = registry.config_for(key, name)
        assert dataclasses.is_dataclass(cfg) and type(cfg) is type(registry.configs(key)[name])
        assert cfg == package.config_for(name)
    assert size_fields(registry.configs(key)["gpu"]), f"{key}'s config marks no field as a size"


def test_unknown_study_says_which_exist():
    with pytest.raises(ValueError, match="known studies: tracing"):
        registry.config_for("pruning", "cpu")
