"""The factorization study's decoder steps, each cell cached on disk by its configuration and the model.

The chapter runs them one by one, with text between them (the probe steps are in
:mod:`~analysis.studies.factorization.probes`):

- :func:`~analysis.studies.factorization.evaluation.decoder_data`: what every decoder cell is scored on;
- :func:`asvd_sensitivity` and :func:`allocation_table`: ASVD's per-layer rank search;
- :func:`decoder_grid`: every (method, ratio) cell of the decoder, scored by perplexity (with a
  bootstrap interval over evaluation windows), fact multiple choice, fact recall and, at
  :attr:`~analysis.studies.factorization.config.FactorConfig.mmlu_ratios`, zero-shot MMLU accuracy
  (:mod:`~analysis.studies.factorization.evaluation`), as a
  :class:`~analysis.studies.factorization.results.DecoderGrid` that keeps the per-window and
  per-item scores behind each number for the paired tests of
  :mod:`~analysis.studies.factorization.verdicts`;
- :func:`calibration_curve`: how each data-aware method's perplexity moves with the calibration size;
- :func:`rank_table` says what each ratio means in rank, and :func:`interval_table` gives the decoder
  grid's numbers with their intervals.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from transformer_lens import HookedTransformer

from analysis import compress, stats
from analysis.cache import cached
from analysis.components import component, parameter_name
from analysis.compress import lowrank
from analysis.compress.calibration import calibration_prefixes
from analysis.evaluate import fact_recall, lm_score
from analysis.forward import windows as cut_windows
from analysis.models import model_key
from analysis.progress import progress
from analysis.studies.factorization.config import CACHE_VERSION, METHOD_LABELS, METHOD_OPS, FactorConfig
from analysis.studies.factorization.evaluation import DecoderData, decoder_data, mc_correct, mmlu_correct
from analysis.studies.factorization.results import Cell, CellScores, DecoderGrid


def _layers(model, layers) -> list[int]:
    return list(range(model.cfg.n_layers)) if layers is None else list(layers)


def decoder_key(cfg: FactorConfig) -> dict:
    """The fields of ``cfg`` every cached decoder cell depends on (part of each cell's cache key)."""
    keys = (
        "decoder_layers",
        "eval_tokens",
        "calib_tokens",
        "context",
        "grad_examples",
        "n_facts",
        "max_fact_mc",
        "n_mmlu",
        "mmlu_ratios",
    )
    return {k: getattr(cfg, k) for k in keys} | {"mc_choices": cfg.mc_choices, "batch_size": cfg.batch_size}


def sensitivity_key(cfg: FactorConfig, cell: Cell) -> dict:
    """What a cell's cache key adds for ASVD's rank search (which only ``"asvd_rank"`` cells read)."""
    return (
        {"sens": (cfg.sensitivity_keep, cfg.sensitivity_unit, cfg.sensitivity_windows)}
        if cell[0] == "asvd_rank"
        else {}
    )


# --------------------------------------------------------------------------------------
# Calibration statistics and plans
# --------------------------------------------------------------------------------------


def calibration_contexts(
    model: HookedTransformer, cfg: FactorConfig, data: DecoderData, state: dict
) -> dict[int, compress.Calibration]:
    """``{calibration tokens: Calibration}`` for the main size and every :attr:`FactorConfig.calib_sizes`,
    from one pass over the calibration stream (kept in ``state``)."""
    if "prefixes" not in state:
        sizes = sorted({cfg.calib_tokens, *cfg.calib_sizes})
        kinds = sorted({k for m in cfg.methods for k in compress.STATS_NEEDED[METHOD_OPS.get(m, m)]})
        by_windows = calibration_prefixes(
            model,
            data.calib_tokens,
            compress.mlp_weights(model, cfg.decoder_layers),
            [s // cfg.context for s in sizes],
            kinds=kinds,
            context=cfg.context,
            batch_size=cfg.batch_size,
            max_grad_examples=cfg.grad_examples,
        )
        state["prefixes"] = {s: by_windows[s // cfg.context] for s in sizes}
        state.setdefault("svd", {})
    return state["prefixes"]


def asvd_sensitivity(
    model: HookedTransformer, cfg: FactorConfig, data: DecoderData, state: dict
) -> dict[str, dict[float, float]]:
    """ASVD's sensitivity table ``{unit: {kept fraction: calibration perplexity}}`` (cached)."""

    def run():
        ctx = calibration_contexts(model, cfg, data, state)[cfg.calib_tokens]
        windows = cut_windows(data.calib_tokens, cfg.context)[: cfg.sensitivity_windows]
        units = lowrank.mlp_units(model, cfg.decoder_layers, cfg.sensitivity_unit)
        return lowrank.truncation_sensitivity(
            model,
            units,
            windows,
            ctx,
            cfg.sensitivity_keep,
            batch_size=cfg.batch_size,
            cache=state.setdefault("svd", {}),
        )

    keys = ("sensitivity_keep", "sensitivity_unit", "sensitivity_windows")
    key = decoder_key(cfg) | {k: getattr(cfg, k) for k in keys}
    return cached("factorization-sensitivity", run, config={"cfg": key, "v": CACHE_VERSION}, model=model_key(model))


def _unit_shapes(model, cfg: FactorConfig) -> dict[str, dict[str, tuple[int, int]]]:
    """``{unit: {weight: (d_in, d_out)}}`` of the MLP units ASVD's search allocates over."""
    units = lowrank.mlp_units(model, cfg.decoder_layers, cfg.sensitivity_unit)
    return {u: lowrank.weight_shapes(model, ws) for u, ws in units.items()}


def rank_allocation(
    model: HookedTransformer, cfg: FactorConfig, data: DecoderData, state: dict, ratio: float
) -> dict[str, float]:
    """``{unit: fraction removed}``: ASVD's allocation at the size of every MLP factorized at ``ratio``."""
    shapes = _unit_shapes(model, cfg)
    budget = sum(lowrank.unit_values(s, ratio) for s in shapes.values())
    return lowrank.allocate_ranks(asvd_sensitivity(model, cfg, data, state), shapes, budget)


def allocated_removed(
    model: HookedTransformer, cfg: FactorConfig, data: DecoderData, state: dict, ratio: float
) -> float:
    """Share of all MLP parameters ASVD's allocation at ``ratio`` removes, units it leaves dense included
    (a plan's own size report counts only the weights it factorizes)."""
    return lowrank.allocation_removed(_unit_shapes(model, cfg), rank_allocation(model, cfg, data, state, ratio))


def allocation_table(model: HookedTransformer, cfg: FactorConfig, data: DecoderData, state: dict) -> pd.DataFrame:
    """Fraction of each unit's parameters ASVD's search removes, one column per grid ratio."""
    return pd.DataFrame({f"{r:.0%}": rank_allocation(model, cfg, data, state, r) for r in cfg.ratios})


def plan_for(
    model: HookedTransformer,
    cfg: FactorConfig,
    data: DecoderData,
    state: dict,
    method: str,
    ratio: float,
    calib: int | None = None,
) -> compress.CompressionPlan:
    """The plan of one cell: ``method`` (a study method) at ``ratio`` with the statistics of ``calib`` tokens."""
    ctx = calibration_contexts(model, cfg, data, state)[calib or cfg.calib_tokens]
    if method == "asvd_rank":
        units = lowrank.mlp_units(model, cfg.decoder_layers, cfg.sensitivity_unit)
        alloc = rank_allocation(model, cfg, data, state, ratio)
        return lowrank.allocated_plan(model, alloc, units, ctx, cache=state["svd"])
    per_layer = {l: ratio for l in _layers(model, cfg.decoder_layers)}
    return compress.factorization_plan(model, method, per_layer, calibration=ctx, cache=state["svd"])


# --------------------------------------------------------------------------------------
# The decoder grid: perplexity, multiple choice, fact recall
# --------------------------------------------------------------------------------------


def score_decoder(model: HookedTransformer, cfg: FactorConfig, data: DecoderData, mmlu: bool = True) -> dict[str, Any]:
    """Perplexity (with its window-bootstrap interval), fact multiple choice, MMLU accuracy (if ``mmlu``) and
    known-fact recall of ``model`` now; the per-window and per-item scores under ``"units"``."""
    lm = lm_score(model, data.eval_tokens, cfg.context, batch_size=cfg.batch_size)
    lo, hi = lm.perplexity_interval()
    recall = (
        fact_recall(model, data.known["prompt"][:], data.known["target"][:]).bool().tolist() if len(data.known) else []
    )
    fact_mc = mc_correct(model, data.fact_mc, batch_size=cfg.batch_size)
    mmlu_hits = mmlu_correct(model, data.mmlu, batch_size=cfg.batch_size) if mmlu else []
    mean = lambda x: float(sum(x) / len(x)) if len(x) else float("nan")  # noqa: E731
    return {
        "perplexity": lm.perplexity,
        "ppl low": lo,
        "ppl high": hi,
        "fact mc acc": mean(fact_mc),
        "mmlu acc": mean(mmlu_hits),
        "fact recall": mean(recall),
        "units": {
            "window_nll": list(lm.window_nll),
            "window_tokens": list(lm.window_tokens),
            "fact mc": fact_mc,
            "mmlu": mmlu_hits,
            "fact recall": recall,
        },
    }


def decoder_grid(
    model: HookedTransformer, cfg: FactorConfig, data: DecoderData | None = None, state: dict | None = None
) -> DecoderGrid:
    """One row per (method, ratio) cell (:meth:`FactorConfig.cells`): scores, parameters removed; and
    ``{(label, ratio): per-window and per-item scores}``. ``state`` (shared with the other grids) keeps
    the calibration statistics and decompositions, built only when some cell is not cached yet.
    """
    data = data or decoder_data(model, cfg)
    state = {} if state is None else state
    scored = None if cfg.mmlu_ratios is None else {0.0, *cfg.mmlu_ratios}

    def run(cell):
        method, ratio = cell
        if method == "none":
            return {**score_decoder(model, cfg, data), "removed": 0.0}
        with plan_for(model, cfg, data, state, method, ratio).applied(model) as report:
            scores = score_decoder(model, cfg, data, mmlu=scored is None or ratio in scored)
        return {**scores, "removed": 1 - report.ratio}

    rows, units, key = [], {}, model_key(model)
    for cell in progress(cfg.cells(), desc="decoder grid"):
        out = cached(
            "factorization-decoder",
            lambda: run(cell),
            config={"cfg": decoder_key(cfg), "cell": cell, "v": CACHE_VERSION} | sensitivity_key(cfg, cell),
            model=key,
        )
        if cell[0] == "asvd_rank":  # the plan's report sees only the units it factorizes
            out = {**out, "removed": allocated_removed(model, cfg, data, state, cell[1])}
        label = METHOD_LABELS.get(cell[0], "none")
        units[(label, cell[1])] = CellScores.from_units(out["units"])
        rows.append({"method": label, "ratio": cell[1], **{k: v for k, v in out.items() if k != "units"}})
    return DecoderGrid(pd.DataFrame(rows), units)


BASELINE_LABELS = {"prune": "magnitude pruning", "quantize": "quantization"}
"""Display name of each comparison arm (:attr:`FactorConfig.baselines`)."""


def baseline_plan(model: HookedTransformer, cfg: FactorConfig, arm: str, ratio: float) -> compress.CompressionPlan:
    """The seed's comparison arm ``arm`` at ``ratio`` on every factorized MLP: magnitude pruning of that fraction
    of each matrix's entries, or per-channel quantization to ``round(16 * (1 - ratio))`` bits."""
    if arm == "prune":
        op = compress.Prune(ratio)
    elif arm == "quantize":
        op = compress.Quantize(max(2, round(16 * (1 - ratio))))
    else:
        raise ValueError(f"Unknown comparison arm {arm!r}; use one of {tuple(BASELINE_LABELS)}.")
    return compress.CompressionPlan({component(l, "mlp"): [op] for l in _layers(model, cfg.decoder_layers)})


def baseline_grid(model: HookedTransformer, cfg: FactorConfig, data: DecoderData | None = None) -> DecoderGrid:
    """The comparison arms (:attr:`FactorConfig.baselines`) at :attr:`FactorConfig.baseline_ratios`, scored as
    a decoder cell is (perplexity, fact multiple choice, fact recall; no MMLU), each cell cached."""
    data = data or decoder_data(model, cfg)
    ratios = cfg.ratios if cfg.baseline_ratios is None else cfg.baseline_ratios

    def run(arm, ratio):
        with baseline_plan(model, cfg, arm, ratio).applied(model) as report:
            scores = score_decoder(model, cfg, data, mmlu=False)
        return {**scores, "removed": 1 - report.ratio}

    rows, units, key = [], {}, model_key(model)
    for arm, ratio in progress([(a, r) for a in cfg.baselines for r in ratios], desc="comparison arms"):
        out = cached(
            "factorization-baselines",
            lambda: run(arm, ratio),
            config={"cfg": decoder_key(cfg), "cell": (arm, ratio), "v": CACHE_VERSION},
            model=key,
        )
        label = BASELINE_LABELS[arm]
        units[(label, ratio)] = CellScores.from_units(out["units"])
        rows.append({"method": label, "ratio": ratio, **{k: v for k, v in out.items() if k != "units"}})
    return DecoderGrid(pd.DataFrame(rows), units)


def calibration_curve(model: HookedTransformer, cfg: FactorConfig, data: DecoderData, state: dict) -> pd.DataFrame:
    """Perplexity (and interval) at :attr:`FactorConfig.calib_ratio` per data-aware method and calibration size.

    ASVD's rank search is left out: its allocation would have to be searched again per size.
    """
    methods = [m for m in ("fwsvd", "asvd", "svdllm") if m in cfg.methods]

    def run(method, size):
        with plan_for(model, cfg, data, state, method, cfg.calib_ratio, calib=size).applied(model):
            lm = lm_score(model, data.eval_tokens, cfg.context, batch_size=cfg.batch_size)
        lo, hi = lm.perplexity_interval()
        return {"perplexity": lm.perplexity, "ppl low": lo, "ppl high": hi}

    rows, key = [], model_key(model)
    cells = [(m, s) for m in methods for s in sorted(cfg.calib_sizes)]
    for m, s in progress(cells, desc="calibration curve"):
        fisher = min(s // cfg.context, cfg.grad_examples or s // cfg.context)
        out = cached(
            "factorization-calibration",
            lambda: run(m, s),
            config={"cfg": decoder_key(cfg), "cell": (m, s, cfg.calib_ratio), "v": CACHE_VERSION},
            model=key,
        )
        rows.append(
            {"method": METHOD_LABELS[m], "calibration tokens": s, **out}
            | ({"Fisher windows": fisher} if m == "fwsvd" else {})
        )
    frame = pd.DataFrame(rows)
    if "Fisher windows" in frame:
        frame["Fisher windows"] = frame["Fisher windows"].astype("Int64")
    return frame


def rank_table(model: HookedTransformer, ratios: Sequence[float], layers: Sequence[int] | None = None) -> pd.DataFrame:
    """For each ratio: the rank each MLP matrix shape keeps, of how many, and the parameters actually removed."""
    params = dict(model.named_parameters())
    shapes = sorted(
        {
            tuple(compress.to_linear(w, params[parameter_name(model, w, params)]).shape)
            for w in compress.mlp_weights(model, layers)
        }
    )
    rows = []
    for r in ratios:
        row = {"ratio": r}
        for d_in, d_out in shapes:
            k = compress.rank_for_ratio(d_in, d_out, r)
            row[f"rank of [{d_in}, {d_out}] (of {min(d_in, d_out)})"] = k
            row[f"removed [{d_in}, {d_out}]"] = 1 - compress.factor_params(d_in, d_out, k) / (d_in * d_out)
        rows.append(row)
    return pd.DataFrame(rows)


def interval_table(grid: DecoderGrid) -> pd.DataFrame:
    """The decoder grid with 95 % intervals: perplexity (bootstrap over windows), fact multiple-choice and
    MMLU accuracy (bootstrap over questions) and fact recall, as ``value [low, high]``."""
    rows = []
    for _, row in grid.frame.iterrows():
        u = grid.units.get((row["method"], row["ratio"]))
        out = {
            "method": row["method"],
            "ratio": row["ratio"],
            "removed": row["removed"],
            "perplexity": f"{row['perplexity']:.3f} [{row['ppl low']:.3f}, {row['ppl high']:.3f}]",
        }
        for col, name in (("fact mc", "fact MC"), ("mmlu", "MMLU"), ("fact recall", "fact recall")):
            hits = np.asarray(u.hits(col) if u is not None else [], float)
            if len(hits):
                est, lo, hi = stats.mean_ci(hits)
                out[f"{name} (n={len(hits)})"] = f"{est:.3f} [{lo:.3f}, {hi:.3f}]"
        rows.append(out)
    return pd.DataFrame(rows).set_index(["method", "ratio"])
