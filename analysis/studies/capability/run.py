"""The study, step by step: each step cached on its configuration and the model's content, and
each returning a typed result (:mod:`~analysis.studies.capability.results`).

The chapter runs the steps one at a time, with text between them: :func:`run_density_study`,
:func:`run_sae_ladder`, :func:`known_fact_set`, :func:`run_ablation`, :func:`importance_table`,
:func:`run_transitions` and :func:`run_budget`."""

from __future__ import annotations

import dataclasses
from typing import Collection, Sequence

import pandas as pd
import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import data, sae, stats, wanda
from analysis.cache import cached
from analysis.models import model_key
from analysis.studies.capability.ablation import break_point, head_ablation, spread_heads, transition_curves
from analysis.studies.capability.budget import budget_comparison
from analysis.studies.capability.config import CE_COST_FLOOR, DensityConfig
from analysis.studies.capability.results import (
    IMPORTANCE_MEASURES,
    Budget,
    CERecovered,
    DensityStudy,
    DirectImportance,
    FactSet,
    HeadAblation,
    HeadMaps,
    HeadTest,
    ImportanceTest,
    SignalTests,
    Transitions,
)
from analysis.studies.capability.texts import DENSITY_SPLIT, Span, probe_examples, text_plan


def domain_tokens(
    model: HookedTransformer, domains: Sequence[str], n_tokens: int, exclude: Collection[str] = ()
) -> dict[str, Tensor]:
    """``n_tokens`` tokens of text per domain, each text wrapped in BOS/EOS and concatenated:
    ``wikipedia`` is Wikipedia prose of the ``calib`` LM split (:data:`~analysis.studies.capability.texts.DENSITY_SPLIT`:
    disjoint from the SAEs' training split and from the ``eval`` text that judges); every other
    domain is that label of the ``domain`` task (``film_review``: Rotten Tomatoes snippets,
    ``code``: source-code snippets, ``exam_question``: MMLU questions, ``book_passage``: LAMBADA
    passages), in the task's order, leaving out every text in ``exclude`` (the probe's examples)."""
    out: dict[str, Tensor] = {}
    exclude = set(exclude)
    for domain in domains:
        if domain == "wikipedia":
            out[domain] = Span(DENSITY_SPLIT, 0, n_tokens).tokens(model)
            continue
        ds = data.load_task("domain")
        names = ds.features["label"].names
        if domain not in names:
            raise ValueError(f"Unknown domain {domain!r}; known: wikipedia (held-out prose), {', '.join(names)}.")
        ids: list[int] = []
        for text, label in zip(ds["text"], ds["label"]):
            if names[label] != domain or text in exclude:
                continue
            ids.extend(data.document_token_ids(model.tokenizer, text))
            if len(ids) >= n_tokens:
                break
        if len(ids) < n_tokens:
            raise ValueError(f"Domain {domain!r} has only {len(ids)} tokens; asked for {n_tokens}.")
        out[domain] = torch.tensor(ids[:n_tokens], dtype=torch.long)
    return out


def layer_labels(shape: tuple[int, int]) -> Tensor:
    """Each head's layer, ``[n_layers, n_heads]`` (the cluster of the head-level statistics)."""
    return torch.arange(shape[0])[:, None].expand(shape)


