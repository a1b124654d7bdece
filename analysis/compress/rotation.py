"""Rotation before quantization (QuaRot style), and why factoring before quantizing amplifies error.

Round-to-nearest (RTN) quantization is hurt by outliers: one large weight or activation channel
stretches a group's scale, so the other values get few levels. QuaRot (Ashkboos et al. 2024) removes
outliers without changing the function:

1. **fold** each RMSNorm's weight ``w`` into the linear layers that read it (``W <- diag(w) W``
   for Q/K/V after ``ln1``, the MLP's input and gate after ``ln2``, the unembedding after
   ``ln_final``), leaving a norm without parameters, which commutes with any orthogonal ``Q``:
   ``RMSNorm(x Q) = RMSNorm(x) Q``;
2. **rotate** the residual stream by an orthogonal ``Q``: every weight that writes the stream
   (embedding, ``W_O``, ``W_out`` and their biases) is multiplied by ``Q`` on the right, every weight
   that reads it (Q/K/V, ``W_in``, ``W_gate``, ``W_U``) by ``Q^T`` on the left. The logits are unchanged;
3. **quantize** the rotated weights by RTN.

A *randomized Hadamard* ``Q = H diag(s) / sqrt(d)`` (``H`` a ``±1`` Hadamard matrix, ``s`` random
signs) spreads every outlier over all coordinates. Hadamard matrices exist only for orders 1, 2 and
multiples of 4; :func:`hadamard` builds ``H_m ⊗ H_{2^k}`` from Sylvester's doubling and Paley's
constructions (``m = q + 1`` for a prime ``q ≡ 3 mod 4``, ``m = 2(q + 1)`` for a prime ``q ≡ 1 mod
4``), which covers SmolLM2's ``576 = 36 · 16`` (Paley II, ``q = 17``) and ``1536 = 12 · 128``
(Paley I, ``q = 11``). Only the residual stream is rotated here (QuaRot also rotates inside the
attention and MLP, which needs online Hadamards at run time).

**Factor, then quantize** (:func:`factor_quantize`) stores ``W ~ A B`` with balanced factors
``A = U sqrt(S)``, ``B = sqrt(S) V^T`` and quantizes each. Quantization noise in a factor is
multiplied by the other factor, so the product's relative error exceeds the factors' own:
:func:`amplification` measures that ratio, and the direct RTN error at the same bits beside it.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.components import ATTN_WEIGHTS, MLP_WEIGHTS, parameter_name
from analysis.compress.linear import from_linear, to_linear
from analysis.compress.plan import SCALE_BITS, Stored
from analysis.compress.quantize import Quantize


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % p for p in range(2, int(q**0.5) + 1))


def _jacobsthal(q: int) -> Tensor:
    """``Q[i, j] = chi(j - i)`` with ``chi`` the quadratic character mod prime ``q``."""
    squares = {(x * x) % q for x in range(1, q)}
    chi = torch.tensor([0] + [1 if a in squares else -1 for a in range(1, q)], dtype=torch.float64)
    idx = (torch.arange(q)[None, :] - torch.arange(q)[:, None]) % q
    return chi[idx]


def _paley(m: int) -> Tensor | None:
    """A Hadamard matrix of order ``m`` by Paley I or II, or None if neither applies."""
    q = m - 1
    if q % 4 == 3 and _is_prime(q):  # Paley I: H = I + S, S skew with S S^T = q I
        s = torch.zeros(m, m, dtype=torch.float64)
        s[0, 1:], s[1:, 0], s[1:, 1:] = 1.0, -1.0, _jacobsthal(q)
        return torch.eye(m, dtype=torch.float64) + s
    if m % 2 == 0:
        q = m // 2 - 1
        if q % 4 == 1 and _is_prime(q):  # Paley II: from the symmetric conference matrix C
            c = torch.zeros(q + 1, q + 1, dtype=torch.float64)
            c[0, 1:], c[1:, 0], c[1:, 1:] = 1.0, 1.0, _jacobsthal(q)
            a = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
            b = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
            return torch.kron(c, a) + torch.kron(torch.eye(q + 1, dtype=torch.float64), b)
    return None


def hadamard(n: int) -> Float[Tensor, "n n"]:
    """A ``±1`` matrix ``H`` of order ``n`` with ``H H^T = n I`` (float64); ValueError where this
    constructor has none (every order that is not 1, 2 or a multiple of 4 has none at all)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"A Hadamard matrix needs a positive integer order, got {n!r}.")
    k = (n & -n).bit_length() - 1  # the power of 2 in n
    for j in range(k, -1, -1):
        m = n >> j
        base = torch.ones(1, 1, dtype=torch.float64) if m == 1 else _paley(m)
        if m == 2:
            base = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        if base is None:
            continue
        h = base
        for _ in range(j):
            h = torch.kron(h, torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64))
        return h
    raise ValueError(
        f"No Hadamard matrix of order {n} from Sylvester x Paley (orders 1, 2, or 2^k * m with m = q + 1, "
        f"q prime ≡ 3 mod 4, or m = 2(q + 1), q prime ≡ 1 mod 4). Rotate with a random orthogonal "
        "matrix instead (random_orthogonal), or pad the dimension to such an order."
    )


