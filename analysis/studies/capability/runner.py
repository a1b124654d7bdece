"""The study, step by step: each step cached on its configuration and the model's content."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from analysis import data, sae, stats, wanda
from analysis.cache import cached
from analysis.models import model_key
from analysis.studies.capability.ablation import break_point, head_ablation, spread_heads, transition_curves
from analysis.studies.capability.budget import budget_comparison
from analysis.studies.capability.config import DensityConfig


def domain_tokens(model, domains: Sequence[str], n_tokens: int) -> dict[str, Tensor]:
    """``n_tokens`` tokens of text per domain: held-out Wikipedia (``lm_tokens`` eval split),
    the squad_shifts domains of the ``topic`` task (``nyt``, ``reddit``, ``amazon``, ``wiki``)
    and source code (``code``), each text wrapped in BOS/EOS and concatenated."""
    out: dict[str, Tensor] = {}
    for domain in domains:
        if domain == "wikipedia":
            out[domain] = data.lm_tokens(model.tokenizer, "eval", n_tokens=n_tokens)
            continue
        ds = data.load_task("code_language" if domain == "code" else "topic")
        names = ds.features["label"].names
        ids: list[int] = []
        for text, label in zip(ds["text"], ds["label"]):
            if domain != "code" and domain not in names[label].lower():
                continue
            ids.extend(data.document_token_ids(model.tokenizer, text))
            if len(ids) >= n_tokens:
                break
        if len(ids) < n_tokens:
            raise ValueError(f"Domain {domain!r} has only {len(ids)} tokens; asked for {n_tokens}.")
        out[domain] = torch.tensor(ids[:n_tokens], dtype=torch.long)
    return out


@dataclass
class DensityStudy:
    """The trained SAEs of one model and everything measured from them and from its weights."""

    model_name: str
    saes: dict[str, Any]
    stats: sae.LatentStats
    quality: pd.DataFrame
    """:func:`analysis.sae.sae_quality` per SAE."""
    maps: dict[str, Tensor]
    """``{"breadth", "entropy", "consistency", "density", "wanda"}``, each ``[n_layers, n_heads]``."""

    def headline(self, cfg: DensityConfig) -> dict[str, float]:
        """Spearman ρ(density, Wanda) over all heads, with bootstrap CI and permutation p."""
        return stats.rank_test(self.maps["density"], self.maps["wanda"], cfg.n_boot, cfg.n_perm, cfg.seed)

    def within_layers(self, cfg: DensityConfig) -> dict[str, float]:
        """ρ(density, Wanda) between heads of the same layer, heads permuted within their layer."""
        d = self.maps["density"]
        layer = torch.arange(d.shape[0])[:, None].expand(d.shape)
        return stats.stratified_permutation_test(d, self.maps["wanda"], layer, cfg.n_perm, cfg.seed)

    def layer_shares(self) -> dict[str, float]:
        """The share of each map's variance that lies between layers."""
        return {k: stats.layer_share(v) for k, v in self.maps.items()}


def run_density_study(model, cfg: DensityConfig) -> DensityStudy:
    """Train (or load) the SAEs, measure their quality, the density map and Wanda per head."""
    key_model = model_key(model)
    saes = sae.trained_saes(model, data.lm_tokens(model.tokenizer, "train", n_tokens=cfg.sae.train_tokens), cfg.sae)
    groups = domain_tokens(model, cfg.domains, cfg.eval_tokens_per_domain)
    ctx, skip = cfg.sae.context, cfg.sae.skip_first
    key = {"sae": cfg.sae, "domains": cfg.domains, "eval": cfg.eval_tokens_per_domain}
    latents = cached(
        "sae_latent_stats", lambda: sae.latent_stats(model, saes, groups, ctx, skip_first=skip), key, key_model
    )
    ce_tokens = data.lm_tokens(model.tokenizer, "eval", n_tokens=cfg.ce_tokens)
    quality = cached(
        "sae_quality",
        lambda: sae.sae_quality(model, saes, latents, ce_tokens, ctx, cfg.layers),
        {**key, "ce": cfg.ce_tokens, "layers": cfg.layers},
        key_model,
    )
    maps = sae.density_map(latents, saes, model.cfg.n_layers, model.cfg.n_heads, cfg.breadth_eps)
    calib = data.lm_tokens(model.tokenizer, "calib", n_tokens=cfg.calib_tokens)
    norms = cached("wanda_norms", lambda: wanda.input_norms(model, calib, ctx), {"calib": cfg.calib_tokens}, key_model)
    maps["wanda"] = wanda.wanda_head_scores(model, norms)
    return DensityStudy(model.cfg.model_name, saes, latents, quality, maps)


