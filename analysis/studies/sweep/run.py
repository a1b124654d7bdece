"""One run of the information-aware compression study: the inputs, then three grids of cells.

The scores and the reference come first (:mod:`~analysis.studies.sweep.inputs`), then every
grid is evaluated on that one reference (:func:`~analysis.studies.sweep.cells.run_sweep`, each
cell cached): the seed's grid, the size-matched controls, and the tercile allocations. Every
cell sees the same evaluation windows, so any two can be compared window by window afterwards.
"""

from __future__ import annotations

from transformer_lens import HookedTransformer

from analysis.config import Profile, get_profile
from analysis.studies.sweep.cells import control_grid, run_sweep, seed_grid, tercile_grid, uniform_grid
from analysis.studies.sweep.config import config_for
from analysis.studies.sweep.inputs import gradient_curve, redundancy_scores, reference_for, unigram_bar
from analysis.studies.sweep.results import SweepResult


def run(model: HookedTransformer, profile: Profile | str, model_name: str | None = None) -> SweepResult:
    """Score every component, build the reference and the unigram line, and evaluate the seed
    grid, the controls (random allocations, then uniform cells) and the tercile grid on it.

    ``model_name``: a name (or folder) from which worker processes load ``model`` when the
    profile's ``n_procs > 1``; by default the config's model, else the profile's (pass the model
    actually loaded when that was a fallback). It never enters a cache key."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    cfg = config_for(profile)
    by_name = redundancy_scores(model, cfg, profile)
    curve = gradient_curve(model, cfg, profile)
    setup = reference_for(model, cfg, profile)
    reference = setup.reference
    kw = dict(
        threshold=cfg.threshold,
        cache_config=setup.cache_config,
        n_procs=cfg.n_procs,
        model_name=model_name or cfg.model or profile.model,
        reference_args=setup.reference_args,
    )
    seed = run_sweep(model, reference, seed_grid(cfg, by_name), by_name, desc="seed grid", **kw)
    bar = unigram_bar(model, cfg, reference)
    controls = run_sweep(
        model, reference, control_grid(cfg, by_name) + uniform_grid(cfg), by_name, desc="controls", **kw
    )
    terciles = run_sweep(model, reference, tercile_grid(cfg), by_name, desc="terciles", **kw)
    return SweepResult(
        cfg, by_name, curve, reference.base, bar, tuple(seed), tuple(controls), tuple(terciles), setup.relations
    )
