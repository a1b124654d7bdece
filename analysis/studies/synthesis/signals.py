"""Every map of where information lives, as one kind of object: a :class:`Signal`.

A signal is a :class:`analysis.scores.ComponentScores` (one number per layer's attention and MLP,
high = much information = compress least) with what it cost to compute: seconds and peak host
memory, measured as it ran (:func:`metered`), or read from the record the disk cache keeps beside
an entry that an earlier chapter computed (:attr:`analysis.cache.Run.recorded`).

The cheap signals are computed here from calibration text (:func:`cheap_signals`): attribution
patching of zero-ablation (:func:`analysis.tracing.patching.ablation_attribution`), weight and
gradient magnitude, the empirical Fisher, Wanda, the logit- and tuned-lens KL gain
(:mod:`analysis.saliency`), ShortGPT's Block Influence and Gromov et al.'s angular distance
(:mod:`analysis.geometry.removal`). The expensive ones come from the study chapters that compute
them, through :func:`from_layers` (a per-layer value given to both kinds, or to attention only) and
:func:`from_heads` (a per-head map averaged over a layer's heads, attention only).

A block signal (BI, angular distance, lens gains, the update's nonlinearity, predictive-direction
mass) gives its layer's value to both kinds: it ranks blocks, not sublayers.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import cache, memory, saliency, scores
from analysis.cache import cached, tensors_hash
from analysis.components import KINDS
from analysis.geometry import removal
from analysis.models import model_key
from analysis.scores import ComponentScores
from analysis.tracing import patching

CACHE_VERSION = 1


@dataclass
class Cost:
    """Seconds and peak host memory (MiB) of a computation; ``complete`` is False when part of it
    came from a cache entry without a record, whose cost is then not counted."""

    seconds: float = 0.0
    peak_mib: float = float("nan")
    complete: bool = True


@contextlib.contextmanager
def metered() -> Iterator[Cost]:
    """Measure the ``with`` block: its wall seconds and host peak, plus, for every cache hit inside
    it, the seconds and peak recorded when that entry was computed."""
    cost, start, t0 = Cost(), len(cache.RUNS), time.perf_counter()
    with memory.measure() as meter:
        yield cost
    hits = [r for r in cache.RUNS[start:] if r.hit]
    peaks = [p.total for p in meter.peaks if p.measure == memory.HOST]
    peaks += [p.total for r in hits if r.recorded for p in r.recorded.peaks if p.measure == memory.HOST]
    cost.seconds = time.perf_counter() - t0 + sum(r.recorded.seconds for r in hits if r.recorded)
    cost.peak_mib = max(peaks) / memory.MiB if peaks else float("nan")
    cost.complete = all(r.recorded is not None for r in hits)


@dataclass(frozen=True)
class Signal:
    """A map of where information lives, and its price."""

    scores: ComponentScores
    cost: Cost = field(default_factory=Cost)
    source: str = "computed here"
    level: str = "component"
    """``"component"`` (attention and MLP apart), ``"block"`` (one value per layer) or ``"attn"``."""

    @property
    def name(self) -> str:
        return self.scores.name

    def kind_values(self, kind: str) -> Float[np.ndarray, " layer"] | None:
        """The signal's values over the layers for one kind, or None where it says nothing of that kind."""
        if kind not in self.scores.kinds:
            return None
        return self.scores.values[:, self.scores.kinds.index(kind)].double().numpy()

    def block_values(self) -> Float[np.ndarray, " layer"]:
        """One value per layer: the mean over kinds of the within-kind rank (a block signal's own value
        ranks the same way)."""
        ranks = self.scores.rank().double()
        return ranks.mean(1).numpy()


def from_layers(name: str, per_layer, level: str = "block", source: str = "", cost: Cost | None = None) -> Signal:
    """A signal from one value per layer (``[n_layers]``): both kinds get it (``level="block"``), or
    attention alone (``level="attn"``)."""
    v = (
        per_layer.detach().double().cpu().clone()
        if isinstance(per_layer, Tensor)
        else torch.tensor(np.array(per_layer, dtype=float))
    )
    if v.ndim != 1 or not torch.isfinite(v).all():
        raise ValueError(f"{name}: need one finite value per layer, got shape {tuple(v.shape)}.")
    if level == "attn":
        s = ComponentScores(name, v[:, None], kinds=("attn",))
    elif level == "block":
        s = ComponentScores(name, torch.stack([v] * len(KINDS), 1))
    else:
        raise ValueError(f"level must be 'block' or 'attn', got {level!r}.")
    return Signal(s, cost or Cost(float("nan"), float("nan"), False), source, level)


