"""Sparse autoencoders on attention heads: capability density versus Wanda importance.

A *sparse autoencoder* (SAE) rewrites an activation ``x`` as a sparse, non-negative code
``a = f(x)`` over ``d_sae`` latents and decodes it back, ``x̂ = a @ W_dec + b_dec``; trained
to reconstruct while using few latents at a time, its latents tend to be human-readable
features (Bricken et al. 2023; Cunningham et al. 2023). We train one TopK SAE (Gao et al.
2024: exactly ``k`` latents active per token) per attention layer on ``attn.hook_z``, the
heads' outputs before ``W_O``, concatenated across heads. Each latent's decoder row then
splits into one slice per head, and the part of a latent's activity that belongs to head
``h`` is ``a_j · ‖d_j^{(h)}‖``, the latent's activation times the norm of its decoder slice
for that head. One SAE per layer lets a feature span heads (as it does when heads cooperate)
and costs 30 SAEs rather than 270; ``granularity="head"`` trains one SAE per head instead.

Seed 001 ("Capability-Guided Compression") defines a component's *capability density* from
its SAE activations over a diverse evaluation set; the seed only names the parts, so the
definitions here are ours. With ``M_{g,j}`` the mass of component ``c`` on latent ``j``
summed over the tokens of group (domain) ``g``, ``p_j = Σ_g M_{g,j} / Σ_{g,j} M_{g,j}``, and
``A`` the latents alive in the layer's SAE on the evaluation set:

- feature breadth ``B = |{j ∈ A : p_j ≥ ε/|A|}| / |A|``: the share of live latents the
  component uses, a latent counting when it receives at least ``ε`` of a uniform share;
- activation entropy ``H = -Σ_j p_j log p_j / log |A|``, in ``[0, 1]``;
- cross-input consistency ``C = 1 - mean_{g<g'} JSD₂(q_g, q_{g'})``, with ``q_g`` the
  component's latent distribution in group ``g`` and ``JSD₂`` the Jensen–Shannon divergence in
  bits (in ``[0, 1]``): 1 when every domain uses the latents alike;
- capability density ``D = (B · H · C)^{1/3}``, their geometric mean.

The seed's claim is that ``D`` is a signal orthogonal to *Wanda* importance (Sun et al.
2023), which scores a weight ``W_ij`` of ``y = x @ W`` by ``|W_ij| · ‖X_i‖₂`` (``X_i``: input
feature ``i`` over calibration tokens). A head's Wanda score sums its slices of ``W_Q``,
``W_K``, ``W_V`` (a grouped-query K/V slice shared by ``g`` heads counts ``1/g`` to each) and
its rows of ``W_O``. Beyond rank correlations, the study measures each head's direct
importance by ablating it, follows each head's loss as its weights are sparsified, and
allocates a fixed sparsity budget by density, by Wanda, uniformly and at random.

Training uses sae-lens's ``TopKTrainingSAE`` and ``MultiSAETrainer``, fed from one shared
activation stream: a single forward pass of the model yields ``hook_z`` for every layer, so
30 SAEs cost one pass over the data instead of 30 (sae-lens's own runner reads one hook per
run). SAEs are saved in sae-lens's format and reopen with ``SAE.load_from_disk``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

from analysis import compress  # noqa: E402
from analysis.cache import atomic_write, cache_key, cached  # noqa: E402
from analysis.config import CACHE_DIR  # noqa: E402
from analysis.progress import progress  # noqa: E402

SEED_RESULTS: dict[str, Any] = {
    "paper": "Capability-Guided Compression (seed 001), arXiv 2026-03",
    "model": "gpt2-medium",
    "n_heads": 384,
    "spearman_density_wanda": -0.054,
    "orthogonality claim": "capability density is statistically independent of Wanda importance",
    "phase-transition claim": "higher-density components reach their phase transition at lower "
                              "compression ratios",
    "perplexity claim": "perplexity is insensitive to capability loss; PPL-based comparison "
                        "on GPT-2 Medium was a negative result",
}
"""The seed's numbers and claims, printed by the chapter from here (theirs, not ours)."""


class SAEMismatchError(ValueError):
    """An SAE was trained for another model, hook or width than the one it is used with."""


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SAETrainConfig:
    """How the hook_z SAEs are trained (sae-lens TopK SAEs, one shared activation stream)."""

    train_tokens: int
    """Training tokens per SAE (every SAE sees every token once)."""
    granularity: Literal["layer", "head"] = "layer"
    """One SAE per layer on all heads concatenated, or one per head."""
    expansion: int = 2
    """``d_sae = expansion * d_in``."""
    k: int = 32
    """Active latents per token (TopK)."""
    context: int = 128
    """Tokens per training sequence."""
    batch_tokens: int = 256
    """SAE training batch (tokens per optimizer step)."""
    lr: float = 4e-3
    forward_batch: int = 8
    """Sequences per model forward pass while collecting activations."""
    buffer_batches: int = 4
    """Forward batches mixed (shuffled together) before they are served."""
    epochs: int = 1
    """Passes over the training tokens (activations of one forward pass, kept in memory)."""
    skip_first: int = 1
    """Leading positions of each sequence left out (position 0 is an attention sink)."""
    seed: int = 0


@dataclass(frozen=True)
class DensityConfig:
    """Sizes of the capability-density study for one run profile (:func:`config_for`)."""

    sae: SAETrainConfig
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
        sae=SAETrainConfig(train_tokens=512, context=32, batch_tokens=128, expansion=1, k=8,
                           forward_batch=8, buffer_batches=2),
        eval_tokens_per_domain=64, ce_tokens=64, calib_tokens=128, ablation_tokens=32,
        n_screen=48, n_facts=2, transition_heads=2, transition_levels=(0.5,),
        budget_sparsities=(0.5,), ppl_tokens=128, n_probe=16, n_boot=200, n_perm=200, layers=(0, 29)),
    "cpu": DensityConfig(
        sae=SAETrainConfig(train_tokens=8192, context=128, batch_tokens=512, expansion=2, k=32, lr=4e-3,
                           epochs=3),
        eval_tokens_per_domain=768, ce_tokens=256, calib_tokens=2048, ablation_tokens=128,
        n_screen=400, n_facts=16, transition_heads=24, budget_sparsities=(0.3, 0.5),
        ppl_tokens=1024, n_probe=100),
    "gpu": DensityConfig(
        sae=SAETrainConfig(train_tokens=2_000_000, context=256, batch_tokens=4096, expansion=8,
                           k=32, forward_batch=32, buffer_batches=16, lr=3e-4),
        eval_tokens_per_domain=16_384, ce_tokens=16_384, calib_tokens=131_072,
        ablation_tokens=8192, n_screen=4000, n_facts=200, transition_heads=120,
        transition_levels=(0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95), budget_sparsities=(0.3, 0.5, 0.7),
        ppl_tokens=65_536, n_probe=2000, n_boot=10_000, n_perm=10_000, n_random=3,
        extra_models=("gpt2-medium",)),
}
"""Sizes per profile. ``cpu`` fits the chapter in about 15 minutes on 2 cores."""


def config_for(profile: Any) -> DensityConfig:
    """The :class:`DensityConfig` of a profile (or its name); ``profile.extra["sae"]`` overrides."""
    from analysis.config import study_config

    return study_config(CONFIGS, profile, "sae")


# --------------------------------------------------------------------------------------
# Data: training stream, evaluation groups
# --------------------------------------------------------------------------------------


def hook_z(layer: int) -> str:
    """The TransformerLens name of layer ``layer``'s per-head outputs: ``blocks.{l}.attn.hook_z``."""
    return f"blocks.{layer}.attn.hook_z"


def sae_key(layer: int, head: int | None = None) -> str:
    """The name of one SAE: its hook name, plus ``:h{head}`` for a per-head SAE."""
    return hook_z(layer) if head is None else f"{hook_z(layer)}:h{head}"