def head_test(x: Tensor, y: Tensor, cfg: DensityConfig, layers: Tensor | None = None) -> HeadTest:
    """Spearman ρ(x, y) over heads measured on both sides, with a *layer-cluster* bootstrap 95%
    interval (:func:`analysis.stats.cluster_bootstrap_ci`: whole layers resampled, since heads
    of one layer share their SAE and heads of one GQA group share K/V) and the within-layer ρ
    with its within-layer permutation p (:func:`analysis.stats.stratified_permutation_test`;
    NaN when no layer has 3 measured heads). ``layers`` labels each unit (default: the row of an
    ``[n_layers, n_heads]`` map).
    """
    x, y = torch.as_tensor(x).float(), torch.as_tensor(y).float()
    layers = layer_labels(tuple(x.shape)) if layers is None else torch.as_tensor(layers)
    x, y, layers = x.flatten(), y.flatten(), layers.flatten()
    ok = ~(x.isnan() | y.isnan())
    x, y, layers = x[ok].numpy(), y[ok].numpy(), layers[ok].numpy()
    n_layers = len(set(layers.tolist()))
    nan = float("nan")
    rho = stats.spearman(x, y) if len(x) >= 3 else nan  # too few heads measured (e.g. nothing to patch)
    out = {"rho": rho, "ci_low": nan, "ci_high": nan, "rho_within": nan, "p_within": nan}
    out.update(n=len(x), n_layers=n_layers)
    if len(x) < 3 or out["rho"] != out["rho"]:
        return HeadTest(**out)
    if n_layers >= 2:
        out["ci_low"], out["ci_high"] = stats.cluster_bootstrap_ci(x, y, layers, n_boot=cfg.n_boot, seed=cfg.seed)
    counts = torch.as_tensor(layers).unique(return_counts=True)[1]
    if int((counts >= 3).sum()) >= 1:
        w = stats.stratified_permutation_test(x, y, layers, cfg.n_perm, cfg.seed)
        out["rho_within"], out["p_within"] = w["rho"], w["p_perm"]
    return HeadTest(**out)


def run_density_study(
    model: HookedTransformer,
    cfg: DensityConfig,
    sae_cfg: sae.SAETrainConfig | None = None,
    pool: sae.ActivationPool | None = None,
) -> DensityStudy:
    """Train (or load) the SAEs (``sae_cfg``, default ``cfg.sae``; ``pool`` shares one activation
    pass between settings), measure their quality, the density map and Wanda per head, and the
    headline test ρ(density, Wanda) (:func:`head_test`). Every step is cached; Wanda does not
    depend on the SAEs."""
    sae_cfg = sae_cfg or cfg.sae
    key_model = model_key(model)
    train = data.lm_tokens(model.tokenizer, "train", n_tokens=sae_cfg.train_tokens)
    if pool is not None and not pool.matches(train, sae_cfg):
        pool = None
    saes = sae.trained_saes(model, train, sae_cfg, pool=pool)
    groups = domain_tokens(model, cfg.domains, cfg.eval_tokens_per_domain, exclude=probe_examples(cfg)["text"])
    ctx, skip = sae_cfg.context, sae_cfg.skip_first
    key = {"sae": sae_cfg, "domains": cfg.domains, "eval": cfg.eval_tokens_per_domain, "v": sae.LATENT_STATS_VERSION}
    key.update(text=DENSITY_SPLIT, probe=[cfg.probe_task, cfg.n_probe, cfg.seed])  # density on calib, not eval
    latents = cached(
        "sae_latent_stats", lambda: sae.latent_stats(model, saes, groups, ctx, skip_first=skip), key, key_model
    )
    plan = text_plan(cfg)
    ce_tokens = plan["judging"]["SAE CE loss recovered"].tokens(model)
    quality = cached(
        "sae_quality",
        lambda: sae.sae_quality(model, saes, latents, ce_tokens, ctx, cfg.layers),
        {**key, "ce": cfg.ce_tokens, "layers": cfg.layers},
        key_model,
    )
    parts = sae.density_map(latents, saes, model.cfg.n_layers, model.cfg.n_heads, cfg.breadth_eps)
    calib = plan["choosing"]["Wanda input norms"].tokens(model)
    norms = cached("wanda_norms", lambda: wanda.input_norms(model, calib, ctx), {"calib": cfg.calib_tokens}, key_model)
    maps = HeadMaps(**parts, wanda=wanda.wanda_head_scores(model, norms))
    return DensityStudy(model.cfg.model_name, saes, latents, quality, maps, head_test(maps.density, maps.wanda, cfg))


