"""Head operations: structured pruning of whole attention heads, and per-head sparsity.

An attention layer is a sum of heads, so a head is the natural unit of structured pruning
(Michel et al. 2019, "Are Sixteen Heads Really Better than One?"). In the linear view head ``h``
owns columns ``h*d_head:(h+1)*d_head`` of ``W_Q``, ``W_K`` and ``W_V`` and the same rows of
``W_O`` (:func:`analysis.compress.linear.head_slices`). Under grouped-query attention (SmolLM2:
9 query heads, 3 key-value heads) ``g = n_heads / n_kv`` consecutive query heads share one K/V
slice. :class:`PruneHeads` therefore removes a query head by zeroing its ``W_Q`` columns and
``W_O`` rows (its output is then exactly zero), and a K/V slice only when every query head of
its group goes. :class:`HeadSparsity` prunes inside each head's slice at its own fraction, by
magnitude or by Wanda's ``|w| * ||x||`` score (Sun et al. 2023). A shared K/V slice either takes
the mean of its query heads' fractions (``shared_kv="mean"``, for allocations over every head) or
is left alone (``shared_kv="keep"``: only the heads' own W_Q columns and W_O rows are pruned, so
pruning one head never touches another head's computation; at fraction 1 this is exactly
zero-ablating the head's ``hook_z``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from analysis.components import ATTN_WEIGHTS
from analysis.compress.linear import from_head_slices, head_slices, weight_kind
from analysis.compress.plan import Calibration, Stored, check_fraction
from analysis.hooks import input_hook


def _head_layout(stored: Stored, name: str, calibration: Calibration | None) -> tuple[str, int, int, int]:
    """``(kind, units, d_head, group)`` of an attention weight: heads along columns (Q/K/V) or rows (O)."""
    kind = weight_kind(name)
    if kind not in ATTN_WEIGHTS:
        raise ValueError(f"Head operations apply to attention weights {ATTN_WEIGHTS}, not {name!r}.")
    cfg = getattr(getattr(calibration, "model", None), "cfg", None)
    if cfg is None:
        raise ValueError(f"Head operations on {name!r} need the model (its n_heads and d_head) in the calibration.")
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    width = stored.weight.shape[0] if kind == "W_O" else stored.weight.shape[1]
    return kind, width // cfg.d_head, cfg.d_head, cfg.n_heads // n_kv


@dataclass(frozen=True)
class PruneHeads:
    """Structured pruning of whole query heads (indices within the layer).

    Zeroes each head's W_Q columns and W_O rows; a K/V slice goes only when all the query heads
    sharing it go. Removed slices are not stored at all (the rest is a smaller dense matrix).
    """

    heads: tuple[int, ...]

    def __call__(self, stored: Stored, *, name: str = "", calibration: Calibration | None = None) -> Stored:
        kind, units, d_head, group = _head_layout(stored, name, calibration)
        gone = set(int(h) for h in self.heads)
        if kind in ("W_K", "W_V"):
            gone = {u for u in range(units) if all(u * group + i in gone for i in range(group))}
        bad = [h for h in gone if not 0 <= h < units]
        if bad:
            raise ValueError(f"{name}: head indices {bad} are outside 0..{units - 1}.")
        keep_units = torch.ones(units, dtype=torch.bool)
        keep_units[list(gone)] = False
        keep = from_head_slices(
            keep_units[:, None].expand(units, stored.weight.numel() // units), kind, d_head, stored.weight
        )
        n_values = int(round(stored.n_values * int(keep_units.sum()) / units))
        mask = None if stored.mask is None else stored.mask & keep
        return dataclasses.replace(stored, weight=stored.weight * keep, n_values=n_values, mask=mask)


@dataclass(frozen=True)
class HeadSparsity:
    """Per-head unstructured pruning: within head h's slice, zero ``fractions[h]`` of the entries
    with the smallest score (``|w|``, or Wanda's ``|w| · ‖x_i‖₂`` with ``criterion="wanda"``,
    which needs the calibration statistic ``"xnorm:<input hook>"``). With ``shared_kv="mean"`` a
    grouped K/V slice takes the mean fraction of its query heads; with ``shared_kv="keep"``
    W_K and W_V are untouched (a head's own slices only: its W_Q columns and W_O rows).
    """

    fractions: tuple[float, ...]
    criterion: Literal["magnitude", "wanda"] = "magnitude"
    shared_kv: Literal["mean", "keep"] = "mean"

    def __post_init__(self):
        for f in self.fractions:  # 1 removes that head's slices (as PruneHeads), not the whole layer
            if float(f) != 1.0:
                check_fraction(f, "HeadSparsity fraction")
        if self.criterion not in ("magnitude", "wanda"):
            raise ValueError(f"criterion must be 'magnitude' or 'wanda', got {self.criterion!r}.")
        if self.shared_kv not in ("mean", "keep"):
            raise ValueError(f"shared_kv must be 'mean' or 'keep', got {self.shared_kv!r}.")

    def __call__(self, stored: Stored, *, name: str = "", calibration: Calibration | None = None) -> Stored:
        kind, units, d_head, group = _head_layout(stored, name, calibration)
        n_heads = units * (group if kind in ("W_K", "W_V") else 1)
        if len(self.fractions) != n_heads:
            raise ValueError(f"{name}: {len(self.fractions)} fractions given for {n_heads} heads.")
        if kind in ("W_K", "W_V") and self.shared_kv == "keep":
            return stored
        fr = torch.tensor(self.fractions, dtype=torch.float64)
        if kind in ("W_K", "W_V"):
            fr = fr.view(units, group).mean(1)
        w = stored.weight.detach()
        score = w.abs()
        if self.criterion == "wanda":
            norm = calibration.require(
                f"xnorm:{input_hook(name, calibration.model)}", "HeadSparsity(criterion='wanda')"
            )
            score = score * norm.to(score)[:, None]
        su = head_slices(score, kind, d_head)
        keep_u = torch.ones_like(su, dtype=torch.bool)
        for u in range(units):
            k = int(round(float(fr[u]) * su.shape[1]))
            if k:
                keep_u[u, su[u].argsort(stable=True)[:k]] = False
        keep = from_head_slices(keep_u, kind, d_head, w)
        if stored.mask is not None:
            keep &= stored.mask
        return dataclasses.replace(stored, weight=stored.weight * keep, mask=keep)