def sequences(tokens: Int[Tensor, " n"], context: int) -> Int[Tensor, "seq context"]:
    """A 1-D token stream cut into whole sequences of ``context`` tokens (the tail is dropped)."""
    tokens = torch.as_tensor(tokens).flatten()
    n = tokens.numel() // context
    if n == 0:
        raise ValueError(f"Need at least context={context} tokens, got {tokens.numel()}.")
    return tokens[: n * context].view(n, context)


def domain_tokens(model, domains: Sequence[str], n_tokens: int) -> dict[str, Tensor]:
    """``n_tokens`` tokens of text per domain: held-out Wikipedia (``lm_tokens`` eval split),
    the squad_shifts domains of the ``topic`` task (``nyt``, ``reddit``, ``amazon``, ``wiki``)
    and source code (``code``), each text wrapped in BOS/EOS and concatenated."""
    from analysis.data import _document_token_ids, load_task, lm_tokens

    tok = model.tokenizer
    out: dict[str, Tensor] = {}
    for domain in domains:
        if domain == "wikipedia":
            out[domain] = lm_tokens(tok, "eval", n_tokens=n_tokens)
            continue
        task = "code_language" if domain == "code" else "topic"
        ds = load_task(task)
        names = ds.features["label"].names
        ids: list[int] = []
        for text, label in zip(ds["text"], ds["label"]):
            if domain != "code" and domain not in names[label].lower():
                continue
            ids.extend(_document_token_ids(tok, text))
            if len(ids) >= n_tokens:
                break
        if len(ids) < n_tokens:
            raise ValueError(f"Domain {domain!r} has only {len(ids)} tokens; asked for {n_tokens}.")
        out[domain] = torch.tensor(ids[:n_tokens], dtype=torch.long)
    return out


def _head_slices(x: Tensor, head: int | None) -> Tensor:
    """``[..., n_heads, d_head]`` hook_z flattened to ``[..., n_heads*d_head]`` or one head's slice."""
    return x.flatten(-2) if head is None else x[..., head, :]


def sae_keys(model, granularity: str, layers: Sequence[int] | None = None) -> list[tuple[str, int, int | None]]:
    """``(key, layer, head)`` for every SAE of a granularity."""
    layers = range(model.cfg.n_layers) if layers is None else layers
    if granularity == "layer":
        return [(sae_key(l), l, None) for l in layers]
    if granularity == "head":
        return [(sae_key(l, h), l, h) for l in layers for h in range(model.cfg.n_heads)]
    raise ValueError(f"granularity must be 'layer' or 'head', got {granularity!r}.")


class HookZStream:
    """A multi-hook activation provider: ``{sae key: [batch_tokens, d_in]}`` per ``next()``.

    One forward pass of the model fills every key at once; ``buffer_batches`` forward batches
    are mixed (one random permutation of their tokens) before being served. The first
    ``skip_first`` positions of each sequence (the attention sink at position 0, whose outputs
    are outliers) are left out. With ``epochs > 1`` the activations of the single pass are kept
    in memory and served ``epochs`` times, reshuffled. This is the ``MultiHookDataProvider`` that
    sae-lens's ``MultiSAETrainer`` consumes.
    """

    def __init__(self, model, tokens: Int[Tensor, " n"], cfg: SAETrainConfig,
                 layers: Sequence[int] | None = None):
        self.model, self.cfg = model, cfg
        self.seqs = sequences(tokens, cfg.context)
        self.keys = sae_keys(model, cfg.granularity, layers)
        self.hooks = sorted({hook_z(l) for _, l, _ in self.keys})
        self.gen = torch.Generator().manual_seed(cfg.seed)
        per_epoch = (self.seqs.shape[0] * (cfg.context - cfg.skip_first)) // cfg.batch_tokens
        self.n_batches = per_epoch * cfg.epochs
        self._iter = self._batches() if cfg.epochs == 1 else self._epochs()

    def __iter__(self) -> "HookZStream":
        return self

    def __next__(self) -> dict[str, Tensor]:
        return next(self._iter)

    @torch.no_grad()
    def _collect(self, seqs: Tensor) -> dict[str, Tensor]:
        store: dict[str, Tensor] = {}

        def grab(act, hook):
            store[hook.name] = act[:, self.cfg.skip_first :].detach()

        stop = max(int(h.split(".")[1]) for h in self.hooks) + 1
        self.model.run_with_hooks(seqs.to(self.model.cfg.device), return_type=None,
                                  stop_at_layer=stop, fwd_hooks=[(h, grab) for h in self.hooks])
        out = {}
        for key, l, h in self.keys:
            x = _head_slices(store[hook_z(l)], h)
            out[key] = x.reshape(-1, x.shape[-1]).cpu()
        return out

    def _batches(self) -> Iterator[dict[str, Tensor]]:
        cfg, fb = self.cfg, self.cfg.forward_batch
        starts = list(range(0, self.seqs.shape[0], fb))
        leftover: dict[str, Tensor] | None = None
        for i in range(0, len(starts), cfg.buffer_batches):
            chunks = [self._collect(self.seqs[s : s + fb]) for s in starts[i : i + cfg.buffer_batches]]
            buf = {k: torch.cat(([leftover[k]] if leftover else []) + [c[k] for c in chunks]) for k in chunks[0]}
            n = next(iter(buf.values())).shape[0]
            perm = torch.randperm(n, generator=self.gen)
            n_full = n // cfg.batch_tokens
            for b in range(n_full):
                idx = perm[b * cfg.batch_tokens : (b + 1) * cfg.batch_tokens]
                yield {k: v[idx] for k, v in buf.items()}
            rest = perm[n_full * cfg.batch_tokens :]
            leftover = {k: v[rest] for k, v in buf.items()} if rest.numel() else None

    def _epochs(self) -> Iterator[dict[str, Tensor]]:
        fb = self.cfg.forward_batch
        chunks = [self._collect(self.seqs[s : s + fb]) for s in range(0, self.seqs.shape[0], fb)]
        data = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
        del chunks
        n = next(iter(data.values())).shape[0]
        for _ in range(self.cfg.epochs):
            perm = torch.randperm(n, generator=self.gen)
            for b in range(n // self.cfg.batch_tokens):
                idx = perm[b * self.cfg.batch_tokens : (b + 1) * self.cfg.batch_tokens]
                yield {k: v[idx] for k, v in data.items()}


# --------------------------------------------------------------------------------------
# Training, saving, loading
# --------------------------------------------------------------------------------------


def training_sae_config(model, layer: int, cfg: SAETrainConfig, head: int | None = None):
    """The sae-lens ``TopKTrainingSAEConfig`` of one hook_z SAE, with model and hook in its metadata."""
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    d_in = model.cfg.d_head * (model.cfg.n_heads if head is None else 1)
    return TopKTrainingSAEConfig(
        d_in=d_in, d_sae=cfg.expansion * d_in, k=cfg.k, device=str(model.cfg.device),
        metadata=SAEMetadata(model_name=model.cfg.model_name, hook_name=hook_z(layer),
                             hook_head_index=head, context_size=cfg.context, prepend_bos=True,
                             n_heads=model.cfg.n_heads, d_head=model.cfg.d_head))


def train_saes(model, tokens: Int[Tensor, " n"], cfg: SAETrainConfig,
               layers: Sequence[int] | None = None) -> dict[str, Any]:
    """Train one sae-lens TopK SAE per layer (or head) on ``hook_z`` from one shared stream.

    Returns ``{sae key: TopKTrainingSAE}``; each SAE sees every training token ``cfg.epochs`` times.
    """
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    torch.manual_seed(cfg.seed)
    stream = HookZStream(model, tokens, cfg, layers)
    if stream.n_batches == 0:
        raise ValueError(f"{torch.as_tensor(tokens).numel()} tokens make no training batch of {cfg.batch_tokens}.")
    saes = {key: TopKTrainingSAE(training_sae_config(model, l, cfg, h)) for key, l, h in stream.keys}
    provider = _with_mean_init(stream, saes)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=stream.n_batches * cfg.batch_tokens,
        train_batch_size_samples=cfg.batch_tokens, lr=cfg.lr, lr_end=cfg.lr, device=str(model.cfg.device),
        lr_scheduler_name="constant", dead_feature_window=max(1, stream.n_batches // 4),
        feature_sampling_window=max(1, stream.n_batches), logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=1)
    trainer = MultiSAETrainer(trainer_cfg, saes, {k: k for k in saes}, provider)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _quiet_tqdm(lambda: trainer.fit())
    return trainer.saes


def _with_mean_init(stream: HookZStream, saes: dict[str, Any]) -> Iterator[dict[str, Tensor]]:
    """Start each SAE's decoder bias at the mean of the first training batch (sae-lens's
    older ``b_dec_init_method="mean"``), then serve that batch and the rest of the stream."""
    import itertools

    first = next(stream)
    with torch.no_grad():
        for key, sae in saes.items():
            sae.b_dec.data.copy_(first[key].mean(0).to(sae.b_dec))
    return itertools.chain([first], stream)


def _quiet_tqdm(fn):
    """Run ``fn`` with sae-lens's tqdm bars disabled when progress should stay quiet (book builds)."""
    import functools

    from sae_lens.training import multi_sae_trainer, sae_trainer

    from analysis.progress import quiet

    if not quiet():
        return fn()
    saved = multi_sae_trainer.tqdm, sae_trainer.tqdm
    multi_sae_trainer.tqdm = sae_trainer.tqdm = functools.partial(saved[0], disable=True)
    try:
        return fn()
    finally:
        multi_sae_trainer.tqdm, sae_trainer.tqdm = saved


def save_saes(saes: dict[str, Any], folder: Path | str) -> Path:
    """Save each SAE in sae-lens's inference format under ``folder/<key>/`` (atomically as a whole)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for key, sae in saes.items():
            path = tmp / key.replace(":", "_")
            if hasattr(sae, "save_inference_model"):
                sae.save_inference_model(path)
            else:
                sae.save_model(path)
        (tmp / "index.json").write_text(json.dumps({k: k.replace(":", "_") for k in saes}))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def check_sae(sae, model, hook_name: str, head: int | None = None) -> None:
    """Raise :class:`SAEMismatchError`, naming the mismatch, unless ``sae`` was trained for this
    model's ``hook_name`` (and head) with a matching width."""
    meta = sae.cfg.metadata
    want_d = model.cfg.d_head * (model.cfg.n_heads if head is None else 1)
    problems = []
    if meta.model_name != model.cfg.model_name:
        problems.append(f"model {meta.model_name!r} (expected {model.cfg.model_name!r})")
    if meta.hook_name != hook_name:
        problems.append(f"hook {meta.hook_name!r} (expected {hook_name!r})")
    if meta.hook_head_index != head:
        problems.append(f"head index {meta.hook_head_index!r} (expected {head!r})")
    if sae.cfg.d_in != want_d:
        problems.append(f"d_in {sae.cfg.d_in} (expected {want_d})")
    if problems:
        raise SAEMismatchError("This SAE was trained for " + ", ".join(problems) + "; train one for "
                               f"{model.cfg.model_name!r} at {hook_name!r} (analysis.sae.train_saes).")


def load_sae(path: Path | str, model, hook_name: str, head: int | None = None):
    """An SAE saved in sae-lens format (``SAE.load_from_disk``), checked against model and hook."""
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(path), device=str(model.cfg.device))
    check_sae(sae, model, hook_name, head)
    return sae.eval()


