"""Density against every importance metric the seed's "orthogonal to all existing importance
metrics" covers: Wanda, weight magnitude, the gradient (first-order Taylor) score, causal tracing of
single heads and its attribution-patching estimate, each per head (:class:`MetricMaps`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import data, scores, wanda
from analysis.cache import cached
from analysis.forward import first_target_token, prompt_batch
from analysis.models import model_key
from analysis.studies.capability.config import DensityConfig
from analysis.studies.capability.results import HeadTest
from analysis.studies.capability.texts import text_plan

METRICS = {
    "wanda": "Wanda |W|·‖X‖",
    "magnitude": "weight magnitude |W|",
    "gradient": "gradient |W·∂L/∂W|",
    "causal tracing": "causal tracing (head restored)",
    "attribution patching": "attribution patching",
}
"""Each importance metric (a key of :meth:`MetricMaps.as_dict`) and its name in tables."""


@dataclass(frozen=True)
class MetricMaps:
    """Every importance metric per head ``[n_layers, n_heads]`` and the fact pairs the patching used."""

    wanda: Tensor
    magnitude: Tensor
    gradient: Tensor
    tracing: Tensor
    """Causal tracing of single heads (:func:`analysis.scores.head_patching`)."""
    attribution: Tensor
    """Its attribution-patching estimate (:func:`analysis.scores.head_attribution`)."""
    n_pairs: int

    def as_dict(self) -> dict[str, Tensor]:
        """``{name of METRICS: map}``."""
        maps = (self.wanda, self.magnitude, self.gradient, self.tracing, self.attribution)
        return dict(zip(METRICS, maps))


def swap_pairs(model: HookedTransformer, facts) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """Clean and corrupted prompts that differ only in the subject: each fact paired with the next
    fact of its relation whose prompt has as many tokens (the prompt starts with the subject, so the
    template's tokens stay aligned). Returns ``(clean, corrupt, last, target)``: right-padded tokens,
    each row's last index and the clean answer's first token; None when no two facts pair up."""
    by_key: dict[tuple[str, int], list[int]] = {}
    lengths = [model.to_tokens(p).shape[1] for p in facts["prompt"]]
    for i, (rel, n) in enumerate(zip(facts["relation"], lengths)):
        by_key.setdefault((rel, n), []).append(i)
    pairs = [(g[j], g[(j + 1) % len(g)]) for g in by_key.values() if len(g) > 1 for j in range(len(g))]
    if not pairs:
        return None
    pairs = [p for p in pairs if facts["target"][p[0]] != facts["target"][p[1]]] or pairs
    clean, last = prompt_batch(model, [facts["prompt"][i] for i, _ in pairs])
    corrupt, _ = prompt_batch(model, [facts["prompt"][j] for _, j in pairs])
    target = torch.tensor([first_target_token(model, facts["target"][i]) for i, _ in pairs])
    return clean, corrupt, last.cpu(), target


def run_metrics(model: HookedTransformer, cfg: DensityConfig, wanda_scores: Tensor) -> MetricMaps:
    """The importance metrics beside Wanda: weight magnitude, the gradient score on the first
    ``cfg.gradient_tokens`` calibration tokens, and causal tracing and attribution patching of
    single heads on subject-swapped pairs of the first ``cfg.patch_facts`` ``"score"``-split facts
    (facts that judge nothing here). Cached on those sizes and the model."""
    calib = text_plan(cfg)["choosing"]["gradient importance"].tokens(model)
    facts = data.fact_splits(model, cfg.n_screen)["score"]
    facts = facts.select(range(min(cfg.patch_facts, len(facts))))

    def compute() -> dict:
        out = {
            "magnitude": wanda.magnitude_head_scores(model),
            "gradient": wanda.gradient_head_scores(model, calib, cfg.sae.context),
        }
        pairs = swap_pairs(model, facts)
        if pairs is None:  # no pair to patch: the patching metrics are unmeasured (NaN), their verdicts open
            nan = torch.full((model.cfg.n_layers, model.cfg.n_heads), float("nan"))
            return {**out, "tracing": nan, "attribution": nan.clone(), "n_pairs": 0}
        return {
            **out,
            "tracing": scores.head_patching(model, *pairs),
            "attribution": scores.head_attribution(model, *pairs),
            "n_pairs": len(pairs[2]),
        }

    key = {"gradient": cfg.gradient_tokens, "facts": list(facts["id"]), "context": cfg.sae.context, "v": 1}
    stored = cached("capability_metrics", compute, key, model_key(model))
    return MetricMaps(wanda=wanda_scores, **stored)


def metric_tests(density: Tensor, metrics: MetricMaps, test) -> dict[str, HeadTest]:
    """``test(density, metric)`` (:func:`~analysis.studies.capability.run.head_test`) per metric."""
    return {name: test(density, m) for name, m in metrics.as_dict().items()}


__all__ = ["METRICS", "MetricMaps", "metric_tests", "run_metrics", "swap_pairs"]
