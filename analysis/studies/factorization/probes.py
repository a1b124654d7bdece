"""The factorization study's probe steps: the encoder grid and the decoder's probed cells.

The seed judges what a factorization keeps by probing every layer's hidden states with 2-layer MLP
probes and Hewitt & Liang's control tasks. :func:`encoder_grid` probes the encoder at the seed's
encoder grid (FWSVD's Fisher from :func:`fisher_sample`'s labelled texts outside every probe set),
:func:`decoder_probe_grid` the decoder at a few cells of its grid; each returns a
:class:`~analysis.studies.factorization.results.ProbeGrid`, every cell cached on disk by its
configuration and the model. :func:`probe_frame` reduces a grid to the seed's numbers (the
top-4-layer mean) and :func:`control_coverage` says whether the control tasks can measure anything.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from analysis import compress, probing
from analysis.cache import cached
from analysis.data import lm_tokens, load_task
from analysis.hooks import feature_hook
from analysis.models import model_key
from analysis.progress import progress
from analysis.studies.factorization.config import CACHE_VERSION, METHOD_LABELS, METHOD_OPS, FactorConfig
from analysis.studies.factorization.evaluation import DecoderData, decoder_data
from analysis.studies.factorization.results import ProbeGrid
from analysis.studies.factorization.run import decoder_key, plan_for, sensitivity_key


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

    def loss(model: HookedTransformer, tokens, mask, row):
        got = []
        with model.hooks(fwd_hooks=[(hook, lambda a, hook: got.append(a))]):
            model.encoder_output(tokens, None, mask)
        pooled = (got[0] * (mask / mask.sum(1, keepdim=True))[..., None]).sum(1)  # [1, d_model]
        logits = head.logits(pooled[None])
        return torch.nn.functional.cross_entropy(logits[0], y[row : row + 1])

    return loss


def encoder_context(
    encoder, cfg: FactorConfig, methods: Sequence[str], probe_sets: dict[str, Any]
) -> compress.Calibration:
    """Activation statistics on held-out prose; Fisher rows from :attr:`FactorConfig.fisher_task` outside the probe sets."""
    weights = compress.mlp_weights(encoder)
    kinds = sorted({k for m in methods for k in compress.STATS_NEEDED[METHOD_OPS.get(m, m)]} - {"grad2"})
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
    return compress.Calibration(model=encoder, stats=found)


def encoder_grid(encoder, cfg: FactorConfig, tasks: dict | None = None) -> ProbeGrid:
    """``{(method, ratio): {task: ProbeResult}}`` for the encoder cells (``("none", 0.0)``: uncompressed),
    and the probed ``tasks`` (default :func:`probe_tasks`)."""
    tasks = tasks or probe_tasks(cfg)
    state: dict = {}

    def run(cell):
        method, ratio = cell
        if method == "none":
            return {t: probing.probe_dataset(encoder, ds, cfg.probe) for t, ds in tasks.items()}
        if "ctx" not in state:
            state["ctx"] = encoder_context(encoder, cfg, cfg.encoder_methods, tasks)
            state["svd"] = {}
        plan = compress.factorization_plan(encoder, method, ratio, calibration=state["ctx"], cache=state["svd"])
        with plan.applied(encoder):
            return {t: probing.probe_dataset(encoder, ds, cfg.probe) for t, ds in tasks.items()}

    keys = ("n_probe", "probe", "encoder_calib_tokens", "encoder_grad_examples", "fisher_task")
    key = {k: getattr(cfg, k) for k in keys}
    mkey = model_key(encoder)
    cells = [("none", 0.0)] + [(m, r) for m in cfg.encoder_methods for r in cfg.encoder_ratios]
    results = {
        cell: cached(
            "factorization-encoder",
            lambda: run(cell),
            config={"cfg": key, "cell": cell, "v": CACHE_VERSION},
            model=mkey,
        )
        for cell in progress(cells, desc="encoder grid")
    }
    return ProbeGrid(results, tasks)


def probe_frame(grid: ProbeGrid, kind: str = "mlp", layers: Sequence[int] | None = None) -> pd.DataFrame:
    """Probe accuracy (mean over ``layers``, default the top 4 as in the seed), control and selectivity per cell."""
    rows = []
    for (m, r), results in grid.cells.items():
        row = {"method": METHOD_LABELS.get(m, "none"), "ratio": r}
        for t, res in results.items():
            L = res.acc[kind]["task"].shape[0]
            sel = list(layers) if layers is not None else list(range(max(0, L - 4), L))
            s = res.summary(kind, sel)
            row[t], row[f"{t} control"], row[f"{t} selectivity"] = s["task"], s["control"], s["selectivity"]
        rows.append(row)
    return pd.DataFrame(rows)


def control_coverage(grid: ProbeGrid) -> pd.DataFrame:
    """Per task: share of test rows whose control type occurs in training (want >= 0.9), and the test size."""
    res = next(iter(grid.cells.values()))
    return pd.DataFrame(
        [
            {"task": t, "test types seen in training": r.coverage, "test rows per split": sum(r.n_test) / len(r.n_test)}
            for t, r in res.items()
        ]
    ).set_index("task")


def decoder_probe_grid(
    model: HookedTransformer,
    cfg: FactorConfig,
    data: DecoderData | None = None,
    state: dict | None = None,
    tasks: dict | None = None,
) -> ProbeGrid:
    """``{(method, ratio): {task: ProbeResult}}`` on the decoder, at :attr:`FactorConfig.decoder_probe_ratios`,
    every example tested once (``cfg.decoder_probe.folds``), and the probed ``tasks`` (default
    :func:`probe_tasks` at :attr:`FactorConfig.n_decoder_probe`)."""
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
    key = {"decoder": decoder_key(cfg), "n": cfg.n_decoder_probe, "probe": cfg.decoder_probe}
    mkey = model_key(model)
    results = {
        cell: cached(
            "factorization-decoder-probes",
            lambda: run(cell),
            config={"cfg": key, "cell": cell, "v": CACHE_VERSION} | sensitivity_key(cfg, cell),
            model=mkey,
        )
        for cell in progress(cells, desc="decoder probes")
    }
    return ProbeGrid(results, tasks)