def load_saes(folder: Path | str, model, granularity: str = "layer",
              layers: Sequence[int] | None = None) -> dict[str, Any]:
    """All SAEs saved by :func:`save_saes`, each checked against ``model``."""
    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    out = {}
    for key, l, h in sae_keys(model, granularity, layers):
        if key not in index:
            raise SAEMismatchError(f"No SAE for {key!r} in {folder}; it holds {sorted(index)[:4]}….")
        out[key] = load_sae(folder / index[key], model, hook_z(l), h)
    return out


def trained_saes(model, tokens: Int[Tensor, " n"], cfg: SAETrainConfig,
                 layers: Sequence[int] | None = None, refresh: bool = False) -> dict[str, Any]:
    """:func:`train_saes`, saved under ``data/cache/sae/<key>/`` and reloaded (sae-lens format)."""
    tokens = torch.as_tensor(tokens).flatten()
    key = cache_key("sae", {"cfg": cfg, "layers": list(layers) if layers is not None else None,
                            "tokens": int(tokens.numel()), "first": tokens[:64].tolist()},
                    model.cfg.model_name)
    folder = CACHE_DIR / "sae" / key
    if refresh or not (folder / "index.json").exists():
        save_saes(train_saes(model, tokens, cfg, layers), folder)
    return load_saes(folder, model, cfg.granularity, layers)


def effective_decoder(sae) -> Float[Tensor, "d_sae d_in"]:
    """Each latent's contribution to the reconstruction per unit activation:
    ``decode(e_j) - decode(0)`` (accounts for any decoder-norm rescaling)."""
    with torch.no_grad():
        eye = torch.eye(sae.cfg.d_sae, dtype=sae.W_dec.dtype, device=sae.W_dec.device)
        zero = torch.zeros(1, sae.cfg.d_sae, dtype=sae.W_dec.dtype, device=sae.W_dec.device)
        return (_decode_flat(sae, eye) - _decode_flat(sae, zero)).float().cpu()


def _decode_flat(sae, acts: Tensor) -> Tensor:
    out = sae.decode(acts)
    return out.reshape(acts.shape[0], -1)


def _encode_flat(sae, x: Tensor) -> Tensor:
    return sae.encode(x)


# --------------------------------------------------------------------------------------
# SAE quality metrics
# --------------------------------------------------------------------------------------


def explained_variance(x: Float[Tensor, "n d"], x_hat: Float[Tensor, "n d"]) -> float:
    """``1 - Σ‖x - x̂‖² / Σ‖x - x̄‖²`` over all tokens (x̄: the mean activation)."""
    x, x_hat = x.double(), x_hat.double()
    resid = (x - x_hat).pow(2).sum()
    total = (x - x.mean(0, keepdim=True)).pow(2).sum()
    return float(1 - resid / total)


def ce_loss_recovered(ce_clean: float, ce_sae: float, ce_ablated: float) -> float:
    """``(CE_ablated - CE_sae) / (CE_ablated - CE_clean)``: 1 when splicing in costs nothing."""
    return (ce_ablated - ce_sae) / (ce_ablated - ce_clean)


@dataclass
class LatentStats:
    """Per-layer latent activity on the evaluation groups, with reconstruction statistics.

    ``sums[key]`` ``[G, d_sae]``: summed activations per group; ``fires[key]`` ``[G, d_sae]``:
    tokens on which each latent was active; ``n_tokens`` ``[G]``; ``l0``, ``ev`` per key.
    """

    groups: list[str]
    n_tokens: Tensor
    sums: dict[str, Tensor]
    fires: dict[str, Tensor]
    sq_err: dict[str, float]
    sq_total: dict[str, float]

    def alive(self, key: str) -> Tensor:
        """Latents active on at least one evaluation token."""
        return self.fires[key].sum(0) > 0

    def l0(self, key: str) -> float:
        return float(self.fires[key].sum() / self.n_tokens.sum())

    def ev(self, key: str) -> float:
        return 1 - self.sq_err[key] / self.sq_total[key]


