"""Saving and loading SAEs in sae-lens's own format, checked against the model they are used on.

An SAE is only meaningful on the activations it was trained on: the same model, the same hook,
the same head and the same width. sae-lens stores that in each SAE's ``cfg.metadata``
(``model_name``, ``hook_name``, ``hook_head_index``), next to ``sae_weights.safetensors``; a
folder written by :func:`save_saes` therefore reopens with sae-lens's ``SAE.load_from_disk`` as
well as with :func:`load_saes`. Loading checks the metadata against the model and raises
:class:`SAEMismatchError`, naming every mismatch, rather than returning an SAE that would
silently encode the wrong activations.

A folder holds one sub-folder per SAE (its key with ``:`` replaced by ``_``) and an
``index.json`` mapping keys to sub-folders; it is written to a temporary folder and renamed
into place, so an interrupted save leaves either the old set or none.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from sae_lens import SAE
from transformer_lens import HookedTransformer

from analysis import hooks
from analysis.sae.stream import sae_keys


class SAEMismatchError(ValueError):
    """An SAE was trained for another model, hook or width than the one it is used with."""


def save_saes(saes: dict[str, Any], folder: Path | str) -> Path:
    """Save each SAE in sae-lens's inference format under ``folder/<key>/`` (atomically as a whole)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for key, sae in saes.items():
            path = tmp / key.replace(":", "_")
            if hasattr(sae, "save_inference_model"):
                sae.save_inference_model(path)
            else:
                sae.save_model(path)
        (tmp / "index.json").write_text(json.dumps({k: k.replace(":", "_") for k in saes}))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def check_sae(sae, model: HookedTransformer, hook_name: str, head: int | None = None) -> None:
    """Raise :class:`SAEMismatchError`, naming the mismatch, unless ``sae`` was trained for this
    model's ``hook_name`` (and head) with a matching width."""
    meta = sae.cfg.metadata
    want_d = model.cfg.d_head * (model.cfg.n_heads if head is None else 1)
    problems = []
    if meta.model_name != model.cfg.model_name:
        problems.append(f"model {meta.model_name!r} (expected {model.cfg.model_name!r})")
    if meta.hook_name != hook_name:
        problems.append(f"hook {meta.hook_name!r} (expected {hook_name!r})")
    if meta.hook_head_index != head:
        problems.append(f"head index {meta.hook_head_index!r} (expected {head!r})")
    if sae.cfg.d_in != want_d:
        problems.append(f"d_in {sae.cfg.d_in} (expected {want_d})")
    if problems:
        raise SAEMismatchError(
            "This SAE was trained for " + ", ".join(problems) + "; train one for "
            f"{model.cfg.model_name!r} at {hook_name!r} (analysis.sae.train_saes)."
        )


def load_sae(path: Path | str, model: HookedTransformer, hook_name: str, head: int | None = None):
    """An SAE saved in sae-lens format (``SAE.load_from_disk``), checked against model and hook."""

    sae = SAE.load_from_disk(str(path), device=str(model.cfg.device))
    check_sae(sae, model, hook_name, head)
    return sae.eval()


def load_saes(
    folder: Path | str, model: HookedTransformer, granularity: str = "layer", layers: Sequence[int] | None = None
) -> dict[str, Any]:
    """All SAEs saved by :func:`save_saes`, each checked against ``model``."""
    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    out = {}
    for key, l, h in sae_keys(model, granularity, layers):
        if key not in index:
            raise SAEMismatchError(f"No SAE for {key!r} in {folder}; it holds {sorted(index)[:4]}….")
        out[key] = load_sae(folder / index[key], model, hooks.z(l), h)
    return out
