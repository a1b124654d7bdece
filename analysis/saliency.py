"""Three more component-importance signals from the pruning and interpretability literature.

Each returns an :class:`analysis.scores.ComponentScores` (``values`` ``[n_layers, 2]`` for the
kinds ``("attn", "mlp")``; high = important = compress least), so they line up with the seed's
scores. Calibration text is cut into disjoint windows of ``context`` tokens
(:func:`analysis.forward.windows`); a score that is a mean over windows keeps the per-window terms
as ``samples`` ``[window, layer, kind]``.

- :func:`fisher`: the trace of the **empirical Fisher information** of a component's weights,
  ``F = E_w[ Σ_{W in component} ||g_w||_F² ]`` with ``g_w = ∇_W`` of window ``w``'s mean
  next-token NLL: the diagonal Fisher (Kirkpatrick et al. 2017, "Overcoming catastrophic
  forgetting", EWC) summed over the component, the loss-curvature proxy behind Fisher pruning
  (Theis et al. 2018; Kwon et al. 2022, "A Fast Post-Training Pruning Framework for
  Transformers"). Unlike :func:`analysis.scores.gradient_magnitude`, the squared norm of the
  *mean* gradient, it averages the squared per-window gradients, so by Jensen
  ``fisher >= gradient_magnitude`` on the same windows; gradients that cancel across windows
  still count.
- :func:`wanda`: Wanda's weight score (Sun et al. 2023, "A Simple and Effective Pruning Approach
  for Large Language Models", eq. 1) ``S_ij = |W_ij| · ||X_i||₂`` summed over all of a
  component's weights (attention ``W_Q, W_K, W_V, W_O``; MLP ``W_in``, ``W_gate`` where present,
  ``W_out``), ``X_i`` input feature ``i`` over the calibration tokens
  (:func:`analysis.wanda.input_norms`, inputs read at :func:`analysis.hooks.input_hook`).
- :func:`lens_kl_gain`: how much a block moves the lens's prediction towards the model's own:
  ``KL(p_final || lens(x^l)) - KL(p_final || lens(x^{l+1}))`` averaged over every token, ``x^l``
  the residual stream entering block ``l`` and ``lens`` the logit lens (nostalgebraist 2020: the
  model's final norm and unembedding) or a tuned lens (Belrose et al. 2023, "Eliciting Latent
  Predictions from Transformers with the Tuned Lens"; here translators fitted by least squares
  as in :mod:`analysis.geometry.lens`). A block score: both kinds get the block's value. The gains
  telescope: summed over layers they give the KL of the embedding stream.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

from analysis import hooks
from analysis.components import KINDS, component, parameter_name, weights_of
from analysis.forward import batch_rows, final_logits, stream, windows
from analysis.models import is_encoder
from analysis.progress import progress
from analysis.scores import ComponentScores
from analysis.wanda import input_norms

# ---- Fisher ----


def _output_hook(model: HookedTransformer, weight: str) -> str:
    """The hook whose activation is ``x @ W (+ b)`` for a weight: the gradient there, times the
    input at :func:`analysis.hooks.input_hook`, is the weight's gradient."""
    head, _, w = weight.rpartition(".")
    block = head.rsplit(".", 1)[0]
    out = {
        "W_Q": f"{head}.hook_q",
        "W_K": f"{head}.hook_k",
        "W_V": f"{head}.hook_v",
        "W_O": f"{block}.hook_attn_out",
        "W_in": f"{head}.hook_pre_linear" if model.cfg.gated_mlp else f"{head}.hook_pre",
        "W_gate": f"{head}.hook_pre",
        "W_out": f"{block}.hook_mlp_out",
    }
    return out[w]


def _check_fisher_model(model: HookedTransformer) -> None:
    """Per-window gradients are read as ``input^T · d(loss)/d(output)`` at the weights' hooks; raise
    for the TransformerLens layouts where a hook is not the plain product (pre-LN decoders only)."""
    cfg = model.cfg
    flags = ("use_split_qkv_input", "use_attn_in", "load_in_4bit", "use_normalization_before_and_after")
    bad = [f for f in flags if getattr(cfg, f, False)] + ["ungroup_grouped_query_attention"] * bool(
        getattr(cfg, "ungroup_grouped_query_attention", False)
    )
    if is_encoder(model) or cfg.normalization_type is None or cfg.positional_embedding_type == "shortformer":
        bad.append("an encoder, no normalization or shortformer positions")
    if cfg.original_architecture in POST_NORM_ARCHITECTURES or cfg.is_layer_norm_activation():
        bad.append("a post-norm block or a normalised MLP activation")
    if bad:
        raise ValueError(
            f"fisher supports pre-LN decoders whose weights act as x @ W at their hooks; this model has {bad}. "
            "Use analysis.scores.gradient_magnitude, or a per-window autograd loop, for it."
        )