@torch.no_grad()
def latent_stats(model, saes: dict[str, Any], groups: dict[str, Tensor], context: int = 128,
                 batch_size: int = 8, skip_first: int = 1) -> LatentStats:
    """Encode every layer's ``hook_z`` with its SAE over each group's tokens (one forward per batch);
    the first ``skip_first`` positions of each sequence are left out, as in training."""
    keys = [(k, int(k.split(".")[1]), int(k.split(":h")[1]) if ":h" in k else None) for k in saes]
    hooks = sorted({hook_z(l) for _, l, _ in keys}, key=lambda h: int(h.split(".")[1]))
    sums = {k: torch.zeros(len(groups), saes[k].cfg.d_sae, dtype=torch.float64) for k in saes}
    fires = {k: torch.zeros(len(groups), saes[k].cfg.d_sae, dtype=torch.float64) for k in saes}
    s1 = {k: torch.zeros(saes[k].cfg.d_in, dtype=torch.float64) for k in saes}
    s2 = dict.fromkeys(saes, 0.0)
    err = dict.fromkeys(saes, 0.0)
    n_tok = torch.zeros(len(groups), dtype=torch.float64)
    for g, (name, toks) in enumerate(groups.items()):
        seqs = sequences(toks, context)
        for i in progress(range(0, len(seqs), batch_size), desc=f"latents ({name})"):
            store: dict[str, Tensor] = {}
            model.run_with_hooks(seqs[i : i + batch_size].to(model.cfg.device), return_type=None,
                                 stop_at_layer=max(l for _, l, _ in keys) + 1,
                                 fwd_hooks=[(h, lambda a, hook: store.__setitem__(hook.name, a[:, skip_first:]))
                                            for h in hooks])
            for k, l, h in keys:
                x = _head_slices(store[hook_z(l)], h).reshape(-1, saes[k].cfg.d_in)
                a = _encode_flat(saes[k], x)
                x_hat = saes[k].decode(a).reshape(x.shape)
                sums[k][g] += a.double().sum(0).cpu()
                fires[k][g] += (a > 0).double().sum(0).cpu()
                xd = x.double().cpu()
                s1[k] += xd.sum(0)
                s2[k] += float(xd.pow(2).sum())
                err[k] += float((xd - x_hat.double().cpu()).pow(2).sum())
            n_tok[g] += seqs[i : i + batch_size, skip_first:].numel()
    n = float(n_tok.sum())
    total = {k: s2[k] - float(s1[k].pow(2).sum()) / n for k in saes}  # Σ‖x - x̄‖²
    return LatentStats(list(groups), n_tok, sums, fires, err, total)


@torch.no_grad()
def ce_losses(model, saes: dict[str, Any], tokens: Int[Tensor, " n"], context: int = 128,
              batch_size: int = 8, skip_first: int = 1) -> dict[str, dict[str, float]]:
    """Per SAE: next-token CE of the clean model, with the SAE's reconstruction spliced into
    ``hook_z``, and with ``hook_z`` zero-ablated (for per-head SAEs: that head only). Positions
    before ``skip_first`` (the attention sink, which the SAEs do not model) are left clean."""
    seqs = sequences(tokens, context).to(model.cfg.device)
    resid = _resid_cache(model, seqs)
    clean = float(model(seqs, return_type="loss"))
    out = {}
    for key in progress(list(saes), desc="CE loss recovered"):
        l = int(key.split(".")[1])
        h = int(key.split(":h")[1]) if ":h" in key else None
        sae = saes[key]

        def splice(z, hook, sae=sae, h=h):
            z = z.clone()
            part = z[:, skip_first:] if h is None else z[:, skip_first:, h]
            flat = part.flatten(-2) if h is None else part
            part.copy_(sae.decode(sae.encode(flat)).reshape(part.shape))
            return z

        def ablate(z, hook, h=h):
            z = z.clone()
            if h is None:
                z[:, skip_first:] = 0
            else:
                z[:, skip_first:, h] = 0
            return z

        row = {"clean": clean}
        for name, fn in (("sae", splice), ("ablated", ablate)):
            row[name] = _loss_from(model, resid, seqs, l, [(hook_z(l), fn)], batch_size)
        row["recovered"] = ce_loss_recovered(row["clean"], row["sae"], row["ablated"])
        out[key] = row
    return out


def _resid_cache(model, seqs: Tensor) -> Tensor:
    """``[n_layers, batch, pos, d_model]``: every layer's ``hook_resid_pre`` on ``seqs``."""
    names = [f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(seqs, names_filter=lambda n: n in names, return_type=None)
    return torch.stack([cache[n] for n in names])


def _loss_from(model, resid: Tensor, seqs: Tensor, layer: int, hooks, batch_size: int) -> float:
    """Mean next-token CE of ``seqs`` when the model runs from ``layer``'s cached residual with hooks."""
    total, count = 0.0, 0
    with model.hooks(fwd_hooks=hooks):
        for i in range(0, seqs.shape[0], batch_size):
            logits = model(resid[layer, i : i + batch_size], start_at_layer=layer, return_type="logits")
            target = seqs[i : i + batch_size, 1:]
            total += F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), reduction="sum").item()
            count += target.numel()
    return total / count


@torch.no_grad()
def sae_quality(model, saes: dict[str, Any], stats: LatentStats, ce_tokens: Tensor,
                context: int = 128, layers: Sequence[int] | None = None) -> "pd.DataFrame":  # noqa: F821
    """The standard SAE metrics per SAE: explained variance, L0, dead latents, and CE loss
    recovered (for the SAEs of ``layers``; default all, NaN for the others)."""
    import pandas as pd

    chosen = {k: v for k, v in saes.items() if layers is None or int(k.split(".")[1]) in layers}
    ce = ce_losses(model, chosen, ce_tokens, context)
    nan = dict.fromkeys(("clean", "sae", "ablated", "recovered"), float("nan"))
    rows = {}
    for key, sae in saes.items():
        ce.setdefault(key, nan)
        alive = stats.alive(key)
        rows[key] = {"d_sae": sae.cfg.d_sae, "explained variance": stats.ev(key), "L0": stats.l0(key),
                     "dead latents": int((~alive).sum()), "dead fraction": float((~alive).float().mean()),
                     "CE clean": ce[key]["clean"], "CE with SAE": ce[key]["sae"],
                     "CE ablated": ce[key]["ablated"], "CE loss recovered": ce[key]["recovered"]}
    return pd.DataFrame(rows).T


# --------------------------------------------------------------------------------------
# Capability density
# --------------------------------------------------------------------------------------


def _check_mass(mass: Tensor, alive: Tensor | None = None) -> tuple[Tensor, Tensor]:
    mass = torch.as_tensor(mass, dtype=torch.float64)
    if mass.numel() == 0 or mass.ndim < 2 or mass.shape[-1] == 0 or mass.shape[-2] == 0:
        raise ValueError(f"Empty activations (mass of shape {tuple(mass.shape)}): density needs at least "
                         "one group of tokens and one latent. Pass evaluation tokens that the SAE encodes.")
    if (mass < 0).any() or not torch.isfinite(mass).all():
        raise ValueError("Latent mass must be finite and non-negative (SAE activations times decoder norms).")
    alive = (mass.sum(-2) > 0) if alive is None else torch.as_tensor(alive, dtype=torch.bool).expand(mass.shape[:-2] + mass.shape[-1:])
    if (alive.sum(-1) == 0).any():
        raise ValueError("All SAE latents are dead on the evaluation set (no latent ever fired), so "
                         "capability density is undefined. Train the SAE longer or on more varied text.")
    if (mass.sum((-2, -1)) == 0).any():
        raise ValueError("A component has zero mass on every latent (its decoder slices or activations "
                         "are all zero), so its latent distribution is undefined.")
    return mass, alive