def quality_summary(quality: pd.DataFrame) -> dict[str, float]:
    """Medians over layers of explained variance, CE loss recovered (robust: the ratio is unstable
    where ablating a layer costs almost nothing), L0 and the dead fraction."""
    q = quality.astype(float)
    cols = ("explained variance", "CE loss recovered", "L0", "dead fraction")
    return {c: float(q[c].median()) for c in cols}


def ce_recovered(quality: pd.DataFrame, floor: float = CE_COST_FLOOR) -> CERecovered:
    """CE loss recovered over layers: the median, and the median over the layers whose
    ``hook_z`` costs at least ``floor`` nats to ablate (:data:`~analysis.studies.capability.config.CE_COST_FLOOR`)."""
    q = quality.astype(float)
    small = (q["CE ablated"] - q["CE clean"]).abs() < floor
    return CERecovered(
        q["CE loss recovered"].median(),
        q.loc[~small, "CE loss recovered"].median(),
        int((~small).sum()),
        int(small.sum()),
        floor,
    )


POOL_BYTES = 4 * 2**30
"""The most memory an activation pool may take; above it each SAE setting runs its own forward pass."""


def activation_pool(model: HookedTransformer, cfg: DensityConfig) -> sae.ActivationPool | None:
    """One :class:`analysis.sae.ActivationPool` for ``cfg.sae`` and every ladder setting (on the
    most training tokens any of them uses), filled by one forward pass on first use; None when it
    would exceed :data:`POOL_BYTES` (then every setting streams its own activations)."""
    n = max(c.train_tokens for c in (*cfg.ladder, cfg.sae))
    if 4 * n * model.cfg.n_layers * model.cfg.n_heads * model.cfg.d_head > POOL_BYTES:
        return None
    tokens = data.lm_tokens(model.tokenizer, "train", n_tokens=n)
    return sae.ActivationPool(
        model, tokens, cfg.sae.context, cfg.sae.skip_first, cfg.sae.granularity, cfg.sae.forward_batch
    )


def run_sae_ladder(
    model: HookedTransformer,
    cfg: DensityConfig,
    main: DensityStudy | None = None,
    pool: sae.ActivationPool | None = None,
) -> pd.DataFrame:
    """The headline test, ρ(density, Wanda) (:func:`head_test`), on SAEs of rising quality: each
    setting of ``cfg.ladder`` and then ``cfg.sae`` (the chapter's, last row). One row per setting:
    its size, :func:`quality_summary` and the test. ``main`` reuses the chapter's study and
    ``pool`` its activations (its headline test is the one :func:`run_density_study` made with ``cfg``)."""
    rows = []
    for i, sae_cfg in enumerate([*cfg.ladder, cfg.sae]):
        last = i == len(cfg.ladder)
        study = main if (main is not None and last) else run_density_study(model, cfg, sae_cfg, pool)
        rows.append(
            {
                "SAE setting": f"{sae_cfg.train_tokens} tok x {sae_cfg.epochs} ep, x{sae_cfg.expansion}, k={sae_cfg.k}",
                **quality_summary(study.quality),
                **study.headline.row(),
            }
        )
    return pd.DataFrame(rows).set_index("SAE setting")


def known_fact_set(model: HookedTransformer, cfg: DensityConfig) -> FactSet:
    """The evaluation facts: ``fact_splits(model, n_screen)["eval"]`` (the one shared known-fact
    screen, its split for judging compressed or ablated models), at most ``n_facts``, with the
    screen's stats. Nothing in this study is fitted or chosen on facts, so no other split is used."""
    splits = getattr(data, "fact_splits", None)
    if splits is not None:
        known = splits(model, cfg.n_screen)["eval"]
        _, screen = data.known_facts(model, cfg.n_screen, cache=True)
    else:  # before the shared split exists: the screen's known facts (none of them chose anything here)
        known, screen = data.known_facts(model, cfg.n_screen, cache=True)
    known = known.select(range(min(cfg.n_facts, len(known))))
    return FactSet(list(known["prompt"]), list(known["target"]), screen, list(known["relation"]))


