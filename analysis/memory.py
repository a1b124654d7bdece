"""Memory plans: the largest objects a study holds at once, their bytes, and the peak.

A study on a 7B model can fail an hour in, when it first builds an object that does not fit, such
as SVD-LLM's ``XᵀX`` for an 11008-wide MLP input: ``11008² x 8`` bytes in float64, about 0.9 GiB
per layer and 29 GiB over Llama-2-7B's 32 layers. A *memory plan* computes those objects from the model's
:class:`~transformer_lens.HookedTransformerConfig` and the study's sizes alone, before any weight
is loaded, so a chapter can print, under the ``gpu`` profile, what it is about to allocate.

A plan is a list of :class:`MemoryRow`: one kind of object (named in TransformerLens's vocabulary:
``blocks.{l}.mlp.hook_post``, ``W_out``, ``hook_resid_pre``), its ``shape``, ``dtype`` and how
many of them (``count``) are held; ``bytes = count x prod(shape) x itemsize``. Each row belongs to
one *phase* of the study (calibration, SAE training, ...), to several (a tuple: a cache built in
one phase and read in the next), or is held :data:`THROUGHOUT` (the weights); it lives on the
accelerator (:data:`DEVICE`) or in host RAM (:data:`HOST`). The peak on each side is::

    peak(where) = max over phases p of sum(rows held THROUGHOUT or during p)

Rows of one phase are held at the same time; phases follow one another. Activation memory
(:func:`forward_pass`, :func:`backward_pass`) is estimated from the largest tensors by the formulas
in the docstrings; allocator slack and short-lived temporaries are left out, so a plan is an
estimate to plan with, not a measurement.

When the device peak exceeds one device, :func:`rule` states what to do (:data:`RULE`): split the
model's blocks over several devices with TransformerLens's ``n_devices``, and give transformers'
``device_map="auto"`` the parts that run outside TransformerLens.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from transformer_lens import HookedTransformerConfig

THROUGHOUT = "throughout"
"""The phase of rows held for the whole study (the weights)."""
DEVICE, HOST = "device", "host"

DTYPE_BYTES: dict[str, int] = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
"""Bytes per element of each dtype a plan may name."""
_ALIASES = {"double": "float64", "float": "float32", "half": "float16", "long": "int64", "int": "int32"}

RULE = (
    "Past one device, load the model with TransformerLens's HookedTransformer.from_pretrained(name, "
    "n_devices=k): it places the embedding, each block and the unembedding on one of k GPUs, and what a "
    "study computes from a block (activations, XᵀX, decompositions) stays on that block's GPU; SAEs sit on "
    "model.cfg.device. The parts outside TransformerLens are transformers models: the "
    "AutoModelForCausalLM that analysis.models loads into host RAM to convert SmolLM2's GGUF file or a "
    "local checkpoint folder, and the one TransformerLens's from_pretrained loads to convert a hub "
    "checkpoint; for those, transformers' from_pretrained(..., device_map='auto') spreads the checkpoint "
    "over GPUs, host RAM and disk. analysis.models passes neither argument (it loads every model whole on "
    "one device), so both are advice: load the model yourself with n_devices=k and pass it to the study."
)
"""What to do when a plan does not fit one device (:func:`rule` adds the numbers)."""


def dtype_name(dtype: str | torch.dtype) -> str:
    """The canonical name (``"float32"``) of a torch dtype or its name; ValueError for an unknown one."""
    name = str(dtype).removeprefix("torch.")
    name = _ALIASES.get(name, name)
    if name not in DTYPE_BYTES:
        raise ValueError(f"Unknown dtype {dtype!r}; a memory plan knows {', '.join(DTYPE_BYTES)}.")
    return name


def human(n_bytes: float) -> str:
    """``n_bytes`` in binary units, e.g. ``"1.41 GiB"`` (``"512 B"`` below one KiB)."""
    if n_bytes < 0:
        raise ValueError(f"A byte count cannot be negative, got {n_bytes}.")
    if n_bytes < 1024:
        return f"{int(n_bytes)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n_bytes /= 1024
        if n_bytes < 1024 or unit == "PiB":
            return f"{n_bytes:.2f} {unit}"
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class MemoryRow:
    """``count`` objects of ``shape`` and ``dtype`` held in ``phase`` on ``where`` (:data:`DEVICE` or :data:`HOST`)."""

    object: str
    shape: tuple[int, ...]
    dtype: str
    count: int = 1
    phase: str | tuple[str, ...] = THROUGHOUT
    """A phase, the phases it is held in (a tuple), or :data:`THROUGHOUT`."""
    where: str = DEVICE
    note: str = ""
    """The formula or assumption behind the row."""

    def __post_init__(self):
        object.__setattr__(self, "dtype", dtype_name(self.dtype))
        if not isinstance(self.phase, str):
            object.__setattr__(self, "phase", tuple(self.phase))
            if not self.phase:
                raise ValueError(f"{self.object!r}: give at least one phase (or THROUGHOUT).")
        object.__setattr__(self, "shape", tuple(self.shape))
        for n in (*self.shape, self.count):
            if not isinstance(n, (int,)) or isinstance(n, bool) or n < 0:
                raise ValueError(
                    f"{self.object!r}: shape {self.shape} and count {self.count} must be non-negative integers."
                )
        if self.where not in (DEVICE, HOST):
            raise ValueError(f"{self.object!r}: where must be {DEVICE!r} or {HOST!r}, got {self.where!r}.")

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases the row is held in (``(THROUGHOUT,)`` for the whole study)."""
        return (self.phase,) if isinstance(self.phase, str) else self.phase

    def held_in(self, phase: str) -> bool:
        """Whether the row is held during ``phase``."""
        return self.phase == THROUGHOUT or phase in self.phases

    @property
    def bytes_each(self) -> int:
        """Bytes of one object: ``prod(shape) x itemsize``."""
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]

    @property
    def bytes(self) -> int:
        """Bytes of all ``count`` objects."""
        return self.count * self.bytes_each