def latent_distribution(mass: Float[Tensor, "... G F"]) -> Float[Tensor, "... F"]:
    """``p_j = Σ_g M_{g,j} / Σ_{g,j} M_{g,j}``: the component's share of mass on each latent."""
    pooled = torch.as_tensor(mass, dtype=torch.float64).sum(-2)
    return pooled / pooled.sum(-1, keepdim=True)


def feature_breadth(mass: Float[Tensor, "... G F"], alive: Tensor | None = None, eps: float = 0.1) -> Tensor:
    """Feature breadth ``B = |{j ∈ A : p_j ≥ ε / |A|}| / |A|``, the share of live latents used.

    ``A``: live latents (``alive``; default: latents with any mass). A uniform spread over the
    live latents gives 1; all mass on one latent gives ``1/|A|``.
    """
    mass, alive = _check_mass(mass, alive)
    p = latent_distribution(mass)
    n_alive = alive.sum(-1, keepdim=True).double()
    used = (p >= eps / n_alive) & alive
    return used.sum(-1) / n_alive.squeeze(-1)


def activation_entropy(mass: Float[Tensor, "... G F"], alive: Tensor | None = None) -> Tensor:
    """Normalised entropy ``H = -Σ_j p_j log p_j / log |A|`` of the mass over latents, in [0, 1].

    Uniform over the live latents gives 1, a single latent 0 (and ``|A| = 1`` gives 0).
    """
    mass, alive = _check_mass(mass, alive)
    p = latent_distribution(mass)
    h = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
    n_alive = alive.sum(-1).double()
    return torch.where(n_alive > 1, h / n_alive.clamp(min=2).log(), torch.zeros_like(h))


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen–Shannon divergence in bits, ``½ KL(p‖m) + ½ KL(q‖m)`` with ``m = ½(p + q)``; in [0, 1]."""
    m = (p + q) / 2

    def kl(a, b):
        return (a * torch.where(a > 0, (a / b.clamp(min=1e-300)).log2(), torch.zeros_like(a))).sum(-1)

    return (kl(p, m) + kl(q, m)) / 2


def cross_input_consistency(mass: Float[Tensor, "... G F"]) -> Tensor:
    """``C = 1 - mean_{g<g'} JSD₂(q_g, q_{g'})``, ``q_g = M_g / Σ_j M_{g,j}``: 1 when every
    group (domain) spreads its mass over latents alike, 0 when groups use disjoint latents."""
    mass, _ = _check_mass(mass)
    G = mass.shape[-2]
    if G < 2:
        raise ValueError("Cross-input consistency needs at least two groups of inputs (e.g. two domains).")
    totals = mass.sum(-1, keepdim=True)
    if (totals == 0).any():
        raise ValueError("A component has no latent mass in one evaluation group; consistency across "
                         "groups is undefined there. Use larger groups.")
    q = mass / totals
    pairs = [(a, b) for a in range(G) for b in range(a + 1, G)]
    jsd = torch.stack([js_divergence(q[..., a, :], q[..., b, :]) for a, b in pairs], -1)
    return 1 - jsd.mean(-1)


def capability_density(mass: Float[Tensor, "... G F"], alive: Tensor | None = None,
                       eps: float = 0.1) -> dict[str, Tensor]:
    """The three parts and their geometric mean ``D = (B · H · C)^{1/3}``."""
    b = feature_breadth(mass, alive, eps)
    h = activation_entropy(mass, alive)
    c = cross_input_consistency(mass)
    return {"breadth": b, "entropy": h, "consistency": c, "density": (b * h * c).clamp(min=0) ** (1 / 3)}


def head_mass(stats: LatentStats, saes: dict[str, Any], n_layers: int, n_heads: int
              ) -> tuple[Float[Tensor, "layer head G F"], Tensor]:
    """Per head: ``M_{g,j} = (Σ_{n∈g} a_{n,j}) · ‖d_j^{(h)}‖`` and the layer's live latents ``[L, F]``.

    With per-layer SAEs ``d_j^{(h)}`` is head ``h``'s slice of latent ``j``'s decoder row; with
    per-head SAEs, the head's own SAE gives the whole row.
    """
    per_layer = any(":h" not in k for k in saes)
    masses, alive = [], []
    for l in range(n_layers):
        if per_layer:
            k = sae_key(l)
            dec = effective_decoder(saes[k])  # [F, n_heads * d_head]
            dnorm = dec.view(dec.shape[0], n_heads, -1).norm(dim=-1).T.double()  # [H, F]
            masses.append(stats.sums[k][None] * dnorm[:, None, :])
            alive.append(stats.alive(k)[None].expand(n_heads, -1))
        else:
            ms, al = [], []
            for h in range(n_heads):
                k = sae_key(l, h)
                dnorm = effective_decoder(saes[k]).norm(dim=-1).double()
                ms.append(stats.sums[k] * dnorm[None])
                al.append(stats.alive(k))
            masses.append(torch.stack(ms))
            alive.append(torch.stack(al))
    return torch.stack(masses), torch.stack(alive)


def density_map(stats: LatentStats, saes: dict[str, Any], n_layers: int, n_heads: int,
                eps: float = 0.1) -> dict[str, Float[Tensor, "layer head"]]:
    """Capability density and its three parts for every head, ``{part: [n_layers, n_heads]}``."""
    mass, alive = head_mass(stats, saes, n_layers, n_heads)
    return {k: v.float() for k, v in capability_density(mass, alive, eps).items()}


# --------------------------------------------------------------------------------------
# Wanda importance per head
# --------------------------------------------------------------------------------------


@torch.no_grad()
def input_norms(model, tokens: Int[Tensor, " n"], context: int = 128, batch_size: int = 8
                ) -> dict[str, Float[Tensor, " d_in"]]:
    """``‖X_i‖₂`` of every input feature of the attention weights over calibration tokens,
    keyed by :func:`analysis.compress.input_hook` (``ln1.hook_normalized`` and ``attn.hook_z``).

    TransformerLens's ``ln1.hook_normalized`` sits *before* the norm's weight (and bias), so the
    norm's affine map is applied here: ``X`` is what ``W_Q``, ``W_K`` and ``W_V`` really multiply.
    """
    seqs = sequences(tokens, context)
    hooks = [h for l in range(model.cfg.n_layers)
             for h in (compress.input_hook(f"blocks.{l}.attn.W_Q"), compress.input_hook(f"blocks.{l}.attn.W_O"))]
    sq: dict[str, Tensor] = {}
    last: dict[str, Tensor] = {}

    def grab(act, hook):  # ln1 runs once each for Q, K and V: keep one copy per forward
        last[hook.name] = act

    for i in progress(range(0, len(seqs), batch_size), desc="Wanda norms"):
        model.run_with_hooks(seqs[i : i + batch_size].to(model.cfg.device), return_type=None,
                             fwd_hooks=[(h, grab) for h in hooks])
        for name, act in last.items():
            x = act.flatten(-2) if act.ndim == 4 else act
            x = compress.norm_output(model, name, x)  # the hook sits before the norm's own weight
            sq[name] = sq.get(name, 0) + x.double().pow(2).flatten(0, -2).sum(0)
    return {k: v.sqrt().float().cpu() for k, v in sq.items()}


def wanda_head_scores(model, norms: dict[str, Tensor]) -> Float[Tensor, "layer head"]:
    """Per head: ``Σ |W_ij| · ‖X_i‖₂`` over its W_Q columns, W_O rows, and W_K/W_V columns of
    its key-value group divided by the group size (Sun et al. 2023, aggregated per head)."""
    cfg = model.cfg
    H, dh = cfg.n_heads, cfg.d_head
    kv = cfg.n_key_value_heads or H
    group = H // kv
    params = dict(model.named_parameters())
    out = torch.zeros(cfg.n_layers, H)
    for l in range(cfg.n_layers):
        for w in compress.ATTN_WEIGHTS:
            name = f"blocks.{l}.attn.{w}"
            lin = compress.to_linear(name, params[compress.parameter_name(model, name)].detach()).float().cpu()
            x = norms[compress.input_hook(name)]
            score = lin.abs() * x[:, None]  # [d_in, d_out]
            if w == "W_O":
                out[l] += score.view(H, dh, -1).sum((1, 2))
            elif w == "W_Q":
                out[l] += score.view(-1, H, dh).sum((0, 2))
            else:
                per_group = score.view(score.shape[0], -1, dh).sum((0, 2))  # [kv]
                out[l] += per_group.repeat_interleave(group) / group
    return out


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    vals = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and vals[j + 1] == vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman's ρ: the Pearson correlation of average ranks (NaN if either side is constant)."""
    rx, ry = _ranks(np.asarray(x, float).ravel()), _ranks(np.asarray(y, float).ravel())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def rank_test(x, y, n_boot: int = 2000, n_perm: int = 2000, seed: int = 0) -> dict[str, float]:
    """Spearman ρ with a 95% percentile bootstrap CI and a two-sided permutation p-value."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if x.shape != y.shape or len(x) < 3:
        raise ValueError(f"Need paired samples of at least 3, got {x.shape} and {y.shape}.")
    rng = np.random.default_rng(seed)
    rho = spearman(x, y)
    boots = [spearman(x[i], y[i]) for i in (rng.integers(0, len(x), len(x)) for _ in range(n_boot))]
    boots = np.asarray([b for b in boots if not math.isnan(b)])
    perms = np.asarray([spearman(x, rng.permutation(y)) for _ in range(n_perm)])
    p = (1 + np.sum(np.abs(perms) >= abs(rho) - 1e-12)) / (n_perm + 1)
    lo, hi = np.percentile(boots, [2.5, 97.5]) if len(boots) else (float("nan"),) * 2
    return {"rho": rho, "ci_low": float(lo), "ci_high": float(hi), "p_perm": float(p), "n": len(x)}


def head_rank_test(x, y, cfg: DensityConfig) -> dict[str, float]:
    """:func:`rank_test` over the heads where both ``x`` and ``y`` are measured (not NaN)."""
    x, y = torch.as_tensor(x).flatten().double(), torch.as_tensor(y).flatten().double()
    ok = ~(x.isnan() | y.isnan())
    return rank_test(x[ok].numpy(), y[ok].numpy(), cfg.n_boot, cfg.n_perm, cfg.seed)


def layer_share(x: Float[Tensor, "layer head"]) -> float:
    """The share of ``x``'s variance that lies between layers (η²: variance of the layer means
    over the total variance); 1 when every head of a layer has the same value."""
    x = torch.as_tensor(x).double()
    total = x.var(unbiased=False)
    return float(x.mean(1).var(unbiased=False) / total) if total > 0 else float("nan")


def within_layer_rank_test(x: Float[Tensor, "layer head"], y: Float[Tensor, "layer head"], n_perm: int = 2000,
                           seed: int = 0) -> dict[str, float]:
    """Spearman ρ between heads *of the same layer*: each layer's heads ranked among themselves,
    centred, and correlated over all heads; p from permuting heads within their layers."""
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    ok = ~(x.isnan() | y.isnan()).any(1)  # whole layers only
    rx = torch.stack([torch.as_tensor(_ranks(row.numpy())) for row in x[ok]])
    ry = torch.stack([torch.as_tensor(_ranks(row.numpy())) for row in y[ok]])
    rx, ry = rx - rx.mean(1, keepdim=True), ry - ry.mean(1, keepdim=True)

    def corr(a, b):
        den = float((a.pow(2).sum() * b.pow(2).sum()).sqrt())
        return float((a * b).sum()) / den if den > 0 else float("nan")

    rho = corr(rx, ry)
    gen = torch.Generator().manual_seed(seed)
    perms = [corr(rx, torch.stack([row[torch.randperm(len(row), generator=gen)] for row in ry]))
             for _ in range(n_perm)]
    p = (1 + sum(abs(v) >= abs(rho) - 1e-12 for v in perms)) / (n_perm + 1)
    return {"rho": rho, "p_perm": float(p), "n": int(ok.sum()) * x.shape[1]}


def partial_spearman(x, y, z) -> float:
    """Spearman ρ(x, y | z): the correlation of the rank residuals after regressing out z's ranks."""
    x, y, z = (np.asarray(v, float).ravel() for v in (x, y, z))
    ok = ~(np.isnan(x) | np.isnan(y) | np.isnan(z))
    rx, ry, rz = (_ranks(v[ok]) for v in (x, y, z))
    def resid(a):
        A = np.stack([rz, np.ones_like(rz)], 1)
        return a - A @ np.linalg.lstsq(A, a, rcond=None)[0]
    ex, ey = resid(rx), resid(ry)
    den = math.sqrt((ex**2).sum() * (ey**2).sum())
    return float((ex * ey).sum() / den) if den > 0 else float("nan")


