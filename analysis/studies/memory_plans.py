"""The memory plan of each study: what it holds at once on one model, from configs alone.

Each function takes the model's :class:`~transformer_lens.HookedTransformerConfig` and the study's
config and returns an :class:`analysis.memory.MemoryPlan` whose rows follow the study's own code
(each docstring names the modules it follows), so a chapter can print, under the ``gpu`` profile, the peak it is
about to reach and the rule it follows when one device is too small (:func:`analysis.memory.rule`)::

    plan = memory_plans.factorization(model.cfg, cfg)
    book.table(memory.frame(plan), "memory_plan")
    print(memory.rule(plan, memory.device_bytes(profile.device), memory.host_bytes()))

Every plan has the weights (held throughout, on the device) and the host copy made while a
checkpoint is converted (phase ``loading``); the phases after that are the study's own.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from transformer_lens import HookedTransformerConfig

from analysis.memory import (
    HOST,
    MemoryPlan,
    MemoryRow,
    backward_pass,
    dtype_name,
    forward_pass,
    gram,
    loading,
    parameters,
    rows_of,
    sae_training,
)

PROMPT_TOKENS = 32
"""Tokens assumed per fact prompt in the tracing plans: an upper bound (the longest of the 13,741
fact prompts has 110 characters, 20 words; 99 % have at most 72 characters)."""


def _plan(study: str, cfg: HookedTransformerConfig, rows: list) -> MemoryPlan:
    return MemoryPlan(study, str(cfg.model_name), rows_of([parameters(cfg), loading(cfg), *rows]))


def _kv(cfg: HookedTransformerConfig) -> int:
    """Width of one position's keys (or values): ``n_key_value_heads x d_head``."""
    return (cfg.n_key_value_heads or cfg.n_heads) * cfg.d_head


def _mlp_shapes(cfg: HookedTransformerConfig) -> dict[str, tuple[int, int]]:
    """The MLP matrices of one block in the linear view ``[d_in, d_out]``."""
    if cfg.attn_only or not cfg.d_mlp:
        raise ValueError(f"{cfg.model_name} has no MLPs to factorize (attn_only).")
    d, m = cfg.d_model, cfg.d_mlp
    return {"W_in": (d, m), **({"W_gate": (d, m)} if cfg.gated_mlp else {}), "W_out": (m, d)}


# ---- causal tracing (analysis.studies.tracing, analysis.tracing.engine) ----


def _tracing_rows(cfg: HookedTransformerConfig, tcfg: Any, prefix: str = "", pos: int = PROMPT_TOKENS) -> list:
    S = max(tcfg.max_samples, tcfg.convergence_samples, tcfg.heatmap_samples)
    L, d, dt, kv = cfg.n_layers, cfg.d_model, dtype_name(cfg.dtype), _kv(cfg)
    rows_per_pass = max(tcfg.max_rows, S)
    run, restore, attrib = f"{prefix}corrupted run", f"{prefix}restore", f"{prefix}attribution patching"
    return [
        MemoryRow(
            "run_with_cache of [clean, S noise samples]: hook_resid_pre, hook_k, hook_v + 3 restored kinds",
            (S + 1, L, pos, 4 * d + 2 * kv),
            dt,
            2,
            run,
            note=f"S = {S} samples; the cache and its stacked copy (engine.Runs)",
        ),
        forward_pass(cfg, S + 1, pos, run),
        MemoryRow("Runs: corrupted hook_resid_pre, hook_k, hook_v per block", (S, L, pos, d + 2 * kv), dt, 1, restore),
        MemoryRow("Runs: clean hook_resid_post, hook_mlp_out, hook_attn_out per block", (3, L, pos, d), dt, 1, restore),
        forward_pass(cfg, rows_per_pass, pos, restore, logits=False),
        MemoryRow("final logits of the restored rows", (rows_per_pass, cfg.d_vocab_out), "float32", 2, restore),
        backward_pass(cfg, S + 1, pos, attrib),
    ]