def known_fact_set(model, cfg: DensityConfig) -> tuple[list[str], list[str], dict]:
    """The first ``n_facts`` of the facts the model knows among ``n_screen`` screened
    (:func:`analysis.data.known_facts`, cached once per model): prompts, targets, screen stats."""
    known, screen = data.known_facts(model, cfg.n_screen, cache=True)
    known = known.select(range(min(cfg.n_facts, len(known))))
    return list(known["prompt"]), list(known["target"]), screen


def run_ablation(model, cfg: DensityConfig, prompts: Sequence[str], targets: Sequence[str]) -> dict[str, Tensor]:
    """:func:`head_ablation` of every head on the evaluation text and the known facts (cached)."""
    tokens = data.lm_tokens(model.tokenizer, "eval", n_tokens=cfg.ablation_tokens)
    return cached(
        "sae_head_ablation",
        lambda: head_ablation(model, tokens, prompts, targets, cfg.sae.context, layers=cfg.layers),
        {"tokens": cfg.ablation_tokens, "prompts": list(prompts), "layers": cfg.layers},
        model_key(model),
    )


def head_rank_test(x: Tensor, y: Tensor, cfg: DensityConfig) -> dict[str, float]:
    """:func:`analysis.stats.rank_test` over the heads where both are measured (a constant side,
    e.g. fact-recall drops that are all 0, leaves ρ, its interval and p undefined)."""
    return stats.rank_test(x, y, cfg.n_boot, cfg.n_perm, cfg.seed)


def importance_table(maps: Mapping[str, Tensor], ablation: Mapping[str, Tensor], cfg: DensityConfig) -> pd.DataFrame:
    """Density and Wanda against each head's direct importance: :func:`head_rank_test` over the
    heads measured, and the partial ρ given the other signal."""
    importance = {
        "ΔCE when ablated": ablation["loss"],
        "Δ log p(answer) when ablated": ablation["logp"],
        "Δ fact recall when ablated": ablation["recall"],
    }
    rows = {}
    for name, imp in importance.items():
        for sig, other in (("density", "wanda"), ("wanda", "density")):
            r = head_rank_test(maps[sig], imp, cfg)
            rows[(name, sig)] = {**r, "partial ρ given the other": stats.partial_spearman(maps[sig], imp, maps[other])}
    return pd.DataFrame(rows).T


def run_transitions(model, cfg: DensityConfig, density: Tensor, ablation_loss: Tensor) -> dict[str, Any]:
    """Sparsity curves of ``transition_heads`` heads spread over the density range, where each
    breaks, and ρ(density, break point) over the heads that have one (None when fewer than 3)."""
    heads = spread_heads(density.masked_fill(ablation_loss.isnan(), float("nan")), cfg.transition_heads)
    tokens = data.lm_tokens(model.tokenizer, "eval", n_tokens=cfg.ablation_tokens)
    curves = cached(
        "sae_transitions",
        lambda: transition_curves(model, tokens, heads, cfg.transition_levels, cfg.sae.context),
        {"tokens": cfg.ablation_tokens, "heads": heads, "levels": cfg.transition_levels},
        model_key(model),
    )
    breaks = torch.tensor(
        [
            break_point(cfg.transition_levels, curves[i].tolist(), float(ablation_loss[l, h]), cfg.break_fraction)
            for i, (l, h) in enumerate(heads)
        ]
    )
    dens = torch.stack([density[l, h] for l, h in heads])
    test = head_rank_test(dens, breaks, cfg) if int((~breaks.isnan()).sum()) >= 3 else None
    return {
        "heads": heads,
        "curves": curves,
        "breaks": breaks,
        "density": dens,
        "test": test,
        "ablation": torch.stack([ablation_loss[l, h] for l, h in heads]),
    }


def run_budget(
    model, cfg: DensityConfig, density: Tensor, wanda_scores: Tensor, prompts: Sequence[str], targets: Sequence[str]
) -> pd.DataFrame:
    """:func:`budget_comparison` on held-out text, the known facts and the probe task (cached)."""
    tokens = data.lm_tokens(model.tokenizer, "eval", n_tokens=cfg.ppl_tokens)
    task = data.load_task(cfg.probe_task, n=cfg.n_probe, seed=cfg.seed)
    key = {"cfg": cfg, "density": density.tolist(), "wanda": wanda_scores.tolist(), "prompts": list(prompts)}
    return cached(
        "sae_budget",
        lambda: budget_comparison(
            model,
            density,
            wanda_scores,
            cfg,
            tokens,
            prompts,
            targets,
            list(task["text"]),
            list(task["label"]),
            cfg.sae.context,
        ),
        key,
        model_key(model),
    )