# --------------------------------------------------------------------------------------
# Direct importance: ablating one head
# --------------------------------------------------------------------------------------


def _fact_batch(model, prompts: Sequence[str], targets: Sequence[str]):
    from analysis.evaluate import _last_positions, first_target_token

    toks, last = _last_positions(model, list(prompts))
    return toks, last, torch.tensor([first_target_token(model, t) for t in targets])


def _zero_heads(heads_of_row: Tensor):
    """A ``hook_z`` hook zeroing head ``heads_of_row[i]`` in batch row ``i`` (all positions)."""
    def hook(z, hook):
        z = z.clone()
        rows = torch.arange(z.shape[0], device=z.device)
        z[rows, :, heads_of_row.to(z.device)] = 0
        return z
    return hook


@torch.no_grad()
def head_ablation(model, tokens: Int[Tensor, " n"], prompts: Sequence[str], targets: Sequence[str],
                  context: int = 128, max_tokens: int = 2048, layers: Sequence[int] | None = None
                  ) -> dict[str, Tensor]:
    """Zero-ablate each head's ``hook_z`` alone (the same as zeroing its W_O rows) and measure
    ``{"loss": ΔCE [L, H], "logp": drop in target log-prob [L, H], "recall": drop in recall [L, H]}``.

    Each layer's runs start from the cached clean residual stream at that layer, and the
    ablations of several heads share one forward pass (one copy of the text per head, up to
    ``max_tokens`` tokens per pass). Heads of layers not in ``layers`` (default: all) are NaN.
    """
    L, H = model.cfg.n_layers, model.cfg.n_heads
    layers = range(L) if layers is None else layers
    seqs = sequences(tokens, context).to(model.cfg.device)
    resid = _resid_cache(model, seqs)
    n_seq = seqs.shape[0]
    has_facts = len(prompts) > 0
    if has_facts:
        ftoks, last, tid = _fact_batch(model, prompts, targets)
        fresid = _resid_cache(model, ftoks)
        flogits = model(ftoks, return_type="logits")
        flogp = flogits[torch.arange(len(last)), last].float().log_softmax(-1)
        base_logp, base_hit = flogp[torch.arange(len(tid)), tid], flogp.argmax(-1) == tid
    logits = model(seqs, return_type="logits")
    clean = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), seqs[:, 1:].flatten()).item()
    del logits
    per_pass = max(1, max_tokens // seqs.numel())
    out = {k: torch.full((L, H), float("nan")) for k in ("loss", "logp", "recall")}
    for l in progress(list(layers), desc="head ablation"):
        for h0 in range(0, H, per_pass):
            heads = torch.arange(h0, min(H, h0 + per_pass))
            rows = heads.repeat_interleave(n_seq)
            with model.hooks(fwd_hooks=[(hook_z(l), _zero_heads(rows))]):
                logits = model(resid[l].repeat(len(heads), 1, 1), start_at_layer=l, return_type="logits")
            target = seqs[:, 1:].repeat(len(heads), 1)
            ce = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), target, reduction="none")  # [rows, pos-1]
            out["loss"][l, heads] = ce.view(len(heads), -1).mean(1).cpu() - clean
            del logits
            if has_facts:
                frows = heads.repeat_interleave(len(tid))
                with model.hooks(fwd_hooks=[(hook_z(l), _zero_heads(frows))]):
                    final = model(fresid[l].repeat(len(heads), 1, 1), start_at_layer=l,
                                  stop_at_layer=model.cfg.n_layers)  # residual after the last block
                idx = torch.arange(len(frows))
                x = final[idx, last.repeat(len(heads))][:, None]  # only the answer position is decoded
                lp = model.unembed(model.ln_final(x))[:, 0].float().log_softmax(-1)
                t = tid.repeat(len(heads))
                out["logp"][l, heads] = (base_logp.repeat(len(heads)) - lp[idx, t]).view(len(heads), -1).mean(1).cpu()
                hit = (lp.argmax(-1) == t).float().view(len(heads), -1).mean(1).cpu()
                out["recall"][l, heads] = base_hit.float().mean() - hit
    out["clean_loss"] = torch.tensor(clean)
    return out