def run_ablation(
    model: HookedTransformer, cfg: DensityConfig, prompts: Sequence[str], targets: Sequence[str]
) -> HeadAblation:
    """:func:`head_ablation` of every head on the evaluation text and the first
    ``cfg.ablation_facts`` evaluation facts (cached as the dict of its fields)."""
    tokens = text_plan(cfg)["judging"]["head ablation"].tokens(model)
    prompts, targets = list(prompts)[: cfg.ablation_facts], list(targets)[: cfg.ablation_facts]
    stored = cached(
        "sae_head_ablation",
        lambda: dataclasses.asdict(head_ablation(model, tokens, prompts, targets, cfg.sae.context, layers=cfg.layers)),
        {"tokens": cfg.ablation_tokens, "prompts": list(prompts), "layers": cfg.layers},
        model_key(model),
    )
    return HeadAblation(**stored)


def importance_table(maps: HeadMaps, ablation: HeadAblation, cfg: DensityConfig) -> DirectImportance:
    """Density and Wanda against each head's direct importance (each measure of
    :data:`~analysis.studies.capability.results.IMPORTANCE_MEASURES`): :func:`head_test` over the
    heads measured (layer-cluster interval, within-layer permutation), and the partial ρ given the other."""
    signals = {"density": maps.density, "wanda": maps.wanda}
    measures = {}
    for name in IMPORTANCE_MEASURES:
        imp, tests = getattr(ablation, name), {}
        for sig, other in (("density", "wanda"), ("wanda", "density")):
            r = head_test(signals[sig], imp, cfg)
            tests[sig] = ImportanceTest(**r.row(), partial=stats.partial_spearman(signals[sig], imp, signals[other]))
        measures[name] = SignalTests(**tests)
    return DirectImportance(**measures)


def run_transitions(
    model: HookedTransformer, cfg: DensityConfig, density: Tensor, ablation_loss: Tensor
) -> Transitions:
    """Sparsity curves of ``transition_heads`` heads spread over the density range, where each
    breaks, and :func:`head_test` of density against break point over the heads that have one
    (clustered by layer; None when fewer than 3)."""
    heads = spread_heads(density.masked_fill(ablation_loss.isnan(), float("nan")), cfg.transition_heads)
    tokens = text_plan(cfg)["judging"]["transition curves"].tokens(model)
    curves = cached(
        "sae_transitions",
        lambda: transition_curves(model, tokens, heads, cfg.transition_levels, cfg.sae.context),
        {"tokens": cfg.ablation_tokens, "heads": heads, "levels": cfg.transition_levels, "kv": "keep"},
        model_key(model),
    )
    breaks = torch.tensor(
        [
            break_point(cfg.transition_levels, curves[i].tolist(), float(ablation_loss[l, h]), cfg.break_fraction)
            for i, (l, h) in enumerate(heads)
        ]
    )
    dens = torch.stack([density[l, h] for l, h in heads])
    layers = torch.tensor([l for l, _ in heads])
    test = head_test(dens, breaks, cfg, layers) if int((~breaks.isnan()).sum()) >= 3 else None
    return Transitions(heads, curves, breaks, dens, torch.stack([ablation_loss[l, h] for l, h in heads]), test)


def run_budget(
    model: HookedTransformer,
    cfg: DensityConfig,
    density: Tensor,
    wanda_scores: Tensor,
    prompts: Sequence[str],
    targets: Sequence[str],
) -> Budget:
    """:func:`budget_comparison` on held-out text, the evaluation facts and the probe task (cached
    as the dict of its fields)."""
    tokens = text_plan(cfg)["judging"]["budget perplexity"].tokens(model)
    task = probe_examples(cfg)
    key = {"cfg": cfg, "density": density.tolist(), "wanda": wanda_scores.tolist(), "prompts": list(prompts), "v": 4}
    stored = cached(
        "sae_budget",
        lambda: dataclasses.asdict(
            budget_comparison(
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
            )
        ),
        key,
        model_key(model),
    )
    return Budget(**stored)
