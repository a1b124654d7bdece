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

import pandas as pd
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.cache import cached, tensors_hash
from analysis.models import model_key
from analysis.progress import progress
from analysis.sae import survival
from analysis.studies.synthesis.allocate import Allocation

CACHE_VERSION = 1


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
            return {h: survival.survival(dense[h], comp[h]).summary() for h in saes}

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
    return pd.DataFrame(rows).set_index("measure")
