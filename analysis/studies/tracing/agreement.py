"""How two ways of tracing agree: exact against attribution patching, noise against token
replacement, ROME's window against single states, and the split-half stability of a score."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from analysis import stats, tracing
from analysis.scores import ComponentScores
from analysis.studies.tracing.results import Agreement
from analysis.studies.tracing.verdicts import resid_hook


def agreement(a: Sequence[tracing.TraceResult], b: Sequence[tracing.TraceResult], kind: str) -> Agreement:
    """Correlation of two methods' indirect effects on the same facts (states from the subject on).

    Traces are paired by prompt; facts traced by only one method are left out.
    """
    xs, ys = [], []
    by_prompt = {t.prompt: t for t in b}
    pairs = [(ta, by_prompt[ta.prompt]) for ta in a if ta.prompt in by_prompt]
    if not pairs:
        raise ValueError("The two lists of traces share no fact (matched by prompt).")
    for ta, tb in pairs:
        s = ta.subject_span[0]
        x, y = ta.indirect_effect(kind)[:, s:].reshape(-1), tb.indirect_effect(kind)[:, s:].reshape(-1)
        ok = ~(x.isnan() | y.isnan())
        xs.append(x[ok])
        ys.append(y[ok])
    x, y = torch.cat(xs), torch.cat(ys)
    return Agreement(stats.pearson(x, y), stats.spearman(x, y), int(x.numel()), x, y)


def aie_agreement(a: tracing.AIEResult, b: tracing.AIEResult, labels: tuple[str, str] = ("a", "b")) -> pd.DataFrame:
    """How two AIE results (e.g. two corruptions) agree: correlation of the role x layer maps
    and each one's peak, per kind they share."""
    rows = []
    for kind in [k for k in a.kinds if k in b.kinds]:
        ma, mb = a.mean(kind).reshape(-1), b.mean(kind).reshape(-1)
        ok = ~(ma.isnan() | mb.isnan())
        pa, pb = a.peak(kind), b.peak(kind)
        rows.append(
            {
                "kind": kind,
                "pearson r of AIE maps": stats.pearson(ma[ok], mb[ok]),
                f"peak ({labels[0]})": f"{pa['role']}, layer {pa['layer']}",
                f"peak ({labels[1]})": f"{pb['role']}, layer {pb['layer']}",
                f"max AIE ({labels[0]})": pa["aie"],
                f"max AIE ({labels[1]})": pb["aie"],
            }
        )
    return pd.DataFrame(rows).set_index("kind")


def exact_vs_attribution(
    exact: tracing.AIEResult, single: tracing.AIEResult, attr_single: tracing.AIEResult, window: int
) -> dict[str, Agreement]:
    """:func:`agreement` of exact and attribution traces on the same facts: the residual stream,
    MLP and attention at ROME's window, and MLP and attention one state at a time."""
    attr = attr_single.with_window(window)
    pairs = [
        (resid_hook(exact) or "resid", exact, attr, 1),
        ("mlp", exact, attr, window),
        ("attn", exact, attr, window),
        ("mlp", single, attr_single, 1),
        ("attn", single, attr_single, 1),
    ]
    return {f"{k} (window {w})": agreement(e.traces, a.traces, k) for k, e, a, w in pairs}


def agreement_table(rows: dict[str, Agreement]) -> pd.DataFrame:
    """The Pearson and Spearman correlations and sizes of several :func:`agreement` results."""
    return pd.DataFrame({k: {m: getattr(v, m) for m in ("pearson", "spearman", "n")} for k, v in rows.items()}).T


def stability(scores: dict[str, ComponentScores], n_splits: int = 200, seed: int = 0) -> pd.DataFrame:
    """Split-half Spearman of each score (mean and sd over ``n_splits`` random halves of its facts;
    empty when it has fewer than 4 facts)."""
    out = {}
    for name, s in scores.items():
        halves = s.split_half(n_splits, seed) if len(s.samples) >= 4 else torch.tensor([])
        out[name] = {
            "split-half Spearman (mean)": halves.mean().item() if len(halves) else None,
            f"sd over {n_splits} splits": halves.std().item() if len(halves) > 1 else None,
        }
    return pd.DataFrame(out).T
