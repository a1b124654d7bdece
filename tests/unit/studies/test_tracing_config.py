"""The causal tracing study's sizes share one recipe with the causal-tracing score."""

from __future__ import annotations

import dataclasses

import pytest

from analysis import tracing
from analysis.config import PROFILES, get_profile
from analysis.studies import tracing as study


@pytest.mark.parametrize("name", list(PROFILES))
def test_the_study_traces_with_the_recipe_the_score_reads(name):
    assert study.config_for(name).recipe == tracing.recipe_for(name)
    custom = get_profile(name).replace(extra={"tracing": {"n_exact": 3, "max_rows": 64, "n_boot": 10}})
    cfg = study.config_for(custom)
    assert cfg.recipe == tracing.recipe_for(custom) and (cfg.n_exact, cfg.max_rows, cfg.n_boot) == (3, 64, 10)


def test_config_for_is_the_studys_accessor_and_checks_the_recipe():
    shared = {f.name for f in dataclasses.fields(tracing.Recipe)}
    assert shared < {f.name for f in dataclasses.fields(study.TraceConfig)}
    with pytest.raises(ValueError, match="resid"):
        study.config_for(get_profile("smoke").replace(extra={"tracing": {"resid": "resid_mid"}}))
