"""Probes: the features a probe reads (:func:`hidden_states`), the one batched probe trainer
(:func:`train_probes`, :func:`fit_probe`) and a layer sweep with control tasks (:func:`probe_layers`).

The idea of probing and of controls is in :mod:`analysis.probing`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedEncoder, HookedTransformer

from analysis.forward import text_features
from analysis.hooks import feature_hook
from analysis.models import is_encoder
from analysis.probing.tasks import control_labels, group_folds, group_split, text_types, type_coverage

PROBE_KINDS = ("linear", "mlp")


@dataclass(frozen=True)
class ProbeConfig:
    """How probes are trained and evaluated (one setting for every layer, task and model)."""

    train_frac: float = 0.8
    seeds: tuple[int, ...] = (0, 1, 2)
    hidden: int = 64
    """Width of the MLP probe's hidden layer."""
    steps: int = 100
    lr: float = 1e-2
    weight_decay: float = 1e-3
    control_by: str = "frequent_word"
    """What a control label is a function of: ``"frequent_word"`` (the last of the text's words among
    the ``control_vocab`` most frequent), ``"last_word"`` or ``"first_word"`` (see :func:`word_type`)."""
    control_vocab: int = 20
    control_seed: int = 0
    kinds: tuple[str, ...] = PROBE_KINDS
    folds: int = 0
    """0: one random group split per seed (``train_frac``); k >= 2: the k folds of one group-wise
    partition (shuffled with the first seed), each row tested once, probe ``i`` initialised with seed ``i``."""


# --------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------


@torch.inference_mode()
def hidden_states(
    model: HookedTransformer | HookedEncoder, texts: Sequence[str], batch_size: int = 32, max_len: int = 128
) -> Float[Tensor, "layer n d_model"]:
    """Per-layer features of each text (encoder: mean over tokens; decoder: last token)."""
    if len(texts) == 0:
        raise ValueError("hidden_states: no texts given.")
    L = model.cfg.n_layers
    names = [feature_hook(model, l) for l in range(L)]
    out = torch.zeros(L, len(texts), model.cfg.d_model)
    order = np.argsort([len(t) for t in texts])  # similar lengths share a batch: less padding
    device = next(model.parameters()).device
    for i in range(0, len(texts), batch_size):
        idx = order[i : i + batch_size]
        batch = [texts[j] for j in idx]
        if is_encoder(model):
            enc = model.tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=max_len)
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            cache = {}
            fwd = [(n, lambda a, hook: cache.__setitem__(hook.name, a)) for n in names]
            with model.hooks(fwd_hooks=fwd):  # encoder_output: no (random) MLM head
                model.encoder_output(ids, None, mask)
            w = (mask / mask.sum(1, keepdim=True)).unsqueeze(-1).float()
            for l, name in enumerate(names):
                out[l, idx] = (cache[name] * w).sum(1).cpu()
        else:  # right-padded, each text read at its last real token
            feats = text_features(model, batch, names, "last", len(batch), max_len)
            for l, name in enumerate(names):
                out[l, idx] = feats[name]
    return out


# --------------------------------------------------------------------------------------
# Batched probes
# --------------------------------------------------------------------------------------


def _init(shape: tuple[int, ...], fan_in: int, g: torch.Generator) -> Tensor:
    return ((torch.rand(shape, generator=g) * 2 - 1) / fan_in**0.5).requires_grad_()


@dataclass
class Probes:
    """A batch of trained probes: call it on features ``[probe, n, d]`` for logits ``[probe, n, classes]``.

    Features are standardised with the training mean and standard deviation (``mu``, ``sd``:
    ``[probe, 1, d]``); ``params`` are ``(W, b)`` for a linear probe or ``(W1, b1, W2, b2)`` for a
    2-layer MLP probe, each with the probe dimension first.
    """

    params: list[Tensor]
    mu: Tensor
    sd: Tensor

    def logits(self, X: Float[Tensor, "probe n d"]) -> Float[Tensor, "probe n classes"]:
        """Logits, differentiable in ``X`` (e.g. for a task loss on the model's activations)."""
        Z = (X - self.mu) / self.sd
        if len(self.params) == 4:
            W1, b1, W2, b2 = self.params
            return torch.relu(Z @ W1 + b1) @ W2 + b2
        W, b = self.params
        return Z @ W + b

    @torch.no_grad()
    def __call__(self, X: Float[Tensor, "probe n d"]) -> Float[Tensor, "probe n classes"]:
        """Logits without gradients (predictions: ``.argmax(-1)``)."""
        return self.logits(X)


