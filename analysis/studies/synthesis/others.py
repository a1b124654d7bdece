"""The synthesis on further models (the ``gpu`` profile's second family and Llama-architecture model).

Only the signals this study computes itself are available there (:func:`~analysis.studies.synthesis.signals.cheap_signals`,
without a tuned lens): causal tracing, capability density and the variance chapter's maps are computed
by their chapters for the profile's own model only. Everything else is the main run's: the same
texts by purpose, the same oracle, allocator, leaderboard and verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.config import Profile
from analysis.geometry import removal
from analysis.models import load_model
from analysis.studies.synthesis import agreement
from analysis.studies.synthesis.config import config_for
from analysis.studies.synthesis.results import SynthesisResult
from analysis.studies.synthesis.run import (
    allocations,
    dense,
    measure_oracle,
    oracle_signals,
    run_leaderboard,
    setup,
    usable_line,
)
from analysis.studies.synthesis.signals import cheap_signals
from analysis.studies.synthesis.verdicts import verdicts
from analysis.studies.verdicts import Verdict


@dataclass(frozen=True)
class OtherModel:
    """The synthesis of one further model."""

    name: str
    result: SynthesisResult
    prediction: pd.DataFrame
    verdicts: list[Verdict]


def run_other(name: str, profile: Profile) -> OtherModel:
    """The whole study on model ``name`` with the cheap signals (see the module docstring)."""
    cfg = config_for(profile)
    model = load_model(name, device=profile.device)
    s = setup(model, profile, name)
    signals = cheap_signals(model, s.calib, cfg.context, cfg.batch_size, lens_tokens=cfg.lens_tokens)
    oracles = oracle_signals(measure_oracle(s))
    gromov = removal.angular_distances(model, s.calib, cfg.context, cfg.batch_size, max_n=max(cfg.remove_budgets))
    board = run_leaderboard(s, allocations(s, signals, oracles, gromov))
    result = SynthesisResult(cfg, signals, oracles, tuple(board), dense(s), usable_line(s).perplexity)
    return OtherModel(name, result, agreement.prediction(signals, oracles, cfg.n_boot), verdicts(result))