@dataclass(frozen=True)
class MemoryPlan:
    """The rows of one study on one model; :meth:`peak` is the most held at once on each side."""

    study: str
    model: str
    rows: tuple[MemoryRow, ...]

    def phases(self) -> list[str]:
        """The phases, in the order their rows first appear (without :data:`THROUGHOUT`)."""
        return list(dict.fromkeys(p for r in self.rows for p in r.phases if p != THROUGHOUT))

    def held(self, phase: str, where: str = DEVICE) -> int:
        """Bytes on ``where`` during ``phase``: the rows held throughout plus the rows held in that phase."""
        return sum(r.bytes for r in self.rows if r.where == where and r.held_in(phase))

    def peak_phase(self, where: str = DEVICE) -> str:
        """The phase that holds the most on ``where`` (:data:`THROUGHOUT` when there are no phases)."""
        return max(self.phases() or [THROUGHOUT], key=lambda p: self.held(p, where))

    def peak(self, where: str = DEVICE) -> int:
        """``max over phases p of sum(rows held throughout or during p)`` on ``where``."""
        return self.held(self.peak_phase(where), where)


# ---- the model's own tensors, from its config ----

_UNSUPPORTED = {
    "num_experts": "mixture-of-experts MLPs",
    "load_in_4bit": "4-bit weights",
}


def _norm(kind: str | None, length: int) -> dict[str, tuple[int, ...]]:
    """Parameters of one TransformerLens norm of ``length``: LN has ``w`` and ``b``, RMS ``w``, the Pre kinds none."""
    return {"LN": {"w": (length,), "b": (length,)}, "RMS": {"w": (length,)}}.get(kind, {})