def _square_norms(x: Float[Tensor, "b p i"], d: Float[Tensor, "b p o"]) -> Float[Tensor, " b"]:
    """``||x_b^T d_b||_F²`` per row ``b`` in float64, through the ``[p, p]`` Gram matrices when cheaper."""
    x, d = x.double(), d.double()
    p, i, o = x.shape[1], x.shape[2], d.shape[2]
    if p * (i + o) < i * o:  # Σ_{t,s} (x_t·x_s)(d_t·d_s)
        return ((x @ x.transpose(1, 2)) * (d @ d.transpose(1, 2))).sum((1, 2))
    return torch.einsum("bpi,bpo->bio", x, d).pow(2).sum((1, 2))


def fisher(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 128,
    batch_size: int = 4,
    name: str = "Fisher",
) -> ComponentScores:
    """The empirical Fisher trace per component: ``mean_w Σ_{W in component} ||∇_W L_w||_F²``.

    ``L_w`` is window ``w``'s mean next-token NLL. Per-window gradients come from one batched
    backward pass: a weight's gradient on window ``w`` is ``Σ_t x_t^T δ_t`` over its positions, ``x``
    the weight's input (:func:`analysis.hooks.input_hook`, norm weight applied) and ``δ`` the
    gradient of ``Σ_w L_w`` at the weight's output hook (windows in a batch do not interact). Only
    activations are differentiated: parameters' ``.grad`` and ``requires_grad`` are left as found.
    ``samples`` are the per-window terms ``[window, layer, kind]``.
    """
    _check_fisher_model(model)
    seqs = windows(tokens, context)
    params = dict(model.named_parameters())
    L = model.cfg.n_layers
    per = {(l, k): weights_of(model, component(l, kind), params) for l in range(L) for k, kind in enumerate(KINDS)}
    targets = [w for ws in per.values() for w in ws]
    in_names = {hooks.input_hook(w, model) for w in targets}
    out_names = {_output_hook(model, w) for w in targets}
    out = []
    for rows in progress(list(batch_rows(len(seqs), batch_size)), desc="Fisher"):
        x_in: dict[str, Tensor] = {}
        y_out: dict[str, Tensor] = {}

        def save_in(act, hook):  # ln1 fires once each for Q, K and V: the same values
            x_in.setdefault(hook.name, hooks.norm_output(model, hook.name, act.detach()))

        def save_out(act, hook):
            y_out[hook.name] = act

        fwd = [("hook_embed", lambda e, hook: e.detach().requires_grad_(True))]  # a graph even with frozen weights
        fwd += [(n, save_in) for n in in_names] + [(n, save_out) for n in out_names]
        batch = seqs[rows].to(model.cfg.device)
        with torch.enable_grad(), model.hooks(fwd_hooks=fwd):
            loss = model(batch, return_type="loss", loss_per_token=True).mean(1).sum()
            names = sorted(y_out)
            got = torch.autograd.grad(loss, [y_out[n] for n in names], allow_unused=True)
        delta = {n: (torch.zeros_like(y_out[n]) if g is None else g) for n, g in zip(names, got)}
        terms = torch.zeros(len(batch), L, len(KINDS), dtype=torch.float64)
        for (l, k), ws in per.items():
            for w in ws:
                x = x_in[hooks.input_hook(w, model)]
                x = x.flatten(-2) if x.ndim == 4 else x  # hook_z: heads concatenated
                d = delta[_output_hook(model, w)]
                d = d.flatten(-2) if d.ndim == 4 else d
                if x.shape[-1] * d.shape[-1] != params[parameter_name(model, w, params)].numel():
                    raise ValueError(f"fisher: {w}'s hooks do not match its shape; this architecture is unsupported.")
                terms[:, l, k] += _square_norms(x, d).cpu()
        out.append(terms)
    samples = torch.cat(out)
    return ComponentScores(name, samples.mean(0), samples=samples)


# ---- Wanda ----


def _input_sums(weight: str, w: Tensor) -> Float[Tensor, " d_in"]:
    """``Σ_j |W_ij|`` per input feature ``i`` of a TransformerLens weight, in the order of its
    :func:`analysis.hooks.input_hook` (``W_O``: heads concatenated, as ``hook_z`` flattened)."""
    a = w.detach().double().abs()
    if a.ndim == 2:  # [d_in, d_out]
        return a.sum(1)
    if weight.endswith("W_O"):  # [head, d_head, d_model]
        return a.sum(-1).flatten()
    return a.sum((0, 2))  # W_Q/K/V: [head or kv group, d_model, d_head]