def random_hadamard(n: int, seed: int = 0) -> Float[Tensor, "n n"]:
    """The orthogonal ``H diag(s) / sqrt(n)`` with random signs ``s`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
    return hadamard(n) * signs[None, :] / n**0.5


def random_orthogonal(n: int, seed: int = 0) -> Float[Tensor, "n n"]:
    """A Haar-random orthogonal matrix (QR of a Gaussian, signs fixed), float64."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q * torch.sign(r.diagonal())[None, :]


def _check_rms(model) -> None:
    if model.cfg.normalization_type not in ("RMS", "RMSPre"):
        raise ValueError(
            f"Rotation needs RMSNorm (it commutes with rotations once its weight is folded); this model uses "
            f"{model.cfg.normalization_type!r}. A LayerNorm model must first have its mean subtraction folded "
            "into the weights (TransformerLens center_writing_weights) and be converted to RMSNorm."
        )
    if model.cfg.positional_embedding_type == "standard":
        raise ValueError("Rotation here supports rotary positions; this model adds learned positions (W_pos).")


@torch.no_grad()
def fold_norms(model: HookedTransformer) -> None:
    """Fold every RMSNorm weight into the linear layers that read its output, in place (see module docs)."""
    _check_rms(model)
    params = dict(model.named_parameters())
    for l, block in enumerate(model.blocks):
        if model.cfg.normalization_type == "RMS":
            w1, w2 = block.ln1.w.detach().clone(), block.ln2.w.detach().clone()
            for kind in ("W_Q", "W_K", "W_V"):
                p = params[parameter_name(model, f"blocks.{l}.attn.{kind}", params)]
                p.mul_(w1.to(p.dtype)[None, :, None])
            for kind in ("W_in", "W_gate"):
                name = f"blocks.{l}.mlp.{kind}"
                if name in params:
                    params[name].mul_(w2.to(params[name].dtype)[:, None])
            block.ln1.w.fill_(1.0)
            block.ln2.w.fill_(1.0)
    if model.cfg.normalization_type == "RMS" and hasattr(model.ln_final, "w"):
        model.unembed.W_U.mul_(model.ln_final.w.detach().to(model.unembed.W_U.dtype)[:, None])
        model.ln_final.w.fill_(1.0)


