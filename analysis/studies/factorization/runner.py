"""The factorization study's grids, each cell cached on disk by its configuration and the model.

- :func:`decoder_grid`: every (method, ratio) cell of the decoder, scored by perplexity (with a
  bootstrap interval over evaluation windows), fact multiple choice, fact recall and, at
  :attr:`~analysis.studies.factorization.config.FactorConfig.mmlu_ratios`, zero-shot MMLU accuracy
  (:mod:`~analysis.studies.factorization.evaluation`); the
  per-window and per-item scores behind each number stay in ``frame.attrs["units"]`` for the
  paired tests of :mod:`~analysis.studies.factorization.verdicts`;
- :func:`calibration_curve`: how each data-aware method's perplexity moves with the calibration size;
- :func:`asvd_sensitivity` and :func:`allocation_table`: ASVD's per-layer rank search;
- :func:`encoder_grid` and :func:`decoder_probe_grid`: cells probed layer by layer with
  :mod:`analysis.probing` (task and control), as the seed probes its models;
- :func:`probe_frame` reduces a probe grid to the seed's numbers (top-4-layer mean), and
  :func:`rank_table` says what each ratio means in rank.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from analysis import compress, probing, stats
from analysis.cache import cached
from analysis.components import parameter_name
from analysis.compress import lowrank
from analysis.compress.calibration import calibration_prefixes
from analysis.data import lm_tokens, load_task
from analysis.evaluate import fact_recall, lm_score
from analysis.hooks import feature_hook
from analysis.models import model_key
from analysis.progress import progress
from analysis.studies.factorization.config import CACHE_VERSION, METHOD_LABELS, FactorConfig
from analysis.studies.factorization.evaluation import DecoderData, decoder_data, mc_correct, mmlu_correct

_OP = {"asvd_rank": "asvd"}
"""Study method -> the compress operation whose statistics it reads."""


def _layers(model, layers) -> list[int]:
    return list(range(model.cfg.n_layers)) if layers is None else list(layers)


def _decoder_key(cfg: FactorConfig) -> dict:
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


# --------------------------------------------------------------------------------------
# Calibration statistics and plans
# --------------------------------------------------------------------------------------


def calibration_contexts(model, cfg: FactorConfig, data: DecoderData, state: dict) -> dict[int, compress.Context]:
    """``{calibration tokens: Context}`` for the main size and every :attr:`FactorConfig.calib_sizes`,
    from one pass over the calibration stream (kept in ``state``)."""
    if "prefixes" not in state:
        sizes = sorted({cfg.calib_tokens, *cfg.calib_sizes})
        kinds = sorted({k for m in cfg.methods for k in compress.STATS_NEEDED[_OP.get(m, m)]})
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


def asvd_sensitivity(model, cfg: FactorConfig, data: DecoderData, state: dict) -> dict[str, dict[float, float]]:
    """ASVD's sensitivity table ``{unit: {kept fraction: calibration perplexity}}`` (cached)."""

    def run():
        ctx = calibration_contexts(model, cfg, data, state)[cfg.calib_tokens]
        n = cfg.sensitivity_windows * cfg.context
        windows = data.calib_tokens[:n].view(cfg.sensitivity_windows, cfg.context)
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
    key = _decoder_key(cfg) | {k: getattr(cfg, k) for k in keys}
    return cached("factorization-sensitivity", run, config={"cfg": key, "v": CACHE_VERSION}, model=model_key(model))


def _unit_shapes(model, cfg: FactorConfig) -> dict[str, dict[str, tuple[int, int]]]:
    """``{unit: {weight: (d_in, d_out)}}`` of the MLP units ASVD's search allocates over."""
    units = lowrank.mlp_units(model, cfg.decoder_layers, cfg.sensitivity_unit)
    return {u: lowrank.weight_shapes(model, ws) for u, ws in units.items()}


def rank_allocation(model, cfg: FactorConfig, data: DecoderData, state: dict, ratio: float) -> dict[str, float]:
    """``{unit: fraction removed}``: ASVD's allocation at the size of every MLP factorized at ``ratio``."""
    shapes = _unit_shapes(model, cfg)
    budget = sum(lowrank.unit_values(s, ratio) for s in shapes.values())
    return lowrank.allocate_ranks(asvd_sensitivity(model, cfg, data, state), shapes, budget)