# --------------------------------------------------------------------------------------
# Phase transitions: one head's loss as its sparsity rises
# --------------------------------------------------------------------------------------


def spread_heads(values: Float[Tensor, "layer head"], n: int) -> list[tuple[int, int]]:
    """``n`` heads at evenly spaced quantiles of ``values`` (lowest to highest)."""
    flat = values.flatten()
    order = flat.argsort()
    order = order[~flat[order].isnan()]  # NaN: heads not eligible
    picks = sorted({int(order[round(i * (len(order) - 1) / max(1, n - 1))]) for i in range(n)})
    H = values.shape[1]
    return [(i // H, i % H) for i in picks]


@torch.no_grad()
def transition_curves(model, tokens: Int[Tensor, " n"], heads: Sequence[tuple[int, int]],
                      levels: Sequence[float], context: int = 128, batch_size: int = 8) -> Tensor:
    """``ΔCE [n_heads, n_levels]`` when one head alone is pruned to each sparsity
    (:class:`analysis.compress.HeadSparsity` on that head only: its W_Q columns and W_O rows)."""
    seqs = sequences(tokens, context).to(model.cfg.device)
    resid = _resid_cache(model, seqs)
    clean = _loss_from(model, resid, seqs, 0, [], batch_size)
    out = torch.zeros(len(heads), len(levels))
    H = model.cfg.n_heads
    for i, (l, h) in enumerate(progress(list(heads), desc="transition curves")):
        for j, s in enumerate(levels):
            fr = tuple(float(s) if k == h else 0.0 for k in range(H))
            plan = compress.CompressionPlan({f"blocks.{l}.attn": [compress.HeadSparsity(fr)]})
            with plan.applied(model):
                out[i, j] = _loss_from(model, resid, seqs, l, [], batch_size) - clean
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


# --------------------------------------------------------------------------------------
# Budget allocation
# --------------------------------------------------------------------------------------


def allocate(importance: Float[Tensor, "layer head"] | None, mean: float, spread: float = 0.5,
             shape: tuple[int, int] | None = None, seed: int | None = None) -> Tensor:
    """Per-head sparsities with mean exactly ``mean``: linear in the importance rank, from
    ``mean + δ`` (least important) to ``mean - δ`` (most important), ``δ = min(spread·mean, 0.99 - mean, mean)``.

    ``importance=None`` gives the uniform allocation; ``seed`` shuffles the ranks (random).
    """
    if importance is None:
        return torch.full(shape, float(mean))
    flat = importance.flatten().double()
    n = flat.numel()
    ranks = torch.as_tensor(_ranks(flat.numpy()))  # 0 = least important
    if seed is not None:
        ranks = ranks[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    delta = min(spread * mean, 0.99 - mean, mean)
    r = ranks / max(1, n - 1)  # 0 .. 1
    s = mean + delta * (1 - 2 * r)
    return (s - s.mean() + mean).view(importance.shape).float()


def allocations(density: Tensor, wanda: Tensor, mean: float, spread: float, n_random: int = 1,
                seed: int = 0) -> dict[str, Tensor]:
    """The four strategies at a matched mean sparsity: capability-guided, Wanda-guided, uniform, random."""
    out = {"capability": allocate(density, mean, spread), "wanda": allocate(wanda, mean, spread),
           "uniform": allocate(None, mean, shape=tuple(density.shape))}
    for r in range(n_random):
        out["random" if n_random == 1 else f"random {r}"] = allocate(density, mean, spread, seed=seed + r)
    return out


def head_sparsity_plan(fractions: Float[Tensor, "layer head"]) -> compress.CompressionPlan:
    """A plan giving every layer's attention :class:`analysis.compress.HeadSparsity` at ``fractions``."""
    return compress.CompressionPlan({f"blocks.{l}.attn": [compress.HeadSparsity(tuple(map(float, row)))]
                                     for l, row in enumerate(fractions)})


def _features(model, texts: Sequence[str], batch_size: int = 8) -> Tensor:
    """Mean-pooled final-norm residual (``ln_final.hook_normalized``) of each text."""
    feats = []
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i : i + batch_size])
        toks = [model.to_tokens(t, prepend_bos=True, truncate=True)[0][:128] for t in chunk]
        lens = torch.tensor([t.numel() for t in toks])
        batch = torch.zeros(len(toks), int(lens.max()), dtype=torch.long)
        for j, t in enumerate(toks):
            batch[j, : t.numel()] = t
        _, cache = model.run_with_cache(batch.to(model.cfg.device), names_filter="ln_final.hook_normalized",
                                        return_type=None)
        x = cache["ln_final.hook_normalized"].float().cpu()
        mask = (torch.arange(x.shape[1])[None] < lens[:, None]).float()[..., None]
        feats.append((x * mask).sum(1) / lens[:, None])
    return torch.cat(feats)


def probe_accuracy(features: Tensor, labels: Tensor, n_train: int, l2: float = 1e-2, seed: int = 0) -> float:
    """Held-out accuracy of an L2-regularised logistic (softmax) probe fit by L-BFGS on ``n_train`` rows."""
    torch.manual_seed(seed)
    x = (features - features[:n_train].mean(0)) / (features[:n_train].std(0) + 1e-6)
    y = torch.as_tensor(labels).long()
    k = int(y.max()) + 1
    w = torch.zeros(x.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x[:n_train] @ w + b, y[:n_train]) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((x[n_train:] @ w + b).argmax(-1) == y[n_train:]).float().mean())


