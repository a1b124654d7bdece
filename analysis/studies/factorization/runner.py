"""The factorization study's two grids, each cell cached on disk by its configuration and the model.

- :func:`decoder_grid`: every (method, ratio) cell of the decoder, scored by perplexity,
  multiple choice and fact recall (:mod:`~analysis.studies.factorization.evaluation`);
- :func:`encoder_grid` and :func:`decoder_probe_grid`: the same cells probed layer by layer with
  :mod:`analysis.probing` (task and control), as the seed probes its models;
- :func:`probe_frame` reduces a probe grid to the seed's numbers (top-4-layer mean), and
  :func:`rank_table` says what each ratio means in rank.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd
import torch

from analysis import compress, probing
from analysis.cache import cached
from analysis.components import parameter_name
from analysis.data import lm_tokens, load_task
from analysis.evaluate import fact_recall, lm_score
from analysis.hooks import feature_hook
from analysis.models import model_key
from analysis.progress import progress
from analysis.studies.factorization.config import CACHE_VERSION, METHOD_LABELS, FactorConfig
from analysis.studies.factorization.evaluation import DecoderData, decoder_data, mc_accuracy

# --------------------------------------------------------------------------------------
# The decoder grid: perplexity, multiple choice, fact recall
# --------------------------------------------------------------------------------------


def _cells(cfg: FactorConfig) -> list[tuple[str, float]]:
    return [("none", 0.0)] + [(m, r) for m in cfg.methods for r in cfg.ratios]


def decoder_context(model, cfg: FactorConfig, data: DecoderData, methods: Sequence[str]) -> compress.Context:
    """Calibration statistics for the decoder's factorized MLPs (only those ``methods`` need)."""
    kinds = sorted({k for m in methods for k in compress.STATS_NEEDED[m]})
    weights = compress.mlp_weights(model, cfg.decoder_layers)
    if not kinds:
        return compress.Context(model=model)
    return compress.calibration_stats(
        model,
        data.calib_tokens,
        weights,
        kinds=kinds,
        context=cfg.context,
        batch_size=cfg.batch_size,
        max_grad_examples=cfg.grad_examples,
    )


def score_decoder(model, cfg: FactorConfig, data: DecoderData) -> dict[str, float]:
    """Perplexity, fact and TruthfulQA multiple-choice accuracy, and known-fact recall of ``model`` now."""
    lm = lm_score(model, data.eval_tokens, cfg.context, batch_size=cfg.batch_size)
    recall = (
        fact_recall(model, data.known["prompt"][:], data.known["target"][:]).float().mean().item()
        if len(data.known)
        else float("nan")
    )
    return {
        "perplexity": lm.perplexity,
        "next-token acc": lm.accuracy,
        "fact mc acc": mc_accuracy(model, data.fact_mc, batch_size=cfg.batch_size),
        "truthfulqa mc acc": mc_accuracy(model, data.mc, batch_size=cfg.batch_size),
        "fact recall": recall,
    }


def decoder_grid(model, cfg: FactorConfig, data: DecoderData | None = None, state: dict | None = None) -> pd.DataFrame:
    """One row per (method, ratio) cell, plus the uncompressed model: scores, rank and parameters removed.

    ``state`` (a dict shared with :func:`decoder_probe_grid`) keeps the calibration statistics and
    decompositions, which are built only when some cell is not cached yet.
    """
    data = data or decoder_data(model, cfg)
    state = {} if state is None else state

    def run(cell):
        method, ratio = cell
        if method == "none":
            return {**score_decoder(model, cfg, data), "removed": 0.0, "rank W_in": None}
        if "ctx" not in state:
            state["ctx"] = decoder_context(model, cfg, data, cfg.methods)
            state["svd"] = {}
        plan = compress.factorization_plan(
            model,
            method,
            {l: ratio for l in _layers(model, cfg.decoder_layers)},
            context=state["ctx"],
            cache=state["svd"],
        )
        with plan.applied(model) as report:
            scores = score_decoder(model, cfg, data)
        d_in, d_out = compress.to_linear("blocks.0.mlp.W_in", model.blocks[0].mlp.W_in).shape
        return {**scores, "removed": 1 - report.ratio, "rank W_in": compress.rank_for_ratio(d_in, d_out, ratio)}

    rows, key = [], model_key(model)
    for cell in progress(_cells(cfg), desc="decoder grid"):
        out = cached(
            "factorization-decoder",
            lambda: run(cell),
            config={"cfg": _decoder_key(cfg), "cell": cell, "v": CACHE_VERSION},
            model=key,
        )
        rows.append({"method": METHOD_LABELS.get(cell[0], "none"), "ratio": cell[1], **out})
    return pd.DataFrame(rows)


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
        "n_mc",
        "n_fact_mc",
        "mc_choices",
        "batch_size",
    )
    return {k: getattr(cfg, k) for k in keys}