def from_heads(name: str, per_head: Float[Tensor, "layer head"], source: str = "", cost: Cost | None = None) -> Signal:
    """An attention-only signal from a per-head map: each layer's mean over its heads."""
    return from_layers(name, torch.as_tensor(per_head).double().mean(1), "attn", source, cost)


def _signal(name: str, level: str, compute: Callable[[], ComponentScores], config: dict, model) -> Signal:
    def run() -> Signal:
        with metered() as cost:
            s = compute()
        return Signal(ComponentScores(name, s.values.double(), s.kinds, s.samples), cost, "computed here", level)

    return cached("synthesis/signal", run, {"signal": name, **config, "version": CACHE_VERSION}, model_key(model))


BLOCK_SIGNALS = ("Block Influence (ShortGPT)", "angular distance (Gromov)", "logit-lens KL gain", "tuned-lens KL gain")


def cheap_signals(
    model: HookedTransformer,
    calib: Tensor,
    context: int,
    batch_size: int = 8,
    translators: Mapping[int, Callable] | None = None,
    translators_cost: Cost | None = None,
    lens_tokens: int | None = None,
) -> dict[str, Signal]:
    """Every signal this study computes itself, from ``calib`` tokens cut into ``context`` windows.

    ``translators``: a least-squares tuned lens per layer (the variance chapter's), for the
    tuned-lens KL gain; without it that signal is left out. The two lens signals read the first
    ``lens_tokens`` of ``calib`` (all by default). Each signal is cached with its cost."""
    cfg = {"tokens": tensors_hash([calib]), "context": context, "batch_size": batch_size}
    kw = dict(context=context, batch_size=batch_size)
    lens = calib[:lens_tokens] if lens_tokens else calib
    cfg_lens = {**cfg, "tokens": tensors_hash([lens])}
    specs: dict[str, tuple[str, Callable[[], ComponentScores]]] = {
        "attribution patching": ("component", lambda: patching.ablation_attribution(model, calib, **kw)),
        "weight magnitude": ("component", lambda: scores.weight_magnitude(model)),
        "gradient magnitude": (
            "component",
            lambda: scores.gradient_magnitude(model, calib, context, batch_size, cache=False),
        ),
        "Fisher": ("component", lambda: saliency.fisher(model, calib, **kw)),
        "Wanda": ("component", lambda: saliency.wanda(model, calib, **kw)),
        "Block Influence (ShortGPT)": ("block", lambda: removal.block_influence(model, calib, **kw)),
        "angular distance (Gromov)": ("block", lambda: removal.angular_distance_scores(model, calib, **kw)),
    }
    out = {name: _signal(name, level, compute, cfg, model) for name, (level, compute) in specs.items()}
    name = "logit-lens KL gain"
    out[name] = _signal(name, "block", lambda: saliency.lens_kl_gain(model, lens, **kw), cfg_lens, model)
    if translators is not None:
        name = "tuned-lens KL gain"
        s = _signal(
            name,
            "block",
            lambda: saliency.lens_kl_gain(model, lens, translators=translators, **kw),
            {**cfg_lens, "translators": sorted(translators)},
            model,
        )
        if translators_cost is not None:  # the lens's fit is part of this signal's price
            c = s.cost
            s = Signal(
                s.scores,
                Cost(
                    c.seconds + translators_cost.seconds,
                    max(c.peak_mib, translators_cost.peak_mib),
                    c.complete and translators_cost.complete,
                ),
                s.source,
                s.level,
            )
        out[name] = s
    return out


def costs(signals: Mapping[str, Signal]):
    """A table: per signal, its level, source, seconds and peak MiB (``all recorded`` False where part
    of it came from a cache entry without a record)."""
    rows = []
    for name, s in signals.items():
        rows.append(
            {
                "signal": name,
                "level": s.level,
                "source": s.source,
                "seconds": s.cost.seconds,
                "peak MiB": s.cost.peak_mib,
                "all recorded": s.cost.complete,
            }
        )
    return pd.DataFrame(rows).set_index("signal")