def train_probes(
    X: Float[Tensor, "probe n d"],
    y: Int[Tensor, "probe n"],
    n_classes: int,
    hidden: int = 0,
    steps: int = 150,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    seed: int = 0,
    solver: str = "adam",
    l2: float = 0.0,
) -> Probes:
    """Train ``probe`` independent classifiers at once on full batches; returns the :class:`Probes`.

    ``hidden=0``: logistic regression; otherwise a 2-layer MLP with ``hidden`` ReLU units.
    Features are standardised with each probe's training mean and standard deviation. The loss
    is each probe's mean cross-entropy plus ``l2 * ||W||^2`` of its weight matrices, summed over
    probes (which share nothing, so each gets its own gradient). ``solver="adam"``: ``steps`` AdamW
    steps at ``lr`` with ``weight_decay``, from a random start drawn with ``seed``.
    ``solver="lbfgs"``: one L-BFGS run of at most ``steps`` iterations with a strong-Wolfe line
    search (``lr`` and ``weight_decay`` unused), from zero weights for a linear probe.
    """
    if solver not in ("adam", "lbfgs"):
        raise ValueError(f"Unknown solver {solver!r}; use 'adam' or 'lbfgs'.")
    P, n, d = X.shape
    mu, sd = X.mean(1, keepdim=True), X.std(1, keepdim=True).clamp(min=1e-6)
    Z = (X - mu) / sd
    g = torch.Generator().manual_seed(seed)
    if hidden:
        params = [
            _init((P, d, hidden), d, g),
            torch.zeros(P, 1, hidden, requires_grad=True),
            _init((P, hidden, n_classes), hidden, g),
            torch.zeros(P, 1, n_classes, requires_grad=True),
        ]
    elif solver == "lbfgs":  # convex: the standard zero start
        params = [torch.zeros(P, d, n_classes, requires_grad=True), torch.zeros(P, 1, n_classes, requires_grad=True)]
    else:
        params = [_init((P, d, n_classes), d, g), torch.zeros(P, 1, n_classes, requires_grad=True)]
    probes = Probes(params, torch.zeros(P, 1, d), torch.ones(P, 1, d))  # on standardised Z while training

    def loss() -> Tensor:
        ce = torch.nn.functional.cross_entropy(probes.logits(Z).reshape(P * n, -1), y.reshape(-1), reduction="sum") / n
        return ce + l2 * sum(w.pow(2).sum() for w in params[::2]) if l2 else ce

    with torch.enable_grad():
        if solver == "lbfgs":
            opt = torch.optim.LBFGS(params, max_iter=steps, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                value = loss()
                value.backward()
                return value

            opt.step(closure)
        else:
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
            for _ in range(steps):
                opt.zero_grad()
                loss().backward()
                opt.step()
    return Probes([p.detach() for p in params], mu, sd)


def fit_probe(
    features: Float[Tensor, "n d"],
    labels: Int[Tensor, " n"],
    train_idx: Int[Tensor, " n_train"],
    test_idx: Int[Tensor, " n_test"],
    l2: float = 1e-2,
    seed: int = 0,
    hidden: int = 0,
    steps: int = 200,
) -> float:
    """Held-out accuracy of one probe trained on the rows ``train_idx`` and tested on ``test_idx``.

    ``hidden=0`` (default): an L2-regularised (``l2 * ||W||^2``) logistic regression fitted by
    L-BFGS (at most ``steps`` iterations); else a 2-layer MLP probe trained by Adam from ``seed``.
    Labels are class ids ``0 .. k-1``; features are standardised on the training rows.
    """
    X = torch.as_tensor(features).float()
    y = torch.as_tensor(labels).long()
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"fit_probe needs features [n, d] and labels [n], got {tuple(X.shape)} and {tuple(y.shape)}.")
    train_idx, test_idx = torch.as_tensor(train_idx).long(), torch.as_tensor(test_idx).long()
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise ValueError("fit_probe needs at least one training and one test row.")
    probe = train_probes(
        X[None, train_idx],
        y[None, train_idx],
        int(y.max()) + 1,
        hidden=hidden,
        steps=steps,
        seed=seed,
        solver="adam" if hidden else "lbfgs",
        l2=l2,
    )
    return float((probe(X[None, test_idx])[0].argmax(-1) == y[test_idx]).float().mean())


