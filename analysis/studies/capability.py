"""Seed 001, capability density versus Wanda: the study's config, runners and verdicts.

Seed 001 ("Capability-Guided Compression") claims that an attention head's *capability
density*, measured with sparse autoencoders (:mod:`analysis.sae.density`), is a signal
orthogonal to Wanda importance (:mod:`analysis.wanda`), that denser heads reach their phase
transition at lower compression, and that perplexity is blind to the capability loss this
signal protects. This module runs the experiments that test those claims on one model:

1. :func:`run_density_study`: train (or load) one TopK SAE per layer on ``hook_z``, measure
   their quality, the density map of every head and Wanda per head (:class:`DensityStudy`);
2. :func:`run_ablation`: each head's direct importance, the loss and fact-recall damage of
   zero-ablating it alone (:func:`head_ablation`);
3. :func:`run_transitions`: a spread of heads sparsified one at a time, and the sparsity where
   each breaks (:func:`transition_curves`, :func:`break_point`);
4. :func:`run_budget`: a fixed mean sparsity allocated by density, by Wanda, uniformly and at
   random, each model scored by perplexity, fact recall and a sentiment probe.

Each claim gets a verdict function (:func:`orthogonality_verdict`, :func:`importance_verdict`,
:func:`transition_verdict`, :func:`perplexity_verdict`) that states its criterion; "no relation"
is only ever concluded from an equivalence test (:func:`analysis.stats.tost_correlation`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from scipy.stats import rankdata
from torch import Tensor

from analysis import compress, data, hooks, probing, sae, stats, wanda
from analysis.cache import cached
from analysis.components import component
from analysis.config import study_config
from analysis.evaluate import fact_recall, final_logits, first_target_token, last_logits, lm_score, prompt_batch
from analysis.models import model_key
from analysis.progress import progress

SEED_RESULTS: dict[str, Any] = {
    "paper": "Capability-Guided Compression (seed 001), arXiv 2026-03",
    "model": "gpt2-medium",
    "n_heads": 384,
    "spearman_density_wanda": -0.054,
    "orthogonality claim": "capability density is statistically independent of Wanda importance",
    "phase-transition claim": "higher-density components reach their phase transition at lower compression ratios",
    "perplexity claim": "perplexity is insensitive to capability loss; PPL-based comparison "
    "on GPT-2 Medium was a negative result",
}
"""The seed's numbers and claims, printed by the chapter from here (theirs, not ours)."""


@dataclass(frozen=True)
class DensityConfig:
    """Sizes of the capability-density study for one run profile (:func:`config_for`)."""

    sae: sae.SAETrainConfig
    eval_tokens_per_domain: int
    """Evaluation tokens per domain for latent statistics (density, EV, L0, dead latents)."""
    ce_tokens: int
    """Tokens on which CE loss recovered is measured (one forward per layer and variant)."""
    calib_tokens: int
    """Calibration tokens for Wanda's input norms."""
    ablation_tokens: int
    """Tokens on which each head's ablation loss increase is measured."""
    n_screen: int
    """Facts screened for ones the model knows."""
    n_facts: int
    """Known facts used for per-head fact-recall drops and budget evaluation."""
    transition_heads: int
    """Heads (spread over the density range) whose sparsity curve is traced."""
    transition_levels: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    """Per-head sparsities of the transition curves (1.0 = ablation is added)."""
    break_fraction: float = 0.5
    """A head breaks where its loss increase reaches this share of its ablation increase."""
    budget_sparsities: tuple[float, ...] = (0.3, 0.5)
    """Mean attention-weight sparsities at which allocations are compared."""
    budget_spread: float = 0.5
    """Allocation spread: sparsities run from ``mean (1 - spread)`` to ``mean (1 + spread)``."""
    ppl_tokens: int = 2048
    """Held-out tokens for the perplexity of each allocation."""
    probe_task: str = "sentiment"
    n_probe: int = 160
    """Probe examples (half train, half test)."""
    domains: tuple[str, ...] = ("wikipedia", "nyt", "reddit", "amazon", "code")
    breadth_eps: float = 0.1
    """A latent is *used* when it gets at least this share of a uniform share (``ε``)."""
    n_boot: int = 2000
    n_perm: int = 2000
    n_random: int = 1
    """Random allocations (seeds) averaged."""
    seed: int = 0
    layers: tuple[int, ...] | None = None
    """Layers whose heads are ablated and traced, and whose SAEs' CE loss recovered is measured
    (``None``: all). The density map and Wanda always cover every head."""
    extra_models: tuple[str, ...] = ()
    """Models on which the headline test is repeated when their weights are available."""