def allocated_removed(model, cfg: FactorConfig, data: DecoderData, state: dict, ratio: float) -> float:
    """Share of all MLP parameters ASVD's allocation at ``ratio`` removes, units it leaves dense included
    (a plan's own size report counts only the weights it factorizes)."""
    return lowrank.allocation_removed(_unit_shapes(model, cfg), rank_allocation(model, cfg, data, state, ratio))


def allocation_table(model, cfg: FactorConfig, data: DecoderData, state: dict) -> pd.DataFrame:
    """Fraction of each unit's parameters ASVD's search removes, one column per grid ratio."""
    return pd.DataFrame({f"{r:.0%}": rank_allocation(model, cfg, data, state, r) for r in cfg.ratios})


def plan_for(
    model, cfg: FactorConfig, data: DecoderData, state: dict, method: str, ratio: float, calib: int | None = None
) -> compress.CompressionPlan:
    """The plan of one cell: ``method`` (a study method) at ``ratio`` with the statistics of ``calib`` tokens."""
    ctx = calibration_contexts(model, cfg, data, state)[calib or cfg.calib_tokens]
    if method == "asvd_rank":
        units = lowrank.mlp_units(model, cfg.decoder_layers, cfg.sensitivity_unit)
        alloc = rank_allocation(model, cfg, data, state, ratio)
        return lowrank.allocated_plan(model, alloc, units, ctx, cache=state["svd"])
    per_layer = {l: ratio for l in _layers(model, cfg.decoder_layers)}
    return compress.factorization_plan(model, method, per_layer, context=ctx, cache=state["svd"])


# --------------------------------------------------------------------------------------
# The decoder grid: perplexity, multiple choice, fact recall
# --------------------------------------------------------------------------------------


def score_decoder(model, cfg: FactorConfig, data: DecoderData, mmlu: bool = True) -> dict[str, Any]:
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


def decoder_grid(model, cfg: FactorConfig, data: DecoderData | None = None, state: dict | None = None) -> pd.DataFrame:
    """One row per (method, ratio) cell (:meth:`FactorConfig.cells`): scores, parameters removed.

    ``frame.attrs["units"]``: ``{(label, ratio): per-window and per-item scores}``. ``state`` (shared
    with the other grids) keeps the calibration statistics and decompositions, built only when some
    cell is not cached yet.
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
            config={"cfg": _decoder_key(cfg), "cell": cell, "v": CACHE_VERSION}
            | (
                {"sens": (cfg.sensitivity_keep, cfg.sensitivity_unit, cfg.sensitivity_windows)}
                if cell[0] == "asvd_rank"
                else {}
            ),
            model=key,
        )
        if cell[0] == "asvd_rank":  # the plan's report sees only the units it factorizes
            out = {**out, "removed": allocated_removed(model, cfg, data, state, cell[1])}
        label = METHOD_LABELS.get(cell[0], "none")
        units[(label, cell[1])] = out["units"]
        rows.append({"method": label, "ratio": cell[1], **{k: v for k, v in out.items() if k != "units"}})
    frame = pd.DataFrame(rows)
    frame.attrs["units"] = units
    return frame


def calibration_curve(model, cfg: FactorConfig, data: DecoderData, state: dict) -> pd.DataFrame:
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
            config={"cfg": _decoder_key(cfg), "cell": (m, s, cfg.calib_ratio), "v": CACHE_VERSION},
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


# --------------------------------------------------------------------------------------
# Probes: the encoder grid and the decoder's probed cells
# --------------------------------------------------------------------------------------


def probe_tasks(cfg: FactorConfig, n: int | None = None) -> dict[str, Any]:
    """The probing datasets, by the seed's task name (:data:`analysis.probing.PROBE_TASKS`); ``n`` rows each
    (default :attr:`FactorConfig.n_probe`, capped by what a task has)."""
    n = n or cfg.n_probe
    out = {}
    for seed, (ours, _) in probing.PROBE_TASKS.items():
        out[seed] = probing.load_probe_task(ours, n=min(n, len(probing.load_probe_task(ours))), seed=0)
    return out


def _norm_text(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def fisher_sample(cfg: FactorConfig, probe_sets: dict[str, Any]):
    """:attr:`FactorConfig.fisher_task` rows for the encoder's Fisher: none of their groups, and none of
    their texts (lowercased, punctuation dropped), is in any probe set."""
    ours = cfg.fisher_task
    every = load_task(ours)
    used = {g for ds in probe_sets.values() for g in ds["group"][:]}
    seen = {_norm_text(t) for ds in probe_sets.values() for t in ds["text"][:]}
    free = [
        i
        for i, (g, t) in enumerate(zip(every["group"][:], every["text"][:]))
        if g not in used and _norm_text(t) not in seen
    ]
    if len(free) < cfg.encoder_grad_examples:
        raise ValueError(
            f"Only {len(free)} {ours} rows lie outside the probe sets; lower encoder_grad_examples "
            f"({cfg.encoder_grad_examples}) or n_probe ({cfg.n_probe})."
        )
    g = torch.Generator().manual_seed(1)
    pick = torch.randperm(len(free), generator=g)[: cfg.encoder_grad_examples].tolist()
    return every.select([free[i] for i in sorted(pick)])


def _task_loss(encoder, ds, cfg: FactorConfig):
    """Cross-entropy of a logistic head (fitted on the final layer) for the rows of ``ds``: FWSVD's task loss."""
    L = encoder.cfg.n_layers
    feats = probing.hidden_states(encoder, ds["text"][:])[L - 1 : L]
    y = torch.tensor(ds["label"][:])
    head = probing.train_probes(
        feats, y[None], int(y.max()) + 1, hidden=0, steps=cfg.probe.steps, lr=cfg.probe.lr, seed=0
    )
    hook = feature_hook(encoder, L - 1)

    def loss(model, tokens, mask, row):
        got = []
        with model.hooks(fwd_hooks=[(hook, lambda a, hook: got.append(a))]):
            model.encoder_output(tokens, None, mask)
        pooled = (got[0] * (mask / mask.sum(1, keepdim=True))[..., None]).sum(1)  # [1, d_model]
        logits = head.logits(pooled[None])
        return torch.nn.functional.cross_entropy(logits[0], y[row : row + 1])

    return loss


