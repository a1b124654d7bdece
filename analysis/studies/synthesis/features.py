"""Past every anchor: what compression destroys, in SAE features.

The book's trained SAEs are a fixed measurement basis (:mod:`analysis.sae.survival`): each
compressed model's activations at an SAE's hook are encoded by the SAE trained on the dense model,
on the same tokens as the dense model's, and a feature survives when the two activation series
correlate (Pearson ``r >= 0.9``; the definitions are in that module). :func:`survival_table` does
it for a list of allocations (the leaderboard's best and worst, uniform quantization at several
bit widths), with each compressed model's perplexity beside it, so the chapter can ask whether
perplexity sees what the features lose.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import stats
from analysis.cache import cached, tensors_hash
from analysis.models import model_key
from analysis.progress import progress
from analysis.sae import density, survival
from analysis.studies.synthesis.allocate import Allocation

CACHE_VERSION = 2
"""2: the per-feature active and survived masks are kept."""


def _sae_hash(sae: Any) -> str:
    return tensors_hash([p.detach().cpu() for p in sae.parameters()])


def encoded(
    model: HookedTransformer, saes: Mapping[str, Any], tokens: Tensor, batch_size: int = 8, bos: int | None = None
) -> dict[str, Tensor]:
    """``{hook: [token, feature]}``: each SAE's features of ``model`` as it runs now (BOS positions left out)."""
    return {h: survival.encode_stream(model, sae, tokens, h, batch_size, ignore_token=bos) for h, sae in saes.items()}


def survival_table(
    model: HookedTransformer,
    saes: Mapping[str, Any],
    tokens: Tensor,
    allocations: Sequence[Allocation],
    perplexity: Mapping[str, float],
    batch_size: int = 8,
) -> pd.DataFrame:
    """A row per (allocation, SAE): the share of the dense run's active features that survive, its
    95% Wilson interval, the share damaged, and the allocation's perplexity (``perplexity`` by name)."""
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
    base_key = {
        "tokens": tensors_hash([tokens]),
        "saes": {h: _sae_hash(s) for h, s in saes.items()},
        "version": CACHE_VERSION,
    }
    dense = None
    rows = []
    for a in progress(list(allocations), desc="feature survival"):

        def compute(a=a) -> dict:
            nonlocal dense
            if dense is None:
                dense = encoded(model, saes, tokens, batch_size, bos)
            with a.applied(model):
                comp = encoded(model, saes, tokens, batch_size, bos)
            out = {}
            for h in saes:
                sv = survival.survival(dense[h], comp[h])
                out[h] = {**sv.summary(), "active mask": sv.active.numpy(), "survived mask": sv.survived.numpy()}
            return out

        found = cached("synthesis/survival", compute, {**base_key, "allocation": a.key()}, model_key(model))
        for hook, summ in found.items():
            rows.append(
                {
                    "model": a.name,
                    "SAE hook": hook,
                    "SAE layer": int(hook.split(".")[1]),
                    "perplexity": perplexity.get(a.name, float("nan")),
                    **summ,
                }
            )
    return pd.DataFrame(rows)


def deaths_by_head(table: pd.DataFrame, saes: Mapping[str, Any], model_row: str, n_heads: int) -> pd.DataFrame:
    """Per attention head: how many of the active features it writes survive under ``model_row``.

    An attention-output (``hook_z``) SAE feature belongs to the head whose slice of its decoder
    direction is longest (:func:`analysis.sae.density.effective_decoder`, ``[feature, n_heads x d_head]``)."""
    rows = []
    for _, r in table[table["model"] == model_row].iterrows():
        dec = density.effective_decoder(saes[r["SAE hook"]]).detach().float()
        owner = dec.view(dec.shape[0], n_heads, -1).norm(dim=-1).argmax(1).numpy()
        active, survived = np.asarray(r["active mask"]), np.asarray(r["survived mask"])
        for h in range(n_heads):
            mine = active & (owner == h)
            share = survived[mine].mean() if mine.any() else float("nan")
            rows.append({"layer": r["SAE layer"], "head": h, "active": int(mine.sum()), "surviving": share})
    return pd.DataFrame(rows)


def death_prediction(
    deaths: pd.DataFrame, maps: Mapping[str, Any], min_active: int = 5, n_boot: int = 1000
) -> pd.DataFrame:
    """Per head signal: Spearman ρ between its value and the head's surviving share, over heads with at
    least ``min_active`` active features, with a bootstrap interval over heads (heads of one layer are
    not independent, so it is descriptive)."""
    d = deaths[deaths["active"] >= min_active]
    rows = []
    for name, m in maps.items():
        x = np.asarray(m, dtype=float)[d["layer"].to_numpy(), d["head"].to_numpy()]
        y = d["surviving"].to_numpy(dtype=float)
        lo, hi = stats.bootstrap_ci((x, y), stats.spearman_stat, n_boot) if len(d) >= 4 else (np.nan, np.nan)
        rows.append({"signal": name, "heads": len(d), "spearman": stats.spearman(x, y), "low": lo, "high": hi})
    return pd.DataFrame(rows).set_index("signal")


def most_informative(table: pd.DataFrame, bits: Sequence[int]) -> str | None:
    """The uniform bit width whose mean surviving share lies nearest one half (where deaths discriminate most)."""
    shares = {b: table.loc[table["model"] == f"uniform {b} bits", "share"].mean() for b in bits}
    shares = {b: v for b, v in shares.items() if not np.isnan(v)}
    return f"uniform {min(shares, key=lambda b: abs(shares[b] - 0.5))} bits" if shares else None


def beside_anchors(table: pd.DataFrame, dense_perplexity: float, anchors: dict) -> pd.DataFrame:
    """Our uniform INT6 and INT7 rows beside the anchors of arXiv 2606.03002: the surviving share at
    6 bits, the degraded share and the perplexity change at 7 bits (ours: the mean over the SAEs, and
    the range across them)."""
    rows = []
    for bits, what, col in ((6, "surviving", "share"), (7, "degraded", "degraded")):
        sub = table[table["model"] == f"uniform {bits} bits"]
        if sub.empty:
            continue
        theirs = {k: v for k, v in anchors.items() if f"INT{bits}" in k and what in k}
        rows.append(
            {
                "measure": f"INT{bits}: share of active features {what}",
                "ours (mean over SAEs)": sub[col].mean(),
                "ours (range)": f"{sub[col].min():.3f} to {sub[col].max():.3f}",
                "theirs": "; ".join(f"{k.split(':')[0]} {v}" for k, v in theirs.items()),
            }
        )
        if bits == 7:
            rows.append(
                {
                    "measure": "INT7: perplexity change (compressed / dense - 1)",
                    "ours (mean over SAEs)": sub["perplexity"].iloc[0] / dense_perplexity - 1,
                    "ours (range)": "",
                    "theirs": "; ".join(f"{k.split(':')[0]} {v}" for k, v in anchors.items() if "perplexity" in k),
                }
            )
    columns = ["measure", "ours (mean over SAEs)", "ours (range)", "theirs"]
    return pd.DataFrame(rows, columns=columns).set_index("measure")  # empty without 6- or 7-bit rows