def parameter_shapes(cfg: HookedTransformerConfig) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every parameter a ``HookedTransformer(cfg)`` has, from the config alone.

    Per block ``l``: ``attn.W_Q`` ``[n_heads, d_model, d_head]``, ``W_K``/``W_V`` ``[n_kv, d_model,
    d_head]`` (``_W_K``/``_W_V`` under grouped-query attention, ``n_kv = n_key_value_heads``), ``W_O``
    ``[n_heads, d_head, d_model]``, their biases, ``mlp.W_in`` (and ``W_gate``) ``[d_model, d_mlp]``,
    ``mlp.W_out`` ``[d_mlp, d_model]`` and the norms; then ``embed.W_E`` ``[d_vocab, d_model]``,
    ``pos_embed.W_pos`` ``[n_ctx, d_model]`` (not with rotary positions), ``ln_final`` and
    ``unembed.W_U`` ``[d_model, d_vocab_out]`` with ``b_U``. Mixture-of-experts, 4-bit and OLMo-style
    full-width Q/K norms are not covered (ValueError).
    """
    for fld, what in _UNSUPPORTED.items():
        if getattr(cfg, fld, None):
            raise ValueError(f"A memory plan does not cover {what} ({fld}={getattr(cfg, fld)!r}).")
    if str(cfg.original_architecture or "").startswith("Olmo"):
        raise ValueError(f"A memory plan does not cover {cfg.original_architecture}'s full-width Q/K norms.")
    d, h, dh, norm = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.normalization_type
    kv, g = (cfg.n_key_value_heads, "_") if cfg.n_key_value_heads is not None else (h, "")
    after = "RMS" if str(norm).startswith("RMS") else norm  # the norms after a sublayer keep their weights
    out: dict[str, tuple[int, ...]] = {"embed.W_E": (cfg.d_vocab, d)}
    if cfg.positional_embedding_type != "rotary":
        out["pos_embed.W_pos"] = (cfg.n_ctx, d)
    for l in range(cfg.n_layers):
        b = f"blocks.{l}."
        sublayers = ["ln1"] if cfg.attn_only else ["ln1", "ln2"]
        for ln in sublayers:
            out |= {f"{b}{ln}.{k}": s for k, s in _norm(norm, d).items()}
            if cfg.use_normalization_before_and_after:
                out |= {f"{b}{ln}_post.{k}": s for k, s in _norm(after, d).items()}
        out |= {
            f"{b}attn.W_Q": (h, d, dh),
            f"{b}attn.W_O": (h, dh, d),
            f"{b}attn.b_Q": (h, dh),
            f"{b}attn.b_O": (d,),
            f"{b}attn.{g}W_K": (kv, d, dh),
            f"{b}attn.{g}W_V": (kv, d, dh),
            f"{b}attn.{g}b_K": (kv, dh),
            f"{b}attn.{g}b_V": (kv, dh),
        }
        if cfg.use_qk_norm:
            out |= {f"{b}attn.q_norm.w": (dh,), f"{b}attn.k_norm.w": (dh,)}
        if cfg.use_attention_sinks:
            out[f"{b}attn.sinks"] = (h,)
        if not cfg.attn_only:
            m = cfg.d_mlp
            out |= {f"{b}mlp.W_in": (d, m), f"{b}mlp.b_in": (m,)}
            if cfg.gated_mlp:
                out[f"{b}mlp.W_gate"] = (d, m)
            out |= {f"{b}mlp.W_out": (m, d), f"{b}mlp.b_out": (d,)}
            if cfg.is_layer_norm_activation() and norm == "LN":
                out |= {f"{b}mlp.ln.{k}": s for k, s in _norm("LN", m).items()}
    final = "RMS" if norm == "LN" and cfg.final_rms else norm
    out |= {f"ln_final.{k}": s for k, s in _norm(final, d).items()}
    out |= {"unembed.W_U": (d, cfg.d_vocab_out), "unembed.b_U": (cfg.d_vocab_out,)}
    return out


_BLOCK_WEIGHT = re.compile(r"^blocks\.\d+\.(attn|mlp)\._?W_[A-Za-z]+$")


def n_parameters(cfg: HookedTransformerConfig, kinds: Sequence[str] | None = None) -> int:
    """Parameters of the model (``kinds=None``), or only of the blocks' ``W_*`` matrices of ``kinds``
    (``("attn", "mlp")``: the weights a compression plan rewrites, no biases or norms)."""
    shapes = parameter_shapes(cfg)
    if kinds is not None:
        shapes = {k: s for k, s in shapes.items() if (m := _BLOCK_WEIGHT.match(k)) and m.group(1) in kinds}
    return sum(math.prod(s) for s in shapes.values())


def parameters(
    cfg: HookedTransformerConfig,
    object: str = "model parameters (embed, blocks, unembed)",
    count: int = 1,
    phase: str | tuple[str, ...] = THROUGHOUT,
    where: str = DEVICE,
    kinds: Sequence[str] | None = None,
    dtype: str | torch.dtype | None = None,
    note: str = "",
) -> MemoryRow:
    """The model's parameters (:func:`n_parameters`) in its dtype, as one ``[n_params]`` row."""
    n = n_parameters(cfg, kinds)
    return MemoryRow(object, (n,), dtype_name(dtype or cfg.dtype), count, phase, where, note)