def encoder_context(encoder, cfg: FactorConfig, methods: Sequence[str], probe_sets: dict[str, Any]) -> compress.Context:
    """Activation statistics on held-out prose; Fisher rows from :attr:`FactorConfig.fisher_task` outside the probe sets."""
    weights = compress.mlp_weights(encoder)
    kinds = sorted({k for m in methods for k in compress.STATS_NEEDED[_OP.get(m, m)]} - {"grad2"})
    found: dict = {}
    if kinds:
        toks = lm_tokens(encoder.tokenizer, "calib", cfg.encoder_calib_tokens)
        found.update(
            compress.calibration_stats(
                encoder, toks, weights, kinds=kinds, context=128, batch_size=cfg.batch_size
            ).stats
        )
    if "fwsvd" in methods:
        ds = fisher_sample(cfg, probe_sets)
        enc = encoder.tokenizer(ds["text"][:], return_tensors="pt", padding=True, truncation=True, max_length=128)
        found.update(
            compress.calibration_stats(
                encoder,
                enc["input_ids"],
                weights,
                kinds=("grad2",),
                attention_mask=enc["attention_mask"],
                loss_fn=_task_loss(encoder, ds, cfg),
            ).stats
        )
    return compress.Context(model=encoder, stats=found)


def encoder_grid(encoder, cfg: FactorConfig, tasks: dict | None = None) -> dict[tuple[str, float], dict]:
    """``{(method, ratio): {task: ProbeResult}}`` for the encoder cells (``("none", 0.0)``: uncompressed)."""
    tasks = tasks or probe_tasks(cfg)
    state: dict = {}

    def run(cell):
        method, ratio = cell
        if method == "none":
            return {t: probing.probe_dataset(encoder, ds, cfg.probe) for t, ds in tasks.items()}
        if "ctx" not in state:
            state["ctx"] = encoder_context(encoder, cfg, cfg.encoder_methods, tasks)
            state["svd"] = {}
        plan = compress.factorization_plan(encoder, method, ratio, context=state["ctx"], cache=state["svd"])
        with plan.applied(encoder):
            return {t: probing.probe_dataset(encoder, ds, cfg.probe) for t, ds in tasks.items()}

    keys = ("n_probe", "probe", "encoder_calib_tokens", "encoder_grad_examples", "fisher_task")
    key = {k: getattr(cfg, k) for k in keys}
    mkey = model_key(encoder)
    cells = [("none", 0.0)] + [(m, r) for m in cfg.encoder_methods for r in cfg.encoder_ratios]
    return {
        cell: cached(
            "factorization-encoder",
            lambda: run(cell),
            config={"cfg": key, "cell": cell, "v": CACHE_VERSION},
            model=mkey,
        )
        for cell in progress(cells, desc="encoder grid")
    }