def wanda(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 128,
    batch_size: int = 8,
    name: str = "Wanda",
) -> ComponentScores:
    """Per component, Wanda's ``Σ_ij |W_ij| · ||X_i||₂`` summed over its weight matrices.

    ``X_i``: input feature ``i`` of each weight over every calibration token
    (:func:`analysis.wanda.input_norms`: ``ln*.hook_normalized`` with the norm's weight applied for
    ``W_Q/W_K/W_V`` and ``W_in/W_gate``, ``hook_z`` for ``W_O``, ``mlp.hook_post`` for ``W_out``).
    Grouped-query K/V slices count once, as stored. Not a mean over windows: ``samples`` is None.
    """
    params = dict(model.named_parameters())
    L = model.cfg.n_layers
    per = {(l, k): weights_of(model, component(l, kind), params) for l in range(L) for k, kind in enumerate(KINDS)}
    norms = input_norms(model, tokens, context, batch_size, weights=[w for ws in per.values() for w in ws])
    values = torch.zeros(L, len(KINDS), dtype=torch.float64)
    for (l, k), ws in per.items():
        for w in ws:
            sums = _input_sums(w, params[parameter_name(model, w, params)])
            values[l, k] += float(sums @ norms[hooks.input_hook(w, model)].double())
    return ComponentScores(name, values)


# ---- Lens KL gain ----

Translator = Callable[[Float[Tensor, "... d_model"]], Float[Tensor, "... d_model"]]


def lens_streams(model: HookedTransformer) -> list[str]:
    """``x^0 .. x^L``: ``blocks.{l}.hook_resid_pre`` for every block, then the last ``hook_resid_post``."""
    L = model.cfg.n_layers
    return [hooks.resid_pre(l) for l in range(L)] + [hooks.resid_post(L - 1)]


@torch.inference_mode()
def lens_kl(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 128,
    batch_size: int = 8,
    translators: Mapping[int, Translator] | None = None,
) -> Float[Tensor, "window stream"]:
    """``KL(p_final || lens(x^s))`` in nats, averaged over every position of each window, for the
    streams ``s = 0..L`` of :func:`lens_streams`; ``[n_windows, n_layers + 1]`` float64.

    ``p_final`` is the model's own next-token distribution (the logit lens of ``x^L``). ``lens`` is
    the logit lens (:func:`analysis.forward.final_logits`), or, where ``translators`` has an entry
    for layer ``l``, that translator applied to ``resid_post(l)`` (= ``x^{l+1}``) first, as
    :func:`analysis.geometry.lens.lens_stats` keys them. The embedding stream ``x^0`` and the last
    stream ``x^L`` have no translator key and always use the logit lens (so ``KL_L = 0``); a
    translator for layer ``L - 1`` is ignored, as ``lens_stats`` ignores it.
    """
    L = model.cfg.n_layers
    translators = dict(translators or {})
    bad = [k for k in translators if not (isinstance(k, int) and 0 <= k < L)]
    if bad:
        raise ValueError(f"translators are keyed by the layer whose resid_post they read (0..{L - 1}); got {bad}.")
    names = lens_streams(model)
    out = []
    for batch in stream(model, windows(tokens, context), names, batch_size, "lens KL"):
        final = final_logits(model, batch.acts[names[-1]]).float().log_softmax(-1)  # [b, p, vocab]
        rows = []
        for s, name in enumerate(names):
            h = batch.acts[name]
            if 0 < s < L and s - 1 in translators:
                h = translators[s - 1](h)
            logp = final_logits(model, h).float().log_softmax(-1)
            rows.append(F.kl_div(logp, final, log_target=True, reduction="none").sum(-1).double().mean(1))
        out.append(torch.stack(rows, 1).cpu())
    return torch.cat(out)


def lens_kl_gain(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    context: int = 128,
    batch_size: int = 8,
    translators: Mapping[int, Translator] | None = None,
    name: str | None = None,
) -> ComponentScores:
    """Per block ``l``: ``KL(p_final || lens(x^l)) - KL(p_final || lens(x^{l+1}))`` (:func:`lens_kl`),
    averaged over every token, given to both kinds (a block score, as
    :mod:`analysis.geometry.removal`'s). ``samples``: the per-window gains ``[window, layer, kind]``.
    Negative where a block moves the lens away from the final prediction. The gains sum to the
    embedding stream's KL. ``name`` defaults to "logit-lens KL gain" or "tuned-lens KL gain".
    """
    kl = lens_kl(model, tokens, context, batch_size, translators)
    gain = kl[:, :-1] - kl[:, 1:]  # [window, layer]
    samples = gain[:, :, None].expand(-1, -1, len(KINDS)).contiguous()
    name = name or ("tuned-lens KL gain" if translators else "logit-lens KL gain")
    return ComponentScores(name, samples.mean(0), samples=samples)
