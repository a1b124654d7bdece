"""SAEBench's core metrics and sparse probing, for any sae-lens SAE on a residual-stream layer.

SAEBench (Karvonen et al. 2025) judges an SAE on held-out tokens, BOS excluded:

- **sparsity**: ``L0`` (latents that are non-zero per token) and ``L1``; *dead* latents (never
  on) and *dense* latents (on for more than 10% of tokens);
- **fidelity**: the MSE ``mean_tokens ‖x − x̂‖²``, sae-lens's explained variance
  ``1 − MSE / Var(x)`` (centred: ``Var`` is the total variance about the mean activation), so
  the fraction of variance unexplained is ``FVU = 1 − EV``, and the older per-batch
  ``explained_variance_legacy``;
- **downstream**: the reconstruction spliced into the model, against zero-ablating the hook:
  ``KL score = (KL_ablated − KL_sae) / KL_ablated`` and
  ``CE score = (CE_ablated − CE_sae) / (CE_ablated − CE_clean)``; 1 when splicing costs nothing.

:func:`sparsity_and_variance` computes the first two from cached activations with sae-lens's own
``ExplainedVarianceCalculator`` (a test checks it against ``sae_lens.evals``), and
:func:`downstream` calls ``sae_lens.evals.get_downstream_reconstruction_metrics`` itself.

**Sparse probing** asks whether single latents carry a task's label: each text's latents are
mean-pooled over its non-padding, non-BOS tokens, the ``k`` latents with the largest
``|mean(positive) − mean(negative)|`` on the training split are kept, and a logistic regression
(:func:`analysis.probing.fit_probe`, the library's one probe trainer) is fitted on them, for
``k = 1, 2, 5, 10, 20, 50``. Each class of a task is one balanced one-vs-rest problem. The same
probe on the model's own mean-pooled residual stream (all dimensions, and the top ``k``) is the
baseline SAEBench always shows: a task the residual already solves near 100% says little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from sae_lens.evals import ExplainedVarianceCalculator, get_downstream_reconstruction_metrics
from sae_lens.training.activation_scaler import ActivationScaler
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import hooks
from analysis.forward import pool, text_stream
from analysis.probing import fit_probe, group_split

KS = (1, 2, 5, 10, 20, 50)
DENSE = 0.1
"""A latent on for more than this share of tokens is *dense*."""


class TokenBatches:
    """A stand-in for sae-lens's activation store that serves fixed sequences, in order, each once:
    a request past the end gets the sequences that are left (the last batch may be short)."""

    def __init__(self, seqs: Int[Tensor, "seq pos"]):
        self.seqs, self.i = seqs, 0

    def get_batch_tokens(self, n: int) -> Tensor:
        if self.i >= len(self.seqs):
            raise IndexError(f"TokenBatches: all {len(self.seqs)} sequences were served already.")
        out = self.seqs[self.i : self.i + n]
        self.i += len(out)
        return out


@torch.no_grad()
def sparsity_and_variance(
    sae, acts: Float[Tensor, "n d_in"], batch: int = 4096, legacy_batch: int | None = None
) -> dict[str, float]:
    """L0, L1, MSE, explained variance (sae-lens's), FVU, legacy EV, dead and dense fractions of
    ``sae`` on ``acts`` (held-out tokens, BOS already removed). ``legacy_batch``: tokens per batch of
    the legacy EV (default: ``batch``)."""

    if len(acts) == 0:
        raise ValueError("sparsity_and_variance needs at least one activation row.")
    ev = ExplainedVarianceCalculator()
    fires = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    l0 = l1 = mse = 0.0
    n = len(acts)
    for i in range(0, n, batch):
        x = acts[i : i + batch].to(sae.W_dec)
        z = sae.encode(x)
        x_hat = sae.decode(z)
        on = z != 0
        fires += on.double().sum(0).cpu()
        l0 += float(on.double().sum())
        l1 += float(z.abs().double().sum())
        mse += float((x - x_hat).double().pow(2).sum())
        ev.add_batch(sae_output=x_hat, hidden_acts=x)
    legacy = []
    lb = legacy_batch or batch
    for i in range(0, n, lb):
        x = acts[i : i + lb].to(sae.W_dec)
        x_hat = sae.decode(sae.encode(x))
        resid = (x - x_hat).pow(2).sum(-1)
        legacy.append(1 - resid / (x - x.mean(0)).pow(2).sum(-1))
    density = fires / n
    explained = ev.compute()
    return {
        "L0": l0 / n,
        "L1": l1 / n,
        "MSE": mse / n,
        "explained variance": explained,
        "FVU": 1 - explained,
        "explained variance (legacy)": float(torch.cat(legacy).mean()),
        "dead fraction": float((density == 0).double().mean()),
        "dense fraction": float((density > DENSE).double().mean()),
        "tokens": n,
    }


@torch.no_grad()
def downstream(
    model: HookedTransformer,
    sae,
    layer: int,
    seqs: Int[Tensor, "seq pos"],
    batch_prompts: int = 8,
    bos: int | None = None,
) -> dict[str, float]:
    """KL and CE with ``sae``'s reconstruction of ``blocks.{layer}.hook_resid_post`` spliced in, and
    their scores against zero ablation (``sae_lens.evals``; BOS positions, token ``bos`` (default: the
    tokenizer's), left clean and unscored). Every sequence is scored once: ``ceil(len(seqs) /
    batch_prompts)`` batches, the last one shorter when they do not divide, and the means are over
    tokens, so the batching does not weigh them. ``kl_tokens``: the positions KL is averaged over (every
    position that is not BOS). Sets ``sae.cfg.metadata.hook_name`` to that hook."""

    if len(seqs) == 0:
        raise ValueError("downstream needs at least one sequence.")
    sae.cfg.metadata.hook_name = hooks.resid_post(layer)
    bos = model.tokenizer.bos_token_id if bos is None else bos
    out = get_downstream_reconstruction_metrics(
        sae,
        model,
        TokenBatches(seqs.to(model.cfg.device)),
        ActivationScaler(),
        compute_kl=True,
        compute_ce_loss=True,
        n_batches=math.ceil(len(seqs) / batch_prompts),
        eval_batch_size_prompts=batch_prompts,
        ignore_tokens=[bos],
    )
    return {**out, "kl_tokens": int((seqs != bos).sum())}


# --------------------------------------------------------------------------------------
# Sparse probing
# --------------------------------------------------------------------------------------


@torch.no_grad()
def pooled(
    model: HookedTransformer,
    texts: Sequence[str],
    layer: int,
    encoders: Mapping[str, Callable[[Tensor], Tensor]],
    max_len: int = 128,
    batch_size: int = 16,
) -> dict[str, Float[Tensor, "n d"]]:
    """Mean over each text's non-padding, non-BOS tokens of ``hook_resid_post`` (key ``"residual"``)
    and of each encoder's latents (``{name: encode}``, applied per token)."""
    out: dict[str, list[Tensor]] = {"residual": [], **{k: [] for k in encoders}}
    name = hooks.resid_post(layer)
    for batch, last in text_stream(model, texts, [name], batch_size, max_len, f"pooled features (layer {layer})"):
        resid = batch.acts[name].float()
        out["residual"].append(pool(resid, "mean", last, skip_first=1).cpu())
        for key, encode in encoders.items():
            out[key].append(pool(encode(resid), "mean", last, skip_first=1).float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def top_k_latents(X: Float[Tensor, "n d"], y: Int[Tensor, " n"], k: int) -> Int[Tensor, " k"]:
    """The ``k`` columns with the largest ``|mean(X[y == 1]) − mean(X[y == 0])|`` (SAEBench's selection)."""
    y = torch.as_tensor(y).bool()
    if y.all() or (~y).all():
        raise ValueError("top_k_latents needs both positive and negative rows.")
    diff = (X[y].mean(0) - X[~y].mean(0)).abs()
    return torch.topk(diff, min(k, X.shape[1]), sorted=True).indices


def one_vs_rest(labels: Sequence[int], n_classes: int, seed: int = 0) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """For each class (one problem if ``n_classes == 2``): ``(class, rows, binary labels)``, the class's
    rows and as many rows drawn from the other classes."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = [1] if n_classes == 2 else range(n_classes)
    out = []
    for c in classes:
        pos = np.flatnonzero(labels == c)
        neg = np.flatnonzero(labels != c)
        m = min(len(pos), len(neg))
        if m < 2:
            continue
        rows = np.concatenate([rng.choice(pos, m, replace=False), rng.choice(neg, m, replace=False)])
        out.append((int(c), rows, np.r_[np.ones(m, int), np.zeros(m, int)]))
    return out


@dataclass(frozen=True)
class ProbeSetup:
    """How a sparse probe is fitted."""

    ks: tuple[int, ...] = KS
    train_frac: float = 0.8
    l2: float = 1e-3
    """L2 on the logistic regression's weights (:func:`analysis.probing.fit_probe`)."""
    steps: int = 100
    seed: int = 0


def sparse_probe(
    features: Mapping[str, Tensor], y: Tensor, groups: Sequence[str], setup: ProbeSetup = ProbeSetup()
) -> list[dict[str, Any]]:
    """Held-out accuracy of the top-k probe on each feature set (and the full residual), one row per
    ``(features, k)``; the split keeps groups whole and the top-k are chosen on the training rows."""
    train, test = group_split(list(groups), setup.train_frac, setup.seed)
    y = torch.as_tensor(y).long()
    if y[train].unique().numel() < 2 or y[test].unique().numel() < 2:
        return []
    rows = []
    for name, X in features.items():
        for k in setup.ks:
            cols = top_k_latents(X[train], y[train], k)
            acc = fit_probe(X[:, cols], y, train, test, l2=setup.l2, steps=setup.steps)
            rows.append({"features": name, "k": k, "accuracy": acc})
    if "residual" in features:
        acc = fit_probe(features["residual"], y, train, test, l2=setup.l2, steps=setup.steps)
        rows.append({"features": "residual", "k": "all", "accuracy": acc})
    return rows


def probe_task(
    features: Mapping[str, Tensor],
    labels: Sequence[int],
    groups: Sequence[str],
    n_classes: int,
    setup: ProbeSetup = ProbeSetup(),
) -> list[dict[str, Any]]:
    """:func:`sparse_probe` on every one-vs-rest problem of a task (rows tagged with ``class``); a
    problem whose rows come from too few groups to split is left out."""
    rows = []
    for c, idx, yb in one_vs_rest(labels, n_classes, setup.seed):
        sub = {name: X[torch.as_tensor(idx)] for name, X in features.items()}
        try:
            found = sparse_probe(sub, torch.as_tensor(yb), [groups[i] for i in idx], setup)
        except ValueError:  # group_split: too few groups for a train and a test part
            continue
        for row in found:
            rows.append({"class": c, **row})
    return rows