def loading(cfg: HookedTransformerConfig) -> MemoryRow:
    """Host memory while a checkpoint is converted: transformers' model and TransformerLens's state dict."""
    return parameters(
        cfg,
        "transformers checkpoint + converted state dict",
        count=2,
        phase="loading",
        where=HOST,
        note="from_pretrained builds the transformers model in host RAM, then converts its state dict",
    )


def forward_pass(
    cfg: HookedTransformerConfig, batch: int, pos: int, phase: str, logits: bool = True, where: str = DEVICE
) -> list[MemoryRow]:
    """The largest tensors of one inference forward pass over ``[batch, pos]`` tokens.

    The residual stream ``[batch, pos, d_model]`` (3: stream, normalised input, sublayer output);
    one layer's attention scores and pattern ``[batch, n_heads, pos, pos]`` (2); its MLP hidden
    ``[batch, pos, d_mlp]`` (hook_pre, hook_post, and the gate's when gated: 2 or 3); and the logits
    ``[batch, pos, d_vocab]`` in float32 with their log-softmax (2).
    """
    dt = dtype_name(cfg.dtype)
    rows = [
        MemoryRow(
            "residual stream (hook_resid_pre, normalised, sublayer out)", (batch, pos, cfg.d_model), dt, 3, phase, where
        ),
        MemoryRow("attention scores + pattern, one layer", (batch, cfg.n_heads, pos, pos), dt, 2, phase, where),
    ]
    if not cfg.attn_only:
        hidden = 3 if cfg.gated_mlp else 2
        rows.append(MemoryRow("MLP hook_pre/hook_post, one layer", (batch, pos, cfg.d_mlp), dt, hidden, phase, where))
    if logits:
        rows.append(MemoryRow("logits + log-probs", (batch, pos, cfg.d_vocab_out), "float32", 2, phase, where))
    return rows


def backward_pass(
    cfg: HookedTransformerConfig, batch: int, pos: int, phase: str, where: str = DEVICE
) -> list[MemoryRow]:
    """The activations autograd keeps for one backward pass over ``[batch, pos]`` tokens.

    Per block and token about ``8 d_model`` values (hook_resid_pre, ln1 output, q, k, v, z, attention
    output, ln2 output) plus the MLP's ``2 d_mlp`` (``3 d_mlp`` gated); per block the attention
    scores and pattern ``[batch, n_heads, pos, pos]``; and the logits, their log-softmax and their
    gradient in float32 (3). An estimate: recomputation and fused kernels lower it.
    """
    dt = dtype_name(cfg.dtype)
    mlp = 0 if cfg.attn_only else (3 if cfg.gated_mlp else 2) * cfg.d_mlp
    per_token = 8 * cfg.d_model + mlp
    L = cfg.n_layers
    return [
        MemoryRow(
            "activations saved for backward, every block",
            (L, batch, pos, per_token),
            dt,
            1,
            phase,
            where,
            "per token and block: 8 d_model + (2 or 3) d_mlp",
        ),
        MemoryRow(
            "attention scores + pattern saved, every block", (L, batch, cfg.n_heads, pos, pos), dt, 2, phase, where
        ),
        MemoryRow("logits, log-probs and their gradient", (batch, pos, cfg.d_vocab_out), "float32", 3, phase, where),
    ]


def gram(
    object: str,
    d: int,
    count: int,
    phase: str | tuple[str, ...],
    where: str = DEVICE,
    dtype: str = "float64",
    note: str = "",
) -> MemoryRow:
    """``count`` second-moment matrices ``XᵀX`` ``[d, d]`` (float64 by default: ``d² x 8`` bytes each)."""
    return MemoryRow(object, (d, d), dtype, count, phase, where, note or f"[{d}, {d}] x {DTYPE_BYTES[dtype]} B each")