# --------------------------------------------------------------------------------------
# The encoder grid: probes with control tasks on every layer
# --------------------------------------------------------------------------------------


def probe_tasks(cfg: FactorConfig) -> dict[str, Any]:
    """The probing datasets, by the seed's task name (:data:`analysis.probing.PROBE_TASKS`)."""
    return {seed: load_task(ours, n=cfg.n_probe, seed=0) for seed, (ours, _) in probing.PROBE_TASKS.items()}


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


def encoder_context(encoder, cfg: FactorConfig, methods: Sequence[str]) -> compress.Context:
    """Activation statistics on held-out prose and Fisher rows from the acceptability task."""
    weights = compress.mlp_weights(encoder)
    kinds = sorted({k for m in methods for k in compress.STATS_NEEDED[m]} - {"grad2"})
    stats: dict = {}
    if kinds:
        toks = lm_tokens(encoder.tokenizer, "calib", cfg.encoder_calib_tokens)
        stats.update(
            compress.calibration_stats(
                encoder, toks, weights, kinds=kinds, context=128, batch_size=cfg.batch_size
            ).stats
        )
    if "fwsvd" in methods:
        ds = load_task(probing.PROBE_TASKS["CoLA"][0], n=cfg.encoder_grad_examples, seed=1)
        enc = encoder.tokenizer(ds["text"][:], return_tensors="pt", padding=True, truncation=True, max_length=128)
        stats.update(
            compress.calibration_stats(
                encoder,
                enc["input_ids"],
                weights,
                kinds=("grad2",),
                attention_mask=enc["attention_mask"],
                loss_fn=_task_loss(encoder, ds, cfg),
            ).stats
        )
    return compress.Context(model=encoder, stats=stats)


def encoder_grid(encoder, cfg: FactorConfig, tasks: dict | None = None) -> dict[tuple[str, float], dict]:
    """``{(method, ratio): {task: ProbeResult}}`` for every cell (``("none", 0.0)``: uncompressed)."""
    tasks = tasks or probe_tasks(cfg)
    state: dict = {}

    def run(cell):
        method, ratio = cell
        if method == "none":
            return {t: probing.probe_dataset(encoder, ds, cfg.probe) for t, ds in tasks.items()}
        if "ctx" not in state:
            state["ctx"] = encoder_context(encoder, cfg, cfg.methods)
            state["svd"] = {}
        plan = compress.factorization_plan(encoder, method, ratio, context=state["ctx"], cache=state["svd"])
        with plan.applied(encoder):
            return {t: probing.probe_dataset(encoder, ds, cfg.probe) for t, ds in tasks.items()}

    key = {k: getattr(cfg, k) for k in ("n_probe", "probe", "encoder_calib_tokens", "encoder_grad_examples")}
    mkey = model_key(encoder)
    return {
        cell: cached(
            "factorization-encoder",
            lambda: run(cell),
            config={"cfg": key, "cell": cell, "v": CACHE_VERSION},
            model=mkey,
        )
        for cell in progress(_cells(cfg), desc="encoder grid")
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


def decoder_probe_grid(
    model, cfg: FactorConfig, data: DecoderData | None = None, state: dict | None = None
) -> dict[tuple[str, float], dict]:
    """``{(method, ratio): {task: ProbeResult}}`` on the decoder, at :attr:`FactorConfig.decoder_probe_ratios`."""
    tasks = {seed: load_task(ours, n=cfg.n_decoder_probe, seed=0) for seed, (ours, _) in probing.PROBE_TASKS.items()}
    state = {} if state is None else state

    def run(cell):
        method, ratio = cell
        if method == "none":
            return {
                t: probing.probe_dataset(model, ds, cfg.probe, batch_size=cfg.batch_size) for t, ds in tasks.items()
            }
        if "ctx" not in state:
            d = data or decoder_data(model, cfg)
            state["ctx"] = decoder_context(model, cfg, d, cfg.methods)
            state["svd"] = {}
        plan = compress.factorization_plan(
            model,
            method,
            {l: ratio for l in _layers(model, cfg.decoder_layers)},
            context=state["ctx"],
            cache=state["svd"],
        )
        with plan.applied(model):
            return {
                t: probing.probe_dataset(model, ds, cfg.probe, batch_size=cfg.batch_size) for t, ds in tasks.items()
            }

    cells = [("none", 0.0)] + [(m, r) for m in cfg.decoder_probe_methods for r in cfg.decoder_probe_ratios]
    key = {"decoder": _decoder_key(cfg), "n": cfg.n_decoder_probe, "probe": cfg.probe}
    mkey = model_key(model)
    return {
        cell: cached(
            "factorization-decoder-probes",
            lambda: run(cell),
            config={"cfg": key, "cell": cell, "v": CACHE_VERSION},
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