@torch.no_grad()
def rotate(model: HookedTransformer, q: Float[Tensor, "d d"]) -> None:
    """Rotate the residual stream by orthogonal ``q`` in place (norm weights must be folded first)."""
    _check_rms(model)
    d = model.cfg.d_model
    if q.shape != (d, d):
        raise ValueError(f"The rotation must be [d_model, d_model] = [{d}, {d}], got {tuple(q.shape)}.")
    for norm in [b.ln1 for b in model.blocks] + [b.ln2 for b in model.blocks] + [model.ln_final]:
        if hasattr(norm, "w") and not torch.all(norm.w == 1):
            raise ValueError("Fold the norm weights first (fold_norms(model)); a weighted RMSNorm does not commute.")
    params = dict(model.named_parameters())
    qf = q.to(model.unembed.W_U.dtype).to(model.unembed.W_U.device)
    model.embed.W_E.copy_(model.embed.W_E @ qf)
    for l in range(model.cfg.n_layers):
        for kind in ("W_Q", "W_K", "W_V"):
            p = params[parameter_name(model, f"blocks.{l}.attn.{kind}", params)]  # [head, d_model, d_head]
            p.copy_(torch.einsum("ed,hdk->hek", qf.T, p))
        o = params[f"blocks.{l}.attn.W_O"]  # [head, d_head, d_model]
        o.copy_(o @ qf)
        params[f"blocks.{l}.attn.b_O"].copy_(params[f"blocks.{l}.attn.b_O"] @ qf)
        for kind in ("W_in", "W_gate"):
            name = f"blocks.{l}.mlp.{kind}"
            if name in params:
                params[name].copy_(qf.T @ params[name])
        params[f"blocks.{l}.mlp.W_out"].copy_(params[f"blocks.{l}.mlp.W_out"] @ qf)
        params[f"blocks.{l}.mlp.b_out"].copy_(params[f"blocks.{l}.mlp.b_out"] @ qf)
    model.unembed.W_U.copy_(qf.T @ model.unembed.W_U)


def rotated_copy(model: HookedTransformer, seed: int = 0, q: Tensor | None = None):
    """A deep copy of ``model`` with norms folded and the residual stream rotated by ``q``
    (default: :func:`random_hadamard` of ``d_model``); ``model`` is untouched."""
    _check_rms(model)
    q = random_hadamard(model.cfg.d_model, seed) if q is None else q
    out = copy.deepcopy(model)
    fold_norms(out)
    rotate(out, q)
    return out


def block_weights(model: HookedTransformer, layers: Sequence[int] | None = None) -> list[str]:
    """The names of every linear weight inside the blocks (Q, K, V, O, the MLP's), as TransformerLens
    names them; ``layers`` limits them to those blocks."""
    params = dict(model.named_parameters())
    out = []
    for l in range(model.cfg.n_layers) if layers is None else layers:
        for kind, names in (("attn", ATTN_WEIGHTS), ("mlp", MLP_WEIGHTS)):
            for w in names:
                try:
                    out.append(parameter_name(model, f"blocks.{l}.{kind}.{w}", params))
                except KeyError:
                    continue
    return out


def rtn(w: Float[Tensor, "d_in d_out"], bits: int) -> Stored:
    """Symmetric per-output-channel RTN of a linear view at ``bits`` bits (:class:`~analysis.compress.Quantize`)."""
    return Quantize(bits)(Stored(weight=w, value_bits=32, n_values=w.numel()))