def tracing(model_cfg: HookedTransformerConfig, cfg: Any, pos: int = PROMPT_TOKENS) -> MemoryPlan:
    """Causal tracing (:class:`analysis.studies.tracing.TraceConfig`): the corrupted run's cache of
    ``S + 1`` rows (``S`` the most noise samples any trace uses), the restoration batches of
    ``max_rows`` rows (:func:`analysis.tracing.engine.restore`), and one backward pass over the
    ``S + 1`` rows for attribution patching; prompts of ``pos`` tokens."""
    return _plan("causal tracing", model_cfg, _tracing_rows(model_cfg, cfg, pos=pos))


# ---- information-aware compression (analysis.studies.sweep) ----


def sweep(model_cfg: HookedTransformerConfig, cfg: Any, profile: Any) -> MemoryPlan:
    """The compression sweep (:class:`analysis.studies.sweep.SweepConfig`; ``profile`` gives the
    context): the reference's base log-probabilities on the host (``[eval tokens, d_vocab]``
    float32, :class:`analysis.evaluate.Reference`), the gradient score's backward pass (windows of
    4), the causal-tracing score's traces, and per cell a second copy of the rewritten weights
    (``plan.applied`` swaps compressed tensors in and keeps the originals), the compressed-weight
    memo (at most :data:`analysis.compress.plan.MEMO_BYTES`) and one scoring batch. With
    ``n_procs > 1`` every worker holds its own model and reference."""
    from analysis.compress.plan import MEMO_BYTES
    from analysis.config import get_profile
    from analysis.studies.tracing import trace_config_for

    prof = get_profile(profile) if isinstance(profile, str) else profile
    ctx = prof.context
    n_eval = (cfg.eval_tokens // ctx) * ctx
    blocks = ("attn", "mlp")
    rows = [
        MemoryRow(
            "Reference: base log-probs of the eval windows",
            (n_eval, model_cfg.d_vocab_out),
            "float32",
            1,
            "cells",
            HOST,
            "evaluate.Reference keeps them on the host",
        ),
        parameters(model_cfg, "gradients of the blocks' W_* (attn, mlp)", phase="gradient score", kinds=blocks),
        backward_pass(model_cfg, 4, ctx, "gradient score"),
        _tracing_rows(model_cfg, trace_config_for(prof), prefix="causal-tracing score: "),
        parameters(model_cfg, "second copy of the rewritten W_* (plan.applied)", phase="cells", kinds=blocks),
        MemoryRow("compressed-weight memo (compress.plan.MEMO_BYTES)", (MEMO_BYTES,), "uint8", 1, "cells"),
        forward_pass(model_cfg, cfg.batch_size, ctx, "cells"),
    ]
    if cfg.n_procs > 1:
        rows += [
            parameters(model_cfg, "worker processes' models", count=cfg.n_procs, phase="cells"),
            MemoryRow(
                "worker processes' references", (n_eval, model_cfg.d_vocab_out), "float32", cfg.n_procs, "cells", HOST
            ),
        ]
    return _plan("information-aware compression", model_cfg, rows)


# ---- factorization (analysis.studies.factorization, analysis.compress.lowrank / calibration) ----


def factorization(model_cfg: HookedTransformerConfig, cfg: Any) -> MemoryPlan:
    """Factorizing the decoder's MLPs (:class:`analysis.studies.factorization.FactorConfig`).

    Calibration (:func:`analysis.compress.calibration_prefixes`) sums ``XᵀX`` in float64 on the
    device, ``[d_model, d_model]`` at ``blocks.{l}.ln2.hook_normalized`` (the input of ``W_in`` and
    ``W_gate``) and ``[d_mlp, d_mlp]`` at ``blocks.{l}.mlp.hook_post`` (``W_out``'s) per layer, and
    keeps a float32 copy per calibration size for the whole study; FWSVD's Fisher needs the MLP
    weights' gradients of one window. The grid keeps every decomposition (``left [d_in, k]``, ``s
    [k]``, ``right [k, d_out]``, ``k = min(d_in, d_out)``) per weight, method and calibration size
    (``state["svd"]``), holds a second copy of the MLP weights per cell (``plan.applied``), and
    SVD-LLM whitens the widest input in float64. The encoder (the seed's BERT-base) is far smaller
    and left out.
    """
    layers = model_cfg.n_layers if cfg.decoder_layers is None else len(cfg.decoder_layers)
    shapes = _mlp_shapes(model_cfg)
    d, m, dt = model_cfg.d_model, model_cfg.d_mlp, dtype_name(model_cfg.dtype)
    n_sizes = len({cfg.calib_tokens, *cfg.calib_sizes})
    ops = {"asvd" if x == "asvd_rank" else x for x in cfg.methods}
    curve = {x for x in ("fwsvd", "asvd", "svdllm") if x in cfg.methods}
    n_dec = ("svd" in ops) + sum(n_sizes if op in curve else 1 for op in ops - {"svd"})
    calib, grid = "calibration statistics", "factorization grid"
    mlp_values = sum(a * b for a, b in shapes.values())
    rows: list = []
    if "svdllm" in ops:
        rows += [
            MemoryRow(
                "XᵀX per calibration size, blocks.{l}.ln2.hook_normalized",
                (d, d),
                "float32",
                layers * n_sizes,
                (calib, grid),
                note=f"{n_sizes} sizes x {layers} layers, kept in state",
            ),
            MemoryRow(
                "XᵀX per calibration size, blocks.{l}.mlp.hook_post",
                (m, m),
                "float32",
                layers * n_sizes,
                (calib, grid),
                note=f"{n_sizes} sizes x {layers} layers, kept in state",
            ),
            gram("XᵀX sums (float64), blocks.{l}.ln2.hook_normalized", d, layers, calib),
            gram("XᵀX sums (float64), blocks.{l}.mlp.hook_post", m, layers, calib),
        ]
    rows.append(forward_pass(model_cfg, cfg.batch_size, cfg.context, calib))
    if "fwsvd" in ops:
        rows += [
            MemoryRow(
                "gradients of the MLP weights (FWSVD's Fisher)",
                (mlp_values,),
                dt,
                layers,
                calib,
                note="one window per backward pass",
            ),
            backward_pass(model_cfg, 1, cfg.context, calib),
        ]
    for name, (a, b) in shapes.items():
        k = min(a, b)
        rows.append(
            MemoryRow(
                f"decompositions of mlp.{name} (left, s, right)",
                (k * (a + b + 1),),
                "float32",
                layers * n_dec,
                grid,
                note=f"{n_dec} per weight: method x calibration size",
            )
        )
    rows.append(MemoryRow("second copy of the rewritten MLP W_* (plan.applied)", (mlp_values,), dt, layers, grid))
    if "svdllm" in ops:
        a, b = shapes["W_out"]
        rows.append(
            MemoryRow(
                "SVD-LLM on mlp.W_out: L, LᵀW, U, Vh (float64)",
                (a * a + 2 * a * b + b * b,),
                "float64",
                1,
                grid,
                note="the widest input's whitening, one weight at a time",
            )
        )
    rows.append(forward_pass(model_cfg, cfg.batch_size, cfg.context, grid))
    rows.append(
        MemoryRow(
            "decoder probe features, every layer",
            (model_cfg.n_layers, cfg.n_decoder_probe, d),
            "float32",
            1,
            grid,
            HOST,
        )
    )
    return _plan("factorization", model_cfg, rows)


# ---- capability density (analysis.studies.capability, analysis.sae.stream / training) ----


def capability(model_cfg: HookedTransformerConfig, cfg: Any) -> MemoryPlan:
    """Capability density (:class:`analysis.studies.capability.DensityConfig`): one sae-lens TopK SAE
    per layer (or head) on ``hook_z``, all trained at once on one activation stream (each SAE's
    weights, gradients and AdamW moments on the device); the stream's shuffle buffer on the host
    (or the activation pool when it fits :data:`analysis.studies.capability.runner.POOL_BYTES`); and
    the head ablations' cache of every block's ``hook_resid_pre`` over all ablation tokens at once."""
    from analysis.studies.capability.runner import POOL_BYTES

    s = cfg.sae
    L, H, dh, dt = model_cfg.n_layers, model_cfg.n_heads, model_cfg.d_head, dtype_name(model_cfg.dtype)
    per_layer = s.granularity == "layer"
    d_in, n_sae = (H * dh, L) if per_layer else (dh, L * H)
    d_sae = s.expansion * d_in
    train = "SAE training"
    pool_tokens = max(c.train_tokens for c in (*cfg.ladder, s))
    ablate = "head ablation"
    rows = sae_training(d_in, d_sae, n_sae, train, params_phase=(train, ablate))
    if 4 * pool_tokens * L * H * dh <= POOL_BYTES:
        n = (pool_tokens // s.context) * (s.context - s.skip_first)
        rows.append(
            MemoryRow(
                "ActivationPool: hook_z of every SAE key",
                (n, d_in),
                "float32",
                n_sae,
                (train, ablate),
                HOST,
                f"{pool_tokens} tokens; shared by the SAE ladder",
            )
        )
    elif s.epochs > 1:
        n = (s.train_tokens // s.context) * (s.context - s.skip_first)
        rows.append(MemoryRow("hook_z of every SAE key, all epochs' tokens", (n, d_in), "float32", n_sae, train, HOST))
    else:
        n = s.buffer_batches * s.forward_batch * (s.context - s.skip_first) + s.batch_tokens
        rows.append(
            MemoryRow(
                "shuffle buffer: hook_z of every SAE key",
                (n, d_in),
                "float32",
                2 * n_sae,
                train,
                HOST,
                "buffer_batches forward batches + leftover; chunks and their concatenation",
            )
        )
    rows += [
        MemoryRow("hook_z of every layer, one forward batch", (s.forward_batch, s.context, H, dh), dt, L, train),
        forward_pass(model_cfg, s.forward_batch, s.context, train, logits=False),
        MemoryRow("SAE pre-activations and latents, one step", (s.batch_tokens, d_sae), "float32", 2, train),
    ]
    n_seq = max(1, cfg.ablation_tokens // s.context)
    rows += [
        MemoryRow(
            "blocks.{l}.hook_resid_pre over all ablation tokens (residual_cache)",
            (L, n_seq, s.context, model_cfg.d_model),
            dt,
            2,
            ablate,
            note="the cache and its stack",
        ),
        forward_pass(model_cfg, n_seq, s.context, ablate),
    ]
    return _plan("capability density", model_cfg, rows)


# ---- AdaptiveCompress (analysis.studies.adaptive, analysis.sae.activations / saebench) ----


def adaptive(model_cfg: HookedTransformerConfig, cfg: Any) -> MemoryPlan:
    """AdaptiveCompress (:class:`analysis.studies.adaptive.AdaptiveConfig`): ``hook_resid_post`` of the
    seed's layers cached on the host for training and held-out tokens (float32, held throughout),
    one SAE in training at a time (``d_sae = width_mult x d_model``; with the contrastive term's
    ``[d_sae, d_sae]`` cosine matrix) beside the main SAEs kept for probing, and SAEBench's KL/CE
    forward passes with spliced reconstructions."""
    from analysis.sae.activations import relative_layers
    from analysis.studies.adaptive.config import MAIN

    n_layers = len(set(relative_layers(SimpleNamespace(cfg=model_cfg), cfg.seed_layers, cfg.seed_n_layers)))
    d, ctx = model_cfg.d_model, cfg.context
    d_sae = cfg.width_mult * d

    def rows_for(tokens: int) -> int:  # BOS sequences of ctx - 1 tokens; BOS positions are left out
        return (tokens // (ctx - 1)) * (ctx - 1)

    kept = len(MAIN) * len(cfg.seeds)
    collect, train, ce, probe = "activation collection", "SAE training", "KL/CE", "probing"
    b = min(cfg.ce_seqs, 8)
    rows = [
        MemoryRow(
            "blocks.{l}.hook_resid_post, training tokens",
            (rows_for(cfg.train_tokens), d),
            "float32",
            n_layers,
            (collect, train, ce, probe),
            HOST,
            f"{n_layers} layers",
        ),
        MemoryRow(
            "blocks.{l}.hook_resid_post, held-out tokens",
            (rows_for(cfg.eval_tokens), d),
            "float32",
            n_layers,
            (collect, train, ce, probe),
            HOST,
            f"{n_layers} layers",
        ),
        MemoryRow(
            "collect_resid's batches before torch.cat",
            (rows_for(max(cfg.train_tokens, cfg.eval_tokens)), d),
            "float32",
            n_layers,
            collect,
            HOST,
        ),
        forward_pass(model_cfg, 8, ctx, collect, logits=False),
        sae_training(d, d_sae, 1, train),
        MemoryRow("contrastive loss: W_dec rows normalised and their cosines", (d_sae, d_sae), "float32", 2, train),
        MemoryRow("batch latents (pre-activation, gated, code)", (cfg.batch_tokens, d_sae), "float32", 3, train),
        MemoryRow(
            "main SAEs kept for probing (W_enc + W_dec)",
            (2, d, d_sae),
            "float32",
            kept,
            (train, ce, probe),
            note=f"{len(MAIN)} SAEs x {len(cfg.seeds)} seeds, collected as they train",
        ),
        forward_pass(model_cfg, b, ctx, ce),
        MemoryRow("logits of the spliced and zero-ablated runs", (b, ctx, model_cfg.d_vocab_out), "float32", 2, ce),
        MemoryRow("pooled SAE features per probed text", (cfg.n_probe, d_sae), "float32", kept, probe, HOST),
    ]
    return _plan("AdaptiveCompress", model_cfg, rows)


# ---- variance vs importance (analysis.studies.variance, analysis.geometry) ----


def variance(model_cfg: HookedTransformerConfig, cfg: Any) -> MemoryPlan:
    """Variance vs importance (:class:`analysis.studies.variance.VarianceConfig`): the streamed second
    moments of every residual state in float64 on the host (``L + 1`` Grams, ``L`` block cross
    products, ``L`` to the last state), the fitted maps kept in float32 (block maps, tuned lens, PCA),
    the gradient covariance ``E[g gᵀ]`` per layer and the held-out states of every layer, the
    rotated and quantized model copies, and the lenses' per-layer log-probabilities."""
    L, d, dt = model_cfg.n_layers, model_cfg.d_model, dtype_name(model_cfg.dtype)
    ctx, b = cfg.context, cfg.batch_size
    n_eval = (cfg.eval_tokens // ctx) * ctx
    n_maps = L + min(L, max(cfg.multi_blocks)) + (L - 1) + L
    rms = str(model_cfg.normalization_type).startswith("RMS")
    stats, dirs, quant, lens = "block statistics", "directions", "quantization", "lenses and early exit"
    rows = [
        MemoryRow(
            "fitted maps: block maps, ranked maps, tuned lens, PCA",
            (d + 1, d),
            "float32",
            n_maps,
            (stats, dirs, quant, lens),
            HOST,
            "at most [d + 1, d] each",
        ),
        gram("Gram, cross and to-final moments of hook_resid_pre/post", d, 3 * L + 1, stats, HOST),
        forward_pass(model_cfg, b, ctx, stats, logits=False),
        gram("gradient covariance E[g gᵀ] at blocks.{l}.hook_resid_pre", d, L, dirs, HOST),
        backward_pass(model_cfg, b, ctx, dirs),
        MemoryRow(
            "blocks.{l}.hook_resid_pre on the held-out tokens",
            (n_eval, d),
            "float32",
            2 * L,
            dirs,
            HOST,
            "per-batch pieces and their concatenation",
        ),
        parameters(
            model_cfg,
            "rotated copy + quantized copy of the model",
            count=2 if rms else 1,
            phase=quant,
            note="rotation needs RMSNorm" if not rms else "",
        ),
        forward_pass(model_cfg, b, ctx, quant),
        MemoryRow("blocks.{l}.hook_resid_post of one batch", (L, max(1, b // 2), ctx, d), dt, 1, lens),
        MemoryRow(
            "log-probs of the final and one lens layer",
            (max(1, b // 2) * (ctx - 1), model_cfg.d_vocab_out),
            "float32",
            3,
            lens,
        ),
    ]
    return _plan("variance vs importance", model_cfg, rows)


PLANS = {
    "causal_tracing": tracing,
    "information_aware_compression": sweep,
    "factorization": factorization,
    "capability_density": capability,
    "adaptive_compress": adaptive,
    "variance_vs_importance": variance,
}
"""Each chapter's plan function, by chapter name."""