def sae_training(
    d_in: int,
    d_sae: int,
    count: int,
    phase: str,
    where: str = DEVICE,
    params_phase: str | tuple[str, ...] | None = None,
) -> list[MemoryRow]:
    """``count`` SAEs in training: ``W_enc`` ``[d_in, d_sae]`` and ``W_dec`` ``[d_sae, d_in]`` (biases
    are smaller) in float32, their gradients (same size) and AdamW's two moments (twice the size).
    ``params_phase`` (default ``phase``): when the weights stay after training, e.g. :data:`THROUGHOUT`."""
    return [
        MemoryRow("SAE W_enc + W_dec", (2, d_in, d_sae), "float32", count, params_phase or phase, where),
        MemoryRow("SAE gradients", (2, d_in, d_sae), "float32", count, phase, where),
        MemoryRow("AdamW exp_avg + exp_avg_sq", (2, 2, d_in, d_sae), "float32", count, phase, where, "2 x params"),
    ]


# ---- showing a plan and judging it ----


def frame(plan: MemoryPlan):
    """The plan as a table: one row per object, then the peak on the device and on the host."""
    import pandas as pd

    rows = [
        {
            "phase": " + ".join(r.phases),
            "object": r.object,
            "where": r.where,
            "shape": "[" + ", ".join(f"{n:,}" for n in r.shape) + "]" + (f" x {r.count}" if r.count != 1 else ""),
            "dtype": r.dtype,
            "size": human(r.bytes),
            "bytes": r.bytes,
            "note": r.note,
        }
        for r in plan.rows
    ]
    for where in (DEVICE, HOST):
        phase = plan.peak_phase(where)
        peak = plan.peak(where)
        rows.append(
            {
                "phase": phase,
                "object": f"peak on the {where}",
                "where": where,
                "shape": "",
                "dtype": "",
                "size": human(peak),
                "bytes": peak,
                "note": f"rows held {THROUGHOUT} + the rows of {phase!r}" if phase != THROUGHOUT else "",
            }
        )
    return pd.DataFrame(rows).rename_axis(f"{plan.study} on {plan.model}")


def fits(plan: MemoryPlan, device_bytes: int) -> bool:
    """Whether the plan's device peak fits in ``device_bytes``."""
    if device_bytes is None or device_bytes <= 0:
        raise ValueError(f"device_bytes must be a positive byte count, got {device_bytes!r}.")
    return plan.peak(DEVICE) <= device_bytes


def devices_needed(plan: MemoryPlan, device_bytes: int) -> int:
    """``k = ceil(device peak / device_bytes)``: the fewest devices the peak could spread over."""
    fits(plan, device_bytes)  # validates device_bytes
    return max(1, math.ceil(plan.peak(DEVICE) / device_bytes))


def device_bytes(device: str = "cuda") -> int | None:
    """Total memory of ``device`` (a CUDA device, e.g. ``"cuda"`` or ``"cuda:1"``); None without one."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    index = torch.device(device).index or 0
    return int(torch.cuda.get_device_properties(index).total_memory)


def host_bytes() -> int | None:
    """This machine's RAM (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def rule(plan: MemoryPlan, device: int | None, host: int | None = None) -> str:
    """What the plan means on a device of ``device`` bytes (None: no device) and a host of ``host``
    bytes: the peaks, whether the device peak fits, else over how many devices ``k``
    (:func:`devices_needed`), and :data:`RULE`, what the code base does past one device."""
    peak, phase = plan.peak(DEVICE), plan.peak_phase(DEVICE)
    lines = [f"{plan.study} on {plan.model}: device peak {human(peak)} (phase {phase!r})."]
    if device is None:
        lines.append("No CUDA device is visible, so whether it fits one device is not checked.")
    elif fits(plan, device):
        lines.append(f"Fits one device of {human(device)} ({peak / device:.0%} of it).")
    else:
        k = devices_needed(plan, device)
        lines.append(f"Does not fit one device of {human(device)}: spread it over k = {k} devices (rule below).")
    hp, hphase = plan.peak(HOST), plan.peak_phase(HOST)
    lines.append(f"Host peak {human(hp)} (phase {hphase!r})" + (f" of {human(host)} RAM." if host else "."))
    if host and hp > host:
        lines.append("That exceeds this machine's RAM: lower the sizes behind the host rows above.")
    lines.append(f"Rule: {RULE}")
    return "\n".join(lines)


def rows_of(rows: Iterable[MemoryRow | Iterable[MemoryRow]]) -> tuple[MemoryRow, ...]:
    """Rows and (nested) lists of rows, flattened in order (what the study plans build)."""
    out: list[MemoryRow] = []
    for r in rows:
        out += [r] if isinstance(r, MemoryRow) else rows_of(r)
    return tuple(out)
