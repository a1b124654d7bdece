"""Running one transformer block for a batch of restorations that share a corrupted prefix.

A restoration at position ``p`` changes nothing before ``p`` (attention is causal), so the
engine recomputes only positions ``p..end`` and reads the earlier positions' keys and values
from the corrupted run, handed over as a :class:`Prefix`. Two block runners do that.
:class:`TLBlocks` calls TransformerLens's own block with a frozen key-value cache entry and
patches through hooks, so it works for any architecture TransformerLens supports.
:class:`FastBlocks` re-expresses the common pre-norm block (GPT-2, Llama, Mistral, Qwen2 shapes)
so that work shared by every row is done once; it is used only where it reproduces
TransformerLens's block (:meth:`FastBlocks.agrees`, checked when it is built), and
:func:`block_runner` picks between them.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.components import MLP, GatedMLP

from analysis.hooks import act_name
from analysis.models import weights_version


@dataclass(frozen=True, eq=False)
class Prefix:
    """The corrupted run's keys and values (``hook_k``, ``hook_v``) at every layer: what a
    restoration at position ``p`` reads for the positions before ``p``. Compared by identity."""

    keys: tuple[Float[Tensor, "sample pos kv_head d_head"], ...]
    """Per layer, before any rotary embedding."""
    values: tuple[Float[Tensor, "sample pos kv_head d_head"], ...]
    n_samples: int
    """Corrupted samples (rows of each layer's keys); a batch's rows are site-major, sample-minor."""


Patches = dict[str, tuple[Tensor, Tensor]]
"""hook name -> (rows to patch, clean value [d_model]) for one layer; position 0 of the suffix."""


def patch_rows(rows: Tensor, value: Tensor):
    """A hook that writes ``value`` at suffix position 0 of ``rows``."""

    def hook(act: Tensor, hook=None) -> Tensor:  # act: [rows, suffix, d_model]
        act[rows, 0] = value
        return act

    return hook


class TLBlocks:
    """Runs TransformerLens's own blocks, patching through hooks (any architecture)."""

    fast = False

    def __init__(self, model: HookedTransformer):
        self.model = model

    def block(
        self, j: int, resid: Tensor, prefix: Prefix, p: int, sample: Tensor, patches: Patches, last: bool
    ) -> Float[Tensor, "row suffix d_model"]:
        """Block ``j`` on ``resid`` (positions ``p..``), with the corrupted prefix as its KV cache
        (row ``r`` reads noise sample ``sample[r]``)."""
        entry = None
        if p > 0:
            entry = TransformerLensKeyValueCacheEntry(
                past_keys=prefix.keys[j][sample, :p],
                past_values=prefix.values[j][sample, :p],
                frozen=True,
            )
        fwd = [(act_name(h, j), patch_rows(rows, value)) for h, (rows, value) in patches.items()]
        with self.model.hooks(fwd_hooks=fwd):
            return self.model.blocks[j](resid, past_kv_cache_entry=entry)


FAST_ARCHITECTURES = (None, "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "GPT2LMHeadModel")
"""``cfg.original_architecture`` values whose block :class:`FastBlocks` re-expresses."""


class FastBlocks(TLBlocks):
    """The same pre-norm block, re-expressed for batches of restorations that share a prefix.

    Differences from TransformerLens's block, none of them numerical beyond float rounding:
    the normalization before attention is computed once (not once each for Q, K and V); Q, K
    and V come from one fused matrix; the corrupted prefix's keys and values are rotated once
    and shared by every row of the same noise sample instead of being copied per row; and at
    the last layer only the last position is computed.
    """

    fast = True

    @staticmethod
    def supports(model: HookedTransformer) -> bool:
        """Whether the model's configuration is one this block reproduces."""

        c = model.cfg
        flags_ok = (
            c.original_architecture in FAST_ARCHITECTURES
            and c.normalization_type in ("LN", "LNPre", "RMS", "RMSPre")
            and c.positional_embedding_type in ("standard", "rotary")
            and c.attention_dir == "causal"
            and not c.parallel_attn_mlp
            and not c.use_normalization_before_and_after
            and not c.use_attn_in
            and not c.use_split_qkv_input
            and not c.use_qk_norm
            and c.clip_qkv is None
            and not c.use_logn_attn
            and not c.use_local_attn
            and not c.use_dynamic_ntk_rope
            and not c.use_attention_sinks
            and (c.attn_scores_soft_cap is None or c.attn_scores_soft_cap <= 0)
            and c.num_experts is None
            and not c.load_in_4bit
            and not c.is_layer_norm_activation()
            and (c.attn_types is None or all(t == "global" for t in c.attn_types))
        )
        return flags_ok and (c.attn_only or all(type(b.mlp) in (GatedMLP, MLP) for b in model.blocks))

    def __init__(self, model: HookedTransformer):
        super().__init__(model)
        c = model.cfg
        self.H, self.dh = c.n_heads, c.d_head
        self.Hk = c.n_key_value_heads if c.n_key_value_heads is not None else c.n_heads
        self.rotary = c.positional_embedding_type == "rotary"
        # rotated keys per live Prefix (rotated_keys), dropped with the prefix
        self.rotated: weakref.WeakKeyDictionary[Prefix, tuple[Tensor, ...]] = weakref.WeakKeyDictionary()
        self.wqkv, self.bqkv, self.w_up = [], [], []
        with torch.no_grad():
            for b in model.blocks:
                if getattr(b, "mlp", None) is not None and hasattr(b.mlp, "W_gate"):
                    self.w_up.append(torch.cat([b.mlp.W_gate, b.mlp.W_in], dim=1).contiguous())
                else:
                    self.w_up.append(None)
                a = b.attn
                # grouped-query attention stores K and V once per KV head, in _W_K/_W_V
                wk = a._W_K if hasattr(a, "_W_K") else a.W_K
                wv = a._W_V if hasattr(a, "_W_V") else a.W_V
                bk = a._b_K if hasattr(a, "_b_K") else a.b_K
                bv = a._b_V if hasattr(a, "_b_V") else a.b_V
                w = torch.cat([x.permute(0, 2, 1).reshape(-1, c.d_model) for x in (a.W_Q, wk, wv)])
                self.wqkv.append(w.contiguous())  # [(H + 2 Hk) d_head, d_model]
                self.bqkv.append(torch.cat([a.b_Q.reshape(-1), bk.reshape(-1), bv.reshape(-1)]))

    def rotated_keys(self, prefix: Prefix) -> tuple[Tensor, ...]:
        """The prefix's keys after the rotary embedding (positions 0..T-1), per layer: computed
        once per prefix and kept while the prefix lives (the keys themselves without rotary)."""
        if not self.rotary:
            return prefix.keys
        rotated = self.rotated.get(prefix)
        if rotated is None:
            with torch.no_grad():
                rotated = tuple(blk.attn.apply_rotary(k, 0, None) for blk, k in zip(self.model.blocks, prefix.keys))
            self.rotated[prefix] = rotated
        return rotated

    def block(
        self,
        j: int,
        resid: Tensor,
        prefix: Prefix | None,
        p: int,
        sample: Tensor | None,
        patches: Patches,
        last: bool,
        record: dict[str, Tensor] | None = None,
    ) -> Float[Tensor, "row suffix d_model"]:
        """Block ``j`` on ``resid`` (positions ``p..``), patching position ``p`` of some rows.

        ``prefix`` may be None only when ``p == 0`` (nothing cached; one sample per row).
        ``record``, when given, receives the block's ``hook_resid_pre``, ``hook_attn_out``,
        ``hook_mlp_out`` and ``hook_resid_post`` (only the last position when ``last``).
        """
        blk = self.model.blocks[j]
        a = blk.attn
        R, t, _ = resid.shape
        S = prefix.n_samples if prefix is not None else 1
        n = R // S
        if record is not None:
            record["hook_resid_pre"] = resid
        H, Hk, dh = self.H, self.Hk, self.dh
        rep = H // Hk
        h = blk.ln1(resid)
        qkv = torch.nn.functional.linear(h, self.wqkv[j], self.bqkv[j])
        q, k, v = qkv.split([H * dh, Hk * dh, Hk * dh], dim=-1)
        q, k, v = q.reshape(R, t, H, dh), k.reshape(R, t, Hk, dh), v.reshape(R, t, Hk, dh)
        if self.rotary:
            q = a.apply_rotary(q, p, None)
            k = a.apply_rotary(k, p, None)
        if last:
            q, tq = q[:, -1:], 1
        else:
            tq = t
        # rows are site-major, sample-minor: [n, S, ...]; GQA query head = kv_head * rep + r
        q = q.reshape(n, S, tq, Hk, rep, dh)
        k = k.reshape(n, S, t, Hk, dh)
        v = v.reshape(n, S, t, Hk, dh)
        scale = float(a.attn_scale)
        s_new = torch.einsum("nsqhrd,nskhd->nshrqk", q, k) / scale
        causal = torch.ones(t, t, dtype=torch.bool, device=resid.device).tril()[t - tq :]
        s_new = s_new.masked_fill(~causal, float("-inf"))
        if p > 0:
            kp, vp = self.rotated_keys(prefix)[j][:, :p], prefix.values[j][:, :p]  # [S, p, Hk, dh]
            s_pre = torch.einsum("nsqhrd,skhd->nshrqk", q, kp) / scale
            pattern = torch.softmax(torch.cat([s_pre, s_new], dim=-1).float(), dim=-1).to(v.dtype)
            z = torch.einsum("nshrqk,skhd->nsqhrd", pattern[..., :p], vp) + torch.einsum(
                "nshrqk,nskhd->nsqhrd", pattern[..., p:], v
            )
        else:
            pattern = torch.softmax(s_new.float(), dim=-1).to(v.dtype)
            z = torch.einsum("nshrqk,nskhd->nsqhrd", pattern, v)
        z = z.reshape(R, tq, H * dh)
        w_o = a.W_O.reshape(H * dh, -1)
        attn_out = torch.addmm(a.b_O, z.reshape(-1, H * dh), w_o).reshape(R, tq, -1)
        if last:
            resid = resid[:, -1:]
        patch_here = not (last and t > 1)  # at the last layer only the last position is computed
        if "hook_attn_out" in patches and patch_here:
            rows, value = patches["hook_attn_out"]
            attn_out[rows, 0] = value
        mid = resid + attn_out
        if not self.model.cfg.attn_only:
            mlp_out = self.mlp(j, blk.ln2(mid))
            if "hook_mlp_out" in patches and patch_here:
                rows, value = patches["hook_mlp_out"]
                mlp_out[rows, 0] = value
            mid = mid + mlp_out
        if "hook_resid_post" in patches and patch_here:
            rows, value = patches["hook_resid_post"]
            mid[rows, 0] = value
        if record is not None:
            record["hook_attn_out"] = attn_out
            if not self.model.cfg.attn_only:
                record["hook_mlp_out"] = mlp_out
            record["hook_resid_post"] = mid
        return mid

    def mlp(self, j: int, x: Float[Tensor, "row pos d_model"]) -> Float[Tensor, "row pos d_model"]:
        """TransformerLens's MLP / GatedMLP without re-copying the weights on every call."""
        mlp = self.model.blocks[j].mlp
        flat = x.reshape(-1, x.shape[-1])
        if self.w_up[j] is not None:
            gate, lin = (flat @ self.w_up[j]).chunk(2, dim=-1)
            post = mlp.act_fn(gate) * lin + mlp.b_in
        else:
            post = mlp.act_fn(torch.addmm(mlp.b_in, flat, mlp.W_in))
        return torch.addmm(mlp.b_out, post, mlp.W_out).reshape(*x.shape[:-1], -1)

    def agrees(self, atol: float = 1e-4) -> bool:
        """Whether the first and last blocks give TransformerLens's output on a random input with
        a random prefix (2 samples x 2 rows, 3 new positions after 2 cached ones)."""
        c = self.model.cfg
        gen = torch.Generator().manual_seed(0)
        dev, dtype = c.device, c.dtype
        x = torch.randn(4, 3, c.d_model, generator=gen).to(dev, dtype)
        for j in (0, c.n_layers - 1):
            k = torch.randn(2, 2, self.Hk, self.dh, generator=gen).to(dev, dtype)
            v = torch.randn(2, 2, self.Hk, self.dh, generator=gen).to(dev, dtype)
            prefix = Prefix((k,) * c.n_layers, (v,) * c.n_layers, n_samples=2)
            sample = torch.arange(2, device=dev).repeat(2)
            with torch.no_grad():
                ref = TLBlocks.block(self, j, x, prefix, 2, sample, {}, False)
                out = self.block(j, x, prefix, 2, sample, {}, False)
            if not torch.allclose(out, ref, atol=atol * max(1.0, float(ref.abs().max()))):
                return False
        return True


def block_runner(model: HookedTransformer, fast: bool | None = None) -> TLBlocks:
    """The block runner for a model: the fast one where it reproduces the model, else TL's.

    ``fast=None`` picks the fast runner wherever it is supported, ``False`` forces
    TransformerLens's blocks. The fast runner keeps fused copies of some weights; it is rebuilt
    whenever a parameter of the model has been replaced or modified in place since (e.g. by a
    compression experiment).
    """
    cache = model.__dict__.setdefault("_tracing_block_runners", {})
    use_fast = bool(FastBlocks.supports(model) if fast is None else fast and FastBlocks.supports(model))
    version = weights_version(model) if use_fast else None
    if use_fast not in cache or cache[use_fast][0] != version:
        runner = FastBlocks(model) if use_fast else TLBlocks(model)
        if use_fast and not runner.agrees():
            warnings.warn(
                f"The fast tracing engine does not reproduce {model.cfg.model_name}'s "
                "blocks; using TransformerLens's own blocks (slower, same numbers)."
            )
            runner = TLBlocks(model)
        cache[use_fast] = (version, runner)
    return cache[use_fast][1]