@torch.no_grad()
def quantize_blocks(
    model: HookedTransformer,
    bits: int,
    rank: int | None = None,
    factor_cache: dict | None = None,
    layers: Sequence[int] | None = None,
) -> dict[str, float]:
    """RTN of every block weight in place: directly (``rank=None``), or as balanced SVD factors at the
    break-even rank (as many stored values as the dense weight) when ``rank == 0``, or at ``rank``.
    ``factor_cache`` (a dict) keeps each weight's factors across calls with different ``bits``;
    ``layers`` limits the quantization to those blocks (default: all).
    Returns ``{"bits": total stored bits, "params": original weight count}``."""
    params = dict(model.named_parameters())
    total_bits = n_params = 0
    for name in block_weights(model, layers):
        p = params[name]
        lin = to_linear(name, p.detach()).float()
        d_in, d_out = lin.shape
        n_params += lin.numel()
        if rank is None:
            stored = rtn(lin, bits)
            new, total_bits = stored.weight, total_bits + stored.bits
        else:
            r = min(rank or (d_in * d_out) // (d_in + d_out), d_in, d_out)
            key = (name, r)
            if factor_cache is not None and key not in factor_cache:
                factor_cache[key] = balanced_factors(lin, r)
            new, fbits = factor_quantize(lin, r, bits, None if factor_cache is None else factor_cache[key])
            total_bits += fbits
        p.copy_(from_linear(name, new.to(p.dtype), p))
    return {"bits": float(total_bits), "params": float(n_params)}


def balanced_factors(w: Float[Tensor, "d_in d_out"], rank: int) -> tuple[Tensor, Tensor]:
    """``A = U_r sqrt(S_r)`` ``[d_in, r]`` and ``B = sqrt(S_r) V_r^T`` ``[r, d_out]``."""
    if not isinstance(rank, int) or not 1 <= rank <= min(w.shape):
        raise ValueError(f"rank must be an integer in [1, {min(w.shape)}], got {rank!r}.")
    u, s, vh = torch.linalg.svd(w.float(), full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def factor_quantize(
    w: Float[Tensor, "d_in d_out"], rank: int, bits: int, factors: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, int]:
    """``Q(A) @ Q(B)`` for balanced rank-``rank`` factors (given, or computed) at ``bits``, and its stored bits."""
    a, b = balanced_factors(w, rank) if factors is None else factors
    qa, qb = rtn(a, bits), rtn(b.T.contiguous(), bits)  # B's channels are its rows: quantize B^T per column
    return qa.weight @ qb.weight.T, qa.bits + qb.bits


def amplification(
    w: Float[Tensor, "d_in d_out"], rank: int, bits: int, factors: tuple[Tensor, Tensor] | None = None
) -> dict[str, float]:
    """Relative Frobenius errors of direct RTN, of each quantized factor and of their product
    (``factors``: :func:`balanced_factors` of ``w`` at ``rank``, when already computed).

    - ``"direct"``: ``||Q(W) - W|| / ||W||``, direct RTN at ``bits``;
    - ``"product vs W"``: ``||Q(A) Q(B) - W|| / ||W||``, what factor-then-quantize stores against the
      weight itself (rank truncation included): the number to set beside ``"direct"``;
    - ``"product"``: ``||Q(A) Q(B) - A B|| / ||A B||``, the quantization error of the product alone;
    - ``"amplification"``: ``"product"`` over the mean of the factors' own relative errors. With
      balanced factors and independent errors this ratio is about √2 by construction (two noisy
      factors), so it is shown, never judged: the verdict compares ``"product vs W"`` and
      ``"product"`` with ``"direct"`` at the same bits.
    """
    w = w.float()
    a, b = balanced_factors(w, rank) if factors is None else factors
    qa, qb = rtn(a, bits).weight, rtn(b.T.contiguous(), bits).weight.T
    ab = a @ b

    def rel(x, ref):
        return float((x - ref).norm() / ref.norm().clamp(min=1e-30))

    e_a, e_b, e_prod = rel(qa, a), rel(qb, b), rel(qa @ qb, ab)
    return {
        "direct": rel(rtn(w, bits).weight, w),
        "factor A": e_a,
        "factor B": e_b,
        "product": e_prod,
        "product vs W": rel(qa @ qb, w),
        "amplification": e_prod / max((e_a + e_b) / 2, 1e-30),
    }


def bits_per_weight(report: dict[str, float]) -> float:
    """Stored bits per original weight of a :func:`quantize_blocks` report (scales included)."""
    return report["bits"] / report["params"]


__all__ = [
    "SCALE_BITS",
    "amplification",
    "balanced_factors",
    "bits_per_weight",
    "block_weights",
    "factor_quantize",
    "fold_norms",
    "hadamard",
    "quantize_blocks",
    "random_hadamard",
    "random_orthogonal",
    "rotate",
    "rotated_copy",
    "rtn",
]