@dataclass
class ProbeResult:
    """Probe accuracies per layer and seed: ``acc[kind][target]`` is ``[n_layers, n_seeds]``.

    ``kind`` is ``"linear"`` or ``"mlp"``; ``target`` is ``"task"`` or ``"control"``.
    """

    task: str
    acc: dict[str, dict[str, Tensor]]
    n_train: list[int]
    n_test: list[int]
    chance: float
    """Accuracy of always predicting the majority test class (mean over seeds)."""
    hooks: list[str] = field(default_factory=list)
    hits: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    """``hits[kind][target]``: ``[n_layers, n_rows]``, each row's held-out correctness averaged over
    the splits that tested it (NaN for a row never tested); with ``folds`` every row is tested once."""
    coverage: float = float("nan")
    """Share of test rows whose control type occurs in training (mean over splits; see :func:`type_coverage`)."""

    def mean(self, kind: str = "mlp", target: str = "task") -> Tensor:
        return self.acc[kind][target].mean(1)

    def std(self, kind: str = "mlp", target: str = "task") -> Tensor:
        a = self.acc[kind][target]
        return a.std(1) if a.shape[1] > 1 else torch.zeros(a.shape[0])

    def selectivity(self, kind: str = "mlp") -> Tensor:
        """Task minus control accuracy per layer and seed, ``[n_layers, n_seeds]``."""
        return self.acc[kind]["task"] - self.acc[kind]["control"]

    def summary(self, kind: str = "mlp", layers: Sequence[int] | None = None) -> dict[str, float]:
        """Mean over ``layers`` (default: the best task layer) of accuracy, control and selectivity."""
        if layers is None:
            layers = [int(self.mean(kind).argmax())]
        sel = list(layers)
        return {
            "task": float(self.mean(kind)[sel].mean()),
            "control": float(self.mean(kind, "control")[sel].mean()),
            "selectivity": float(self.selectivity(kind)[sel].mean()),
            "task_std": float(self.std(kind)[sel].mean()),
        }


def probe_layers(
    features: Float[Tensor, "layer n d"],
    labels: Sequence[int],
    groups: Sequence[str],
    texts: Sequence[str],
    cfg: ProbeConfig = ProbeConfig(),
    task: str = "",
) -> ProbeResult:
    """Task and control probes of each kind on every layer's features, over ``cfg.seeds`` splits
    (or ``cfg.folds`` folds); see :class:`ProbeConfig`."""
    y = torch.as_tensor(list(labels))
    if features.shape[1] != len(y):
        raise ValueError(f"{features.shape[1]} feature rows but {len(y)} labels.")
    n_classes = int(y.max()) + 1
    types = text_types(texts, cfg.control_by, cfg.control_vocab)
    control = control_labels(texts, y.tolist(), cfg.control_by, cfg.control_seed, cfg.control_vocab)
    if cfg.folds:
        splits = group_folds(groups, cfg.folds, cfg.seeds[0])
        seeds = list(range(cfg.folds))
    else:
        splits = [group_split(groups, cfg.train_frac, seed) for seed in cfg.seeds]
        seeds = list(cfg.seeds)
    L, n = features.shape[0], len(y)
    acc = {k: {"task": torch.zeros(L, len(seeds)), "control": torch.zeros(L, len(seeds))} for k in cfg.kinds}
    hit_sum = {k: {"task": torch.zeros(L, n), "control": torch.zeros(L, n)} for k in cfg.kinds}
    tested = torch.zeros(n)
    n_train, n_test, chance, coverage = [], [], [], []
    for s, (seed, (tr, te)) in enumerate(zip(seeds, splits)):
        n_train.append(len(tr))
        n_test.append(len(te))
        chance.append(float(torch.bincount(y[te]).max()) / len(te))
        coverage.append(type_coverage(types, tr.tolist(), te.tolist()))
        tested[te] += 1
        X = features[:, tr].repeat(2, 1, 1)  # [2L, n, d]: task probes, then control probes
        Y = torch.cat([y[tr].expand(L, -1), control[tr].expand(L, -1)])
        Yt = torch.cat([y[te].expand(L, -1), control[te].expand(L, -1)])
        for kind in cfg.kinds:
            predict = train_probes(
                X, Y, n_classes, cfg.hidden if kind == "mlp" else 0, cfg.steps, cfg.lr, cfg.weight_decay, seed
            )
            hit = (predict(features[:, te].repeat(2, 1, 1)).argmax(-1) == Yt).float()  # [2L, n_test]
            acc[kind]["task"][:, s], acc[kind]["control"][:, s] = hit[:L].mean(1), hit[L:].mean(1)
            hit_sum[kind]["task"][:, te] += hit[:L]
            hit_sum[kind]["control"][:, te] += hit[L:]
    never = tested == 0
    hits = {
        k: {t: (v / tested.clamp(min=1)).masked_fill(never, float("nan")) for t, v in d.items()}
        for k, d in hit_sum.items()
    }
    return ProbeResult(task, acc, n_train, n_test, float(np.mean(chance)), hits=hits, coverage=float(np.mean(coverage)))


def probe_dataset(
    model: HookedTransformer | HookedEncoder,
    ds,
    cfg: ProbeConfig = ProbeConfig(),
    batch_size: int = 32,
    max_len: int = 128,
) -> ProbeResult:
    """Features of an ``analysis.data.load_task`` dataset from ``model``, probed layer by layer."""
    texts = ds["text"][:]
    feats = hidden_states(model, texts, batch_size, max_len)
    res = probe_layers(feats, ds["label"][:], ds["group"][:], texts, cfg, task=ds[0]["task"] if len(ds) else "")
    res.hooks = [feature_hook(model, l) for l in range(model.cfg.n_layers)]
    return res