@torch.no_grad()
def evaluate_model(model, eval_tokens: Tensor, prompts: Sequence[str], targets: Sequence[str],
                   probe_texts: Sequence[str], probe_labels: Sequence[int], context: int = 128) -> dict[str, float]:
    """Perplexity, fact recall (known facts) and probe accuracy of ``model`` as it stands."""
    from analysis.evaluate import fact_recall, lm_score

    score = lm_score(model, eval_tokens, context=context, desc="perplexity")
    recall = fact_recall(model, list(prompts), list(targets)).float().mean().item()
    feats = _features(model, probe_texts)
    acc = probe_accuracy(feats, torch.tensor(list(probe_labels)), n_train=len(probe_texts) // 2)
    return {"perplexity": score.perplexity, "fact recall": recall, "probe accuracy": acc}


def budget_comparison(model, density: Tensor, wanda: Tensor, cfg: DensityConfig, eval_tokens: Tensor,
                      prompts: Sequence[str], targets: Sequence[str], probe_texts: Sequence[str],
                      probe_labels: Sequence[int], context: int = 128) -> "pd.DataFrame":  # noqa: F821
    """Each allocation strategy at each mean sparsity, applied to every head, then evaluated."""
    import pandas as pd

    args = (eval_tokens, prompts, targets, probe_texts, probe_labels, context)
    rows = [{"mean sparsity": 0.0, "strategy": "dense", **evaluate_model(model, *args)}]
    for mean in cfg.budget_sparsities:
        for name, fr in allocations(density, wanda, mean, cfg.budget_spread, cfg.n_random, cfg.seed).items():
            with head_sparsity_plan(fr).applied(model) as report:
                rows.append({"mean sparsity": mean, "strategy": name, **evaluate_model(model, *args),
                             "attention bits / dense": report.ratio})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# The study, step by step (each step cached on its configuration)
# --------------------------------------------------------------------------------------


@dataclass
class DensityStudy:
    """The trained SAEs of one model and everything measured from them and from its weights."""

    model_name: str
    saes: dict[str, Any]
    stats: LatentStats
    quality: Any
    """``pandas.DataFrame``: :func:`sae_quality` per SAE."""
    maps: dict[str, Tensor]
    """``{"breadth", "entropy", "consistency", "density", "wanda"}``, each ``[n_layers, n_heads]``."""

    def headline(self, cfg: DensityConfig) -> dict[str, float]:
        """Spearman ρ(density, Wanda) over all heads, with bootstrap CI and permutation p."""
        return rank_test(self.maps["density"], self.maps["wanda"], cfg.n_boot, cfg.n_perm, cfg.seed)


def run_density_study(model, cfg: DensityConfig) -> DensityStudy:
    """Train (or load) the SAEs, measure their quality, the density map and Wanda per head."""
    from analysis.data import lm_tokens

    name = model.cfg.model_name
    train = lm_tokens(model.tokenizer, "train", n_tokens=cfg.sae.train_tokens)
    saes = trained_saes(model, train, cfg.sae)
    groups = domain_tokens(model, cfg.domains, cfg.eval_tokens_per_domain)
    ctx, skip = cfg.sae.context, cfg.sae.skip_first
    key = {"sae": cfg.sae, "domains": cfg.domains, "eval": cfg.eval_tokens_per_domain}
    stats = cached("sae_latent_stats", lambda: latent_stats(model, saes, groups, ctx, skip_first=skip),
                   key, name)
    ce_tokens = lm_tokens(model.tokenizer, "eval", n_tokens=cfg.ce_tokens)
    quality = cached("sae_quality", lambda: sae_quality(model, saes, stats, ce_tokens, ctx, cfg.layers),
                     {**key, "ce": cfg.ce_tokens, "layers": cfg.layers}, name)
    maps = density_map(stats, saes, model.cfg.n_layers, model.cfg.n_heads, cfg.breadth_eps)
    calib = lm_tokens(model.tokenizer, "calib", n_tokens=cfg.calib_tokens)
    norms = cached("wanda_norms", lambda: input_norms(model, calib, ctx), {"calib": cfg.calib_tokens}, name)
    maps["wanda"] = wanda_head_scores(model, norms)
    return DensityStudy(name, saes, stats, quality, maps)


def known_fact_set(model, cfg: DensityConfig) -> tuple[list[str], list[str], dict]:
    """The first ``n_facts`` facts the model knows among ``n_screen`` screened: prompts, targets, stats."""
    from analysis.data import facts, filter_known

    def screen():
        known, stats = filter_known(model, facts(cfg.n_screen))
        known = known.select(range(min(cfg.n_facts, len(known))))
        return list(known["prompt"]), list(known["target"]), stats

    return cached("sae_known_facts", screen, {"n_screen": cfg.n_screen, "n": cfg.n_facts}, model.cfg.model_name)


def run_ablation(model, cfg: DensityConfig, prompts: Sequence[str], targets: Sequence[str]) -> dict[str, Tensor]:
    """:func:`head_ablation` of every head on the evaluation text and the known facts (cached)."""
    from analysis.data import lm_tokens

    tokens = lm_tokens(model.tokenizer, "eval", n_tokens=cfg.ablation_tokens)
    return cached("sae_head_ablation",
                  lambda: head_ablation(model, tokens, prompts, targets, cfg.sae.context, layers=cfg.layers),
                  {"tokens": cfg.ablation_tokens, "prompts": list(prompts), "layers": cfg.layers},
                  model.cfg.model_name)


def run_transitions(model, cfg: DensityConfig, density: Tensor, ablation_loss: Tensor) -> dict[str, Any]:
    """Sparsity curves of ``transition_heads`` heads spread over the density range, and where each breaks."""
    from analysis.data import lm_tokens

    heads = spread_heads(density.masked_fill(ablation_loss.isnan(), float("nan")), cfg.transition_heads)
    tokens = lm_tokens(model.tokenizer, "eval", n_tokens=cfg.ablation_tokens)
    curves = cached("sae_transitions",
                    lambda: transition_curves(model, tokens, heads, cfg.transition_levels, cfg.sae.context),
                    {"tokens": cfg.ablation_tokens, "heads": heads, "levels": cfg.transition_levels},
                    model.cfg.model_name)
    breaks = [break_point(cfg.transition_levels, curves[i].tolist(), float(ablation_loss[l, h]), cfg.break_fraction)
              for i, (l, h) in enumerate(heads)]
    return {"heads": heads, "curves": curves, "breaks": torch.tensor(breaks),
            "density": torch.stack([density[l, h] for l, h in heads])}


def run_budget(model, cfg: DensityConfig, density: Tensor, wanda: Tensor, prompts: Sequence[str],
               targets: Sequence[str]):
    """:func:`budget_comparison` on held-out text, the known facts and the probe task (cached)."""
    from analysis.data import load_task, lm_tokens

    tokens = lm_tokens(model.tokenizer, "eval", n_tokens=cfg.ppl_tokens)
    task = load_task(cfg.probe_task, n=cfg.n_probe, seed=cfg.seed)
    key = {"cfg": cfg, "density": density.tolist(), "wanda": wanda.tolist(), "prompts": list(prompts)}
    return cached("sae_budget", lambda: budget_comparison(
        model, density, wanda, cfg, tokens, prompts, targets, list(task["text"]), list(task["label"]),
        cfg.sae.context), key, model.cfg.model_name)


def budget_summary(frame) -> "pd.DataFrame":  # noqa: F821
    """Per mean sparsity: the best strategies by each metric (ties kept) and, per metric, whether
    capability-guided or Wanda-guided allocation did better."""
    import pandas as pd

    metrics = {"perplexity": "min", "fact recall": "max", "probe accuracy": "max"}
    rows = {}
    for mean, b in frame[frame["strategy"] != "dense"].groupby("mean sparsity"):
        b = b.set_index("strategy")
        row = {}
        for m, how in metrics.items():
            target = b[m].min() if how == "min" else b[m].max()
            row[f"best by {m}"] = ", ".join(sorted(b.index[b[m] == target]))
            c, w = b.loc["capability", m], b.loc["wanda", m]
            better_c = c < w if how == "min" else c > w
            row[f"capability vs Wanda, {m}"] = "tie" if c == w else ("capability" if better_c else "wanda")
        sets = [set(row[f"best by {m}"].split(", ")) for m in metrics]
        row["metrics agree on a best strategy"] = bool(set.intersection(*sets))
        verdicts = {row[f"capability vs Wanda, {m}"] for m in metrics} - {"tie"}
        row["perplexity and fact recall disagree (capability vs Wanda)"] = (
            row["capability vs Wanda, perplexity"] != row["capability vs Wanda, fact recall"]
            and "tie" not in (row["capability vs Wanda, perplexity"], row["capability vs Wanda, fact recall"]))
        rows[mean] = row
    return pd.DataFrame(rows)
