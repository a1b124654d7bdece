"""The AdaptiveCompress study: train every SAE on the same cached activations, measure, probe.

:func:`run` collects ``hook_resid_post`` of the seed's layers (moved to the same relative depth)
once, trains AdaptiveCompress (as specified, its ablations, a corrected variant) and the sae-lens
baselines (standard, TopK and BatchTopK at the corrected variant's L0) for every seed, measures
SAEBench's core metrics on held-out tokens and runs sparse probing at the middle layer. The
result is cached on disk, keyed by the configuration and the model's content.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pandas as pd
import torch
from sae_lens.evals import ExplainedVarianceCalculator
from transformer_lens import HookedTransformer

from analysis import cache
from analysis.config import Profile
from analysis.data import lm_tokens, load_task
from analysis.forward import windows
from analysis.models import model_key
from analysis.sae import activations, adaptive, saebench
from analysis.studies.adaptive import splits
from analysis.studies.adaptive.config import CORRECTED, MAIN, VARIANTS, AdaptiveConfig, config_for
from analysis.studies.adaptive.results import AdaptiveResults

VERSION = 2
"""Bumped when what :func:`compute` measures changes. 2: KL/CE score every sequence and count the
positions they average over exactly (``kl_tokens``, BOS excluded); probing texts whose Wikipedia article
trained the SAEs are left out (:func:`~analysis.studies.adaptive.splits.unseen`)."""


def activation_scale(acts: torch.Tensor) -> float:
    """``s = sqrt(E‖x‖² / d)``: dividing by it normalises activations to ``E‖x‖² = d``."""
    return float(acts.double().pow(2).sum(1).mean().sqrt() / acts.shape[1] ** 0.5)


def _adaptive(d: int, cfg: AdaptiveConfig, variant: str, scale: float, device: str = "cpu"):
    fields = {
        "warmup_steps": int(cfg.warmup_frac * cfg.steps),
        "decay_steps": max(1, int(cfg.decay_frac * cfg.steps)),
        **VARIANTS[variant],
    }
    if variant == CORRECTED:  # the seed's λ, in units of normalised activations
        fields["l1_coefficient"] = cfg.corrected_l1 * scale
    return adaptive.AdaptiveCompressTrainingSAE(
        adaptive.training_config(d, cfg.width_mult * d, device=device, **fields)
    )


def training_runs(layers: list[int], cfg: AdaptiveConfig) -> list[tuple[int, str]]:
    """``(layer, sae)`` pairs in training order: the main SAEs at every layer, ablations at the middle
    one; the corrected variant comes before the baselines whose L0 it sets."""
    mid = layers[len(layers) // 2]
    order = [CORRECTED] + [s for s in MAIN if s != CORRECTED] + [v for v in cfg.variants if v not in MAIN]
    return [(l, s) for l in layers for s in order if s in MAIN or l == mid]


def _train_one(name, d, cfg, acts, seed, matched_k, device):
    torch.manual_seed(seed)
    scale = activation_scale(acts)
    if name in VARIANTS:
        sae = _adaptive(d, cfg, name, scale, device)
    else:
        width = cfg.width_mult * d
        sae = activations.baseline(name, d, width, k=matched_k, l1=cfg.standard_l1 * scale, device=device)
    tc = activations.TrainConfig(steps=cfg.steps, batch_tokens=cfg.batch_tokens, lr=cfg.lr)
    sae, curve = activations.train(sae, acts, tc, seed=seed, desc=name)
    with tempfile.TemporaryDirectory() as tmp:
        return activations.for_inference(sae, Path(tmp) / "sae"), curve


def _measure(model, cfg, layers, train, held, eval_seqs) -> tuple[list, list, dict]:
    rows, curves, probe_saes = [], [], {}
    mid = layers[len(layers) // 2]
    d = model.cfg.d_model
    for seed in cfg.seeds:
        matched: dict[int, float] = {}
        for layer, name in training_runs(layers, cfg):
            k = max(1.0, matched.get(layer, 1.0))
            sae, curve = _train_one(name, d, cfg, train[layer], seed, k, str(model.cfg.device))
            m = saebench.sparsity_and_variance(sae, held[layer])
            if name == CORRECTED:
                matched[layer] = round(m["L0"], 1)
            if seed == cfg.seeds[0]:
                m.update(
                    saebench.downstream(model, sae, layer, eval_seqs[: cfg.ce_seqs], batch_prompts=min(cfg.ce_seqs, 8))
                )
            rows.append(
                {"layer": layer, "sae": name, "seed": seed, "k": k if name in ("topk", "batchtopk") else None, **m}
            )
            curves += [{"layer": layer, "sae": name, "seed": seed, **c} for c in curve]
            if layer == mid and name in MAIN:
                probe_saes[f"{name}|{seed}"] = sae
    return rows, curves, probe_saes


def _probe(model, cfg, layer, saes) -> list[dict]:
    rows = []
    encoders = {key: sae.encode for key, sae in saes.items()}
    seen = splits.sae_training_titles(model, cfg.train_tokens)
    for task in cfg.tasks:
        full = load_task(task)
        ds = load_task(task, n=min(cfg.n_probe, len(full)))
        ds = ds.select([i for i, ok in enumerate(splits.unseen(ds["group"], seen)) if ok])
        feats = saebench.pooled(model, ds["text"], layer, encoders, cfg.probe_max_len)
        n_classes = len(ds.features["label"].names)
        for seed in cfg.seeds:
            sub = {"residual": feats["residual"]}
            sub.update({k.split("|")[0]: v for k, v in feats.items() if k.endswith(f"|{seed}")})
            setup = saebench.ProbeSetup(ks=cfg.ks, seed=seed)
            for r in saebench.probe_task(sub, ds["label"], ds["group"], n_classes, setup):
                rows.append({"task": task, "seed": seed, **r})
    return rows


def compute(model: HookedTransformer, cfg: AdaptiveConfig) -> AdaptiveResults:
    """:func:`run` without the cache."""
    layers = activations.relative_layers(model, cfg.seed_layers, cfg.seed_n_layers)
    bos = model.tokenizer.bos_token_id
    train_seqs = windows(lm_tokens(model, "train", cfg.train_tokens), cfg.context, bos)
    eval_seqs = windows(lm_tokens(model, "eval", cfg.eval_tokens), cfg.context, bos)
    train = activations.collect_resid(model, train_seqs, layers)
    held = activations.collect_resid(model, eval_seqs, layers)
    rows, curves, probe_saes = _measure(model, cfg, layers, train, held, eval_seqs)
    mid = layers[len(layers) // 2]
    probes = _probe(model, cfg, mid, probe_saes)
    kl = pd.DataFrame(rows).get("kl_tokens", pd.Series(dtype=float)).dropna()
    tokens = {
        "train": len(train[layers[0]]),
        "held-out": len(held[layers[0]]),
        "KL/CE": int(kl.max()) if len(kl) else 0,
    }
    skip = {l: skip_only_ev(held[l]) for l in layers}
    return AdaptiveResults(layers, mid, pd.DataFrame(rows), pd.DataFrame(curves), pd.DataFrame(probes), tokens, skip)


def skip_only_ev(acts: torch.Tensor, skip: float = 0.1) -> float:
    """sae-lens's explained variance of the reconstruction ``skip * x`` (an empty code plus the skip)."""
    ev = ExplainedVarianceCalculator()
    ev.add_batch(sae_output=skip * acts, hidden_acts=acts)
    return ev.compute()


def run(model: HookedTransformer, profile: Profile | str, refresh: bool = False) -> AdaptiveResults:
    """The study's measurements under ``profile`` (:func:`~analysis.studies.adaptive.config.config_for`),
    from the disk cache when this model and config ran before."""
    cfg = config_for(profile)
    key = {**{k: v for k, v in dataclasses.asdict(cfg).items() if k != "extra"}, "version": VERSION}
    return cache.cached("adaptive_study", lambda: compute(model, cfg), key, model_key(model), refresh=refresh)