def probe_frame(grid: dict, kind: str = "mlp", layers: Sequence[int] | None = None) -> pd.DataFrame:
    """Probe accuracy (mean over ``layers``, default the top 4 as in the seed), control and selectivity per cell."""
    rows = []
    for (m, r), results in grid.items():
        row = {"method": METHOD_LABELS.get(m, "none"), "ratio": r}
        for t, res in results.items():
            L = res.acc[kind]["task"].shape[0]
            sel = list(layers) if layers is not None else list(range(max(0, L - 4), L))
            s = res.summary(kind, sel)
            row[t], row[f"{t} control"], row[f"{t} selectivity"] = s["task"], s["control"], s["selectivity"]
        rows.append(row)
    return pd.DataFrame(rows)


def control_coverage(grid: dict) -> pd.DataFrame:
    """Per task: share of test rows whose control type occurs in training (want >= 0.9), and the test size."""
    res = next(iter(grid.values()))
    return pd.DataFrame(
        [
            {"task": t, "test types seen in training": r.coverage, "test rows per split": sum(r.n_test) / len(r.n_test)}
            for t, r in res.items()
        ]
    ).set_index("task")


def decoder_probe_grid(
    model, cfg: FactorConfig, data: DecoderData | None = None, state: dict | None = None, tasks: dict | None = None
) -> dict[tuple[str, float], dict]:
    """``{(method, ratio): {task: ProbeResult}}`` on the decoder, at :attr:`FactorConfig.decoder_probe_ratios`,
    every example tested once (``cfg.decoder_probe.folds``)."""
    tasks = tasks or probe_tasks(cfg, cfg.n_decoder_probe)
    state = {} if state is None else state

    def probe_all():
        return {
            t: probing.probe_dataset(model, ds, cfg.decoder_probe, batch_size=cfg.batch_size) for t, ds in tasks.items()
        }

    def run(cell):
        method, ratio = cell
        if method == "none":
            return probe_all()
        with plan_for(model, cfg, data or decoder_data(model, cfg), state, method, ratio).applied(model):
            return probe_all()

    cells = [("none", 0.0)] + [(m, r) for m in cfg.decoder_probe_methods for r in cfg.decoder_probe_ratios]
    key = {"decoder": _decoder_key(cfg), "n": cfg.n_decoder_probe, "probe": cfg.decoder_probe}
    mkey = model_key(model)
    return {
        cell: cached(
            "factorization-decoder-probes",
            lambda: run(cell),
            config={"cfg": key, "cell": cell, "v": CACHE_VERSION}
            | (
                {"sens": (cfg.sensitivity_keep, cfg.sensitivity_unit, cfg.sensitivity_windows)}
                if cell[0] == "asvd_rank"
                else {}
            ),
            model=mkey,
        )
        for cell in progress(cells, desc="decoder probes")
    }


def rank_table(model, ratios: Sequence[float], layers: Sequence[int] | None = None) -> pd.DataFrame:
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


def interval_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The decoder grid with 95 % intervals: perplexity (bootstrap over windows), fact multiple-choice and
    MMLU accuracy (bootstrap over questions) and fact recall, as ``value [low, high]``."""
    units = frame.attrs.get("units", {})
    rows = []
    for _, row in frame.iterrows():
        u = units.get((row["method"], row["ratio"]), {})
        out = {
            "method": row["method"],
            "ratio": row["ratio"],
            "removed": row["removed"],
            "perplexity": f"{row['perplexity']:.3f} [{row['ppl low']:.3f}, {row['ppl high']:.3f}]",
        }
        for col, name in (("fact mc", "fact MC"), ("mmlu", "MMLU"), ("fact recall", "fact recall")):
            hits = np.asarray(u.get(col, []), float)
            if len(hits):
                est, lo, hi = stats.mean_ci(hits)
                out[f"{name} (n={len(hits)})"] = f"{est:.3f} [{lo:.3f}, {hi:.3f}]"
        rows.append(out)
    return pd.DataFrame(rows).set_index(["method", "ratio"])