CONFIGS: dict[str, DensityConfig] = {
    "smoke": DensityConfig(
        sae=sae.SAETrainConfig(
            train_tokens=512, context=32, batch_tokens=128, expansion=1, k=8, forward_batch=8, buffer_batches=2
        ),
        eval_tokens_per_domain=64,
        ce_tokens=64,
        calib_tokens=128,
        ablation_tokens=32,
        n_screen=48,
        n_facts=2,
        transition_heads=2,
        transition_levels=(0.5,),
        budget_sparsities=(0.5,),
        ppl_tokens=128,
        n_probe=16,
        n_boot=200,
        n_perm=200,
        layers=(0, 29),
    ),
    "cpu": DensityConfig(
        sae=sae.SAETrainConfig(train_tokens=8192, context=128, batch_tokens=512, expansion=2, k=32, lr=4e-3, epochs=3),
        eval_tokens_per_domain=768,
        ce_tokens=256,
        calib_tokens=2048,
        ablation_tokens=128,
        n_screen=400,
        n_facts=16,
        transition_heads=24,
        budget_sparsities=(0.3, 0.5),
        ppl_tokens=1024,
        n_probe=100,
    ),
    "gpu": DensityConfig(
        sae=sae.SAETrainConfig(
            train_tokens=2_000_000,
            context=256,
            batch_tokens=4096,
            expansion=8,
            k=32,
            forward_batch=32,
            buffer_batches=16,
            lr=3e-4,
        ),
        eval_tokens_per_domain=16_384,
        ce_tokens=16_384,
        calib_tokens=131_072,
        ablation_tokens=8192,
        n_screen=4000,
        n_facts=200,
        transition_heads=120,
        transition_levels=(0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
        budget_sparsities=(0.3, 0.5, 0.7),
        ppl_tokens=65_536,
        n_probe=2000,
        n_boot=10_000,
        n_perm=10_000,
        n_random=3,
        extra_models=("gpt2-medium",),
    ),
}
"""Sizes per profile. ``cpu`` fits the chapter in about 15 minutes on 2 cores."""


def config_for(profile: Any) -> DensityConfig:
    """The :class:`DensityConfig` of a profile (or its name); ``profile.extra["sae"]`` overrides."""
    return study_config(CONFIGS, profile, "sae")


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


# ---- Direct importance: ablating one head --------------------------------------------------------


def _zero_heads(heads_of_row: Tensor):
    """A ``hook_z`` hook zeroing head ``heads_of_row[i]`` in batch row ``i`` (all positions)."""

    def hook(z, hook):
        z = z.clone()
        z[torch.arange(z.shape[0], device=z.device), :, heads_of_row.to(z.device)] = 0
        return z

    return hook


@torch.no_grad()
def head_ablation(
    model,
    tokens: Int[Tensor, " n"],
    prompts: Sequence[str],
    targets: Sequence[str],
    context: int = 128,
    max_tokens: int = 2048,
    layers: Sequence[int] | None = None,
) -> dict[str, Tensor]:
    """Zero-ablate each head's ``hook_z`` alone (the same as zeroing its W_O rows) and measure
    ``{"loss": ΔCE [L, H], "logp": drop in target log-prob [L, H], "recall": drop in recall [L, H]}``.

    Each layer's runs start from the cached clean residual stream at that layer, and the
    ablations of several heads share one forward pass (one copy of the text per head, up to
    ``max_tokens`` tokens per pass). Heads of layers not in ``layers`` (default: all) are NaN.
    """
    L, H = model.cfg.n_layers, model.cfg.n_heads
    seqs = sae.sequences(tokens, context).to(model.cfg.device)
    resid = sae.residual_cache(model, seqs)
    if prompts:
        ftoks, last = prompt_batch(model, list(prompts))  # right-padded, each prompt's last index
        tid = torch.tensor([first_target_token(model, t) for t in targets])
        fresid = sae.residual_cache(model, ftoks)
        flogp = last_logits(model, ftoks, last).float().log_softmax(-1)
        base_logp, base_hit = flogp[torch.arange(len(tid)), tid], flogp.argmax(-1) == tid
    clean = sae.loss_from_layer(model, resid, seqs, 0, batch_size=len(seqs))
    per_pass = max(1, max_tokens // seqs.numel())
    out = {k: torch.full((L, H), float("nan")) for k in ("loss", "logp", "recall")}
    for l in progress(list(range(L) if layers is None else layers), desc="head ablation"):
        for h0 in range(0, H, per_pass):
            heads = torch.arange(h0, min(H, h0 + per_pass))
            with model.hooks(fwd_hooks=[(hooks.z(l), _zero_heads(heads.repeat_interleave(len(seqs))))]):
                logits = model(resid[l].repeat(len(heads), 1, 1), start_at_layer=l, return_type="logits")
            ce = F.cross_entropy(
                logits[:, :-1].transpose(1, 2).float(), seqs[:, 1:].repeat(len(heads), 1), reduction="none"
            )  # [rows, pos - 1]
            out["loss"][l, heads] = ce.view(len(heads), -1).mean(1).cpu() - clean
            del logits
            if prompts:
                rows = torch.arange(len(heads) * len(tid))
                with model.hooks(fwd_hooks=[(hooks.z(l), _zero_heads(heads.repeat_interleave(len(tid))))]):
                    final = model(
                        fresid[l].repeat(len(heads), 1, 1), start_at_layer=l, stop_at_layer=model.cfg.n_layers
                    )  # residual after the last block
                lp = final_logits(model, final[rows, last.repeat(len(heads))]).float().log_softmax(-1)
                t = tid.repeat(len(heads))
                out["logp"][l, heads] = (base_logp.repeat(len(heads)) - lp[rows, t]).view(len(heads), -1).mean(1).cpu()
                hit = (lp.argmax(-1) == t).float().view(len(heads), -1).mean(1).cpu()
                out["recall"][l, heads] = base_hit.float().mean() - hit
    out["clean_loss"] = torch.tensor(clean)
    return out


# ---- Phase transitions: one head's loss as its sparsity rises ------------------------------------


def spread_heads(values: Float[Tensor, "layer head"], n: int) -> list[tuple[int, int]]:
    """``n`` heads at evenly spaced quantiles of ``values`` (lowest to highest; NaN heads are skipped)."""
    flat = values.flatten()
    order = flat.argsort()
    order = order[~flat[order].isnan()]
    picks = sorted({int(order[round(i * (len(order) - 1) / max(1, n - 1))]) for i in range(n)})
    H = values.shape[1]
    return [(i // H, i % H) for i in picks]


@torch.no_grad()
def transition_curves(
    model,
    tokens: Int[Tensor, " n"],
    heads: Sequence[tuple[int, int]],
    levels: Sequence[float],
    context: int = 128,
    batch_size: int = 8,
) -> Tensor:
    """``ΔCE [n_heads, n_levels]`` when one head alone is pruned to each sparsity
    (:class:`analysis.compress.HeadSparsity` on that head only: its W_Q columns and W_O rows)."""
    seqs = sae.sequences(tokens, context).to(model.cfg.device)
    resid = sae.residual_cache(model, seqs)
    clean = sae.loss_from_layer(model, resid, seqs, 0, batch_size=batch_size)
    out = torch.zeros(len(heads), len(levels))
    for i, (l, h) in enumerate(progress(list(heads), desc="transition curves")):
        for j, s in enumerate(levels):
            fr = tuple(float(s) if k == h else 0.0 for k in range(model.cfg.n_heads))
            with compress.CompressionPlan({component(l, "attn"): [compress.HeadSparsity(fr)]}).applied(model):
                out[i, j] = sae.loss_from_layer(model, resid, seqs, l, batch_size=batch_size) - clean
    return out


def break_point(levels: Sequence[float], dloss: Sequence[float], full: float, fraction: float = 0.5) -> float:
    """The sparsity at which ``ΔCE`` first reaches ``fraction`` of the ablation increase ``full``
    (linear interpolation between levels, the ablation counted at sparsity 1; NaN if ``full <= 0``)."""
    if full <= 0:
        return float("nan")
    xs = [0.0, *map(float, levels), 1.0]
    ys = [0.0, *map(float, dloss), float(full)]
    target = fraction * full
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if y1 >= target:
            return x1 if y1 == y0 else x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    return 1.0


# ---- Budget allocation ---------------------------------------------------------------------------


def allocate(
    importance: Float[Tensor, "layer head"] | None,
    mean: float,
    spread: float = 0.5,
    shape: tuple[int, int] | None = None,
    seed: int | None = None,
) -> Tensor:
    """Per-head sparsities with mean exactly ``mean``: linear in the importance rank, from
    ``mean + δ`` (least important) to ``mean - δ`` (most important), ``δ = min(spread·mean, 0.99 - mean, mean)``.

    ``importance=None`` gives the uniform allocation; ``seed`` shuffles the ranks (random).
    """
    if importance is None:
        return torch.full(shape, float(mean))
    n = importance.numel()
    ranks = torch.as_tensor(rankdata(importance.flatten().double().numpy()) - 1)  # 0 = least important
    if seed is not None:
        ranks = ranks[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    delta = min(spread * mean, 0.99 - mean, mean)
    s = mean + delta * (1 - 2 * ranks / max(1, n - 1))
    return (s - s.mean() + mean).view(importance.shape).float()


def allocations(
    density: Tensor, wanda: Tensor, mean: float, spread: float, n_random: int = 1, seed: int = 0
) -> dict[str, Tensor]:
    """The four strategies at a matched mean sparsity: capability-guided, Wanda-guided, uniform, random."""
    out = {
        "capability": allocate(density, mean, spread),
        "wanda": allocate(wanda, mean, spread),
        "uniform": allocate(None, mean, shape=tuple(density.shape)),
    }
    for r in range(n_random):
        out["random" if n_random == 1 else f"random {r}"] = allocate(density, mean, spread, seed=seed + r)
    return out


def head_sparsity_plan(fractions: Float[Tensor, "layer head"]) -> compress.CompressionPlan:
    """A plan giving every layer's attention :class:`analysis.compress.HeadSparsity` at ``fractions``."""
    return compress.CompressionPlan(
        {component(l, "attn"): [compress.HeadSparsity(tuple(map(float, row)))] for l, row in enumerate(fractions)}
    )


PROBE_HOOK = "ln_final.hook_normalized"
"""The probe's features: the final-norm residual, mean-pooled over each text's tokens."""


@torch.no_grad()
def pooled_features(model, texts: Sequence[str], batch_size: int = 8, max_len: int = 128) -> Float[Tensor, "n d"]:
    """Mean over each text's tokens (BOS included, at most ``max_len``) of :data:`PROBE_HOOK`."""
    feats = []
    for i in range(0, len(texts), batch_size):
        toks, last = prompt_batch(model, list(texts[i : i + batch_size]), max_len)
        _, cache = model.run_with_cache(toks, names_filter=PROBE_HOOK, return_type=None)
        x = cache[PROBE_HOOK].float().cpu()
        mask = (torch.arange(x.shape[1])[None] <= last[:, None]).float()[..., None]
        feats.append((x * mask).sum(1) / (last + 1)[:, None])
    return torch.cat(feats)


def probe_accuracy(features: Float[Tensor, "n d"], labels: Sequence[int], n_train: int, seed: int = 0) -> float:
    """Held-out accuracy of an L2-regularised logistic probe (:func:`analysis.probing.fit_probe`)
    trained on the first ``n_train`` rows and tested on the rest."""
    n = len(features)
    return probing.fit_probe(
        features, torch.as_tensor(list(labels)).long(), torch.arange(n_train), torch.arange(n_train, n), seed=seed
    )


@torch.no_grad()
def evaluate_model(
    model,
    eval_tokens: Tensor,
    prompts: Sequence[str],
    targets: Sequence[str],
    probe_texts: Sequence[str],
    probe_labels: Sequence[int],
    context: int = 128,
) -> dict[str, float]:
    """Perplexity, fact recall (known facts) and probe accuracy of ``model`` as it stands."""
    score = lm_score(model, eval_tokens, context=context, desc="perplexity")
    recall = fact_recall(model, list(prompts), list(targets)).float().mean().item()
    acc = probe_accuracy(pooled_features(model, probe_texts), probe_labels, n_train=len(probe_texts) // 2)
    return {"perplexity": score.perplexity, "fact recall": recall, "probe accuracy": acc}


def budget_comparison(
    model,
    density: Tensor,
    wanda: Tensor,
    cfg: DensityConfig,
    eval_tokens: Tensor,
    prompts: Sequence[str],
    targets: Sequence[str],
    probe_texts: Sequence[str],
    probe_labels: Sequence[int],
    context: int = 128,
) -> pd.DataFrame:
    """Each allocation strategy at each mean sparsity, applied to every head, then evaluated."""
    args = (eval_tokens, prompts, targets, probe_texts, probe_labels, context)
    rows = [{"mean sparsity": 0.0, "strategy": "dense", **evaluate_model(model, *args)}]
    for mean in cfg.budget_sparsities:
        for name, fr in allocations(density, wanda, mean, cfg.budget_spread, cfg.n_random, cfg.seed).items():
            with head_sparsity_plan(fr).applied(model) as report:
                rows.append(
                    {
                        "mean sparsity": mean,
                        "strategy": name,
                        **evaluate_model(model, *args),
                        "attention bits / dense": report.ratio,
                    }
                )
    return pd.DataFrame(rows)


BUDGET_METRICS = {"perplexity": "min", "fact recall": "max", "probe accuracy": "max"}
"""The budget table's metrics and whether lower or higher is better."""


def budget_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per mean sparsity: the best strategies by each metric (ties kept) and, per metric, whether
    capability-guided or Wanda-guided allocation did better."""
    rows = {}
    for mean, b in frame[frame["strategy"] != "dense"].groupby("mean sparsity"):
        b = b.set_index("strategy")
        row = {}
        for m, how in BUDGET_METRICS.items():
            target = b[m].min() if how == "min" else b[m].max()
            row[f"best by {m}"] = ", ".join(sorted(b.index[b[m] == target]))
            c, w = b.loc["capability", m], b.loc["wanda", m]
            better_c = c < w if how == "min" else c > w
            row[f"capability vs Wanda, {m}"] = "tie" if c == w else ("capability" if better_c else "wanda")
        sets = [set(row[f"best by {m}"].split(", ")) for m in BUDGET_METRICS]
        row["metrics agree on a best strategy"] = bool(set.intersection(*sets))
        ppl, rec = row["capability vs Wanda, perplexity"], row["capability vs Wanda, fact recall"]
        row["perplexity and fact recall disagree (capability vs Wanda)"] = ppl != rec and "tie" not in (ppl, rec)
        rows[mean] = row
    return pd.DataFrame(rows)


# ---- The study, step by step (each step cached on its configuration and the model's content) -----


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


# ---- Verdicts: each seed claim against our measurements, with its criterion ----------------------

VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class Verdict:
    """One seed claim judged on our measurements: ``verdict`` is one of :data:`VERDICTS`."""

    claim: str
    verdict: str
    criterion: str
    evidence: str

    def __str__(self) -> str:
        return f"{self.claim}: {self.verdict.upper()} ({self.evidence}). Criterion: {self.criterion}"


def binomial_noise(n: int) -> float:
    """Two binomial standard errors at p = ½, ``2 √(0.25 / n)``: a smaller difference between two
    accuracies on ``n`` items is noise."""
    return 2 * math.sqrt(0.25 / n)


def _equivalent(rho: float, n: int, margin: float, alpha: float) -> bool:
    """Whether TOST puts a rank correlation over ``n`` units inside ``±margin``."""
    return not math.isnan(rho) and n >= 4 and stats.tost_correlation(rho, n, margin, alpha).equivalent


def orthogonality_verdict(test: Mapping[str, float], margin: float = 0.1, alpha: float = 0.05) -> Verdict:
    """The claim that density is independent of Wanda, from :meth:`DensityStudy.headline`."""
    rho, p, n = test["rho"], test["p_perm"], int(test["n"])
    if _equivalent(rho, n, margin, alpha):
        verdict = "partly" if p < alpha else "reproduced"
    else:
        verdict = "not reproduced" if p < alpha else "inconclusive"
    return Verdict(
        SEED_RESULTS["orthogonality claim"],
        verdict,
        f"reproduced if TOST puts ρ inside ±{margin} and permutation p ≥ {alpha}; partly if TOST holds "
        f"but p < {alpha}; not reproduced if p < {alpha} without TOST; else inconclusive",
        f"ρ = {rho:.3f} over {n} heads, permutation p = {p:.4f}",
    )


def importance_verdict(row: Mapping[str, float], margin: float = 0.1, alpha: float = 0.05) -> Verdict:
    """Whether density predicts a head's importance beyond Wanda, from the density row of one
    importance measure in :func:`importance_table`."""
    rho, p, partial, n = row["rho"], row["p_perm"], row["partial ρ given the other"], int(row["n"])
    if p < alpha and abs(partial) > margin:
        verdict = "reproduced" if rho > 0 and partial > 0 else "partly"
    else:
        verdict = "not reproduced" if _equivalent(partial, n, margin, alpha) else "inconclusive"
    return Verdict(
        "capability density predicts a head's importance beyond Wanda (denser heads matter more)",
        verdict,
        f"reproduced if permutation p < {alpha}, |partial ρ given Wanda| > {margin} and both "
        f"ρ > 0; partly if so with the other sign; not reproduced if TOST puts the partial ρ inside "
        f"±{margin}; else inconclusive",
        f"ρ = {rho:.3f}, p = {p:.4f}, partial ρ = {partial:.3f}, n = {n}",
    )


def transition_verdict(test: Mapping[str, float] | None, margin: float = 0.1, alpha: float = 0.05) -> Verdict:
    """The phase-transition claim, from ρ(density, break point) (``run_transitions(...)["test"]``,
    None when fewer than 3 heads have a break point)."""
    criterion = (
        f"reproduced if ρ(density, break point) < 0 with permutation p < {alpha}; not reproduced if "
        f"ρ > 0 with p < {alpha} or TOST puts ρ inside ±{margin}; else inconclusive"
    )
    if test is None:
        return Verdict(
            SEED_RESULTS["phase-transition claim"],
            "inconclusive",
            criterion,
            "fewer than 3 traced heads have a break point",
        )
    rho, p, n = test["rho"], test["p_perm"], int(test["n"])
    if p < alpha:
        verdict = "reproduced" if rho < 0 else "not reproduced"
    else:
        verdict = "not reproduced" if _equivalent(rho, n, margin, alpha) else "inconclusive"
    return Verdict(
        SEED_RESULTS["phase-transition claim"], verdict, criterion, f"ρ = {rho:.3f} over {n} heads, p = {p:.4f}"
    )


def budget_findings(frame: pd.DataFrame, n_facts: int) -> pd.DataFrame:
    """Per mean sparsity (rows): each metric of capability- and Wanda-guided allocation, whether
    perplexity and fact recall rank the two oppositely (``disagree``) or the same way (``agree``),
    and whether the fact-recall difference exceeds :func:`binomial_noise` of ``n_facts``."""
    rows = {}
    for mean, s in budget_summary(frame).items():
        b = frame[frame["mean sparsity"] == mean].set_index("strategy")
        row = {f"{a} {m}": float(b.loc[a, m]) for m in BUDGET_METRICS for a in ("capability", "wanda")}
        order = {s[f"capability vs Wanda, {m}"] for m in ("perplexity", "fact recall")}
        row["disagree"] = bool(s["perplexity and fact recall disagree (capability vs Wanda)"])
        row["agree"] = len(order) == 1 and "tie" not in order
        row["beyond noise"] = abs(row["capability fact recall"] - row["wanda fact recall"]) >= binomial_noise(n_facts)
        rows[mean] = row
    return pd.DataFrame(rows).T


def budget_report(frame: pd.DataFrame, n_facts: int) -> list[str]:
    """One sentence per mean sparsity comparing capability- and Wanda-guided allocation."""
    return [
        f"mean sparsity {mean}: capability-guided vs Wanda-guided perplexity {f['capability perplexity']:.2f} "
        f"vs {f['wanda perplexity']:.2f}, fact recall {f['capability fact recall']:.3f} vs "
        f"{f['wanda fact recall']:.3f}, probe accuracy {f['capability probe accuracy']:.2f} vs "
        f"{f['wanda probe accuracy']:.2f}. "
        + (
            "Perplexity and fact recall rank the two the opposite way: judged by perplexity alone, one would "
            "miss the capability difference"
            if f["disagree"]
            else "Perplexity and fact recall rank the two the same way"
        )
        + (
            ""
            if f["beyond noise"]
            else f", though the fact-recall difference is within two standard errors ({n_facts} facts)"
        )
        + "."
        for mean, f in budget_findings(frame, n_facts).iterrows()
    ]


def perplexity_verdict(frame: pd.DataFrame, n_facts: int) -> Verdict:
    """The claim that perplexity is blind to capability loss, from the budget table."""
    f = budget_findings(frame, n_facts)
    real = f[f["beyond noise"].astype(bool)]
    if real["disagree"].astype(bool).any():
        verdict = "reproduced"
    elif f["disagree"].astype(bool).any():
        verdict = "partly"
    else:
        verdict = "not reproduced" if real["agree"].astype(bool).any() else "inconclusive"
    return Verdict(
        SEED_RESULTS["perplexity claim"],
        verdict,
        "reproduced if, at some mean sparsity, perplexity and fact recall rank capability- and "
        f"Wanda-guided allocation oppositely with a recall difference ≥ {binomial_noise(n_facts):.2f} "
        f"(two binomial SEs, {n_facts} facts); partly if opposite only within that noise; not reproduced "
        "if never opposite and the same order on a difference beyond noise; else inconclusive",
        "; ".join(
            f"{m}: {'opposite' if r['disagree'] else 'same' if r['agree'] else 'tie'}, recall "
            f"{r['capability fact recall']:.3f} vs {r['wanda fact recall']:.3f}"
            for m, r in f.iterrows()
        ),
    )
