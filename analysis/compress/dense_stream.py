"""The dense residual stream entering one layer, held so that a compressed layer's cost needs only the rest.

Compressing a unit of layer ``l`` leaves every earlier layer's output unchanged, so the dense
model's ``blocks.{l}.hook_resid_pre`` can be computed once, advanced one block at a time as the
oracle's cells go down the layers (:meth:`DenseStream.at`), and each cell runs only layers
``l..L-1`` (``start_at_layer``). :class:`DenseStream` holds it for any token sequences: the eval
windows (a ``[window, context]`` tensor, scored by :meth:`DenseStream.nll`) or prompts of different
lengths (a list of 1-D token tensors, e.g. fact prompts or MMLU questions), which it sorts by length
and right-pads batch by batch (:func:`analysis.forward.right_pad`). With causal attention, right
padding leaves every real position as it is unpadded, so :meth:`DenseStream.last` reads each
prompt's next-token prediction at its last real position.

It costs ``tokens x d_model x 4`` bytes (padding included): 12 MB for 5,120 tokens of SmolLM2.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.forward import pad_id, right_pad


def summed_nll(
    logits: Float[Tensor, "batch pos d_vocab"],
    x: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, " batch"]:
    """Summed next-token NLL of each row over its first ``lengths`` tokens (default: all), float64 on the CPU."""
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten().to(logits.device), reduction="none")
    nll = nll.view(len(x), -1)
    if lengths is not None:
        pos = torch.arange(1, x.shape[1], device=nll.device)
        nll = nll * (pos[None] < lengths.to(nll.device)[:, None])
    return nll.double().sum(-1).cpu()


class DenseStream:
    """The dense residual stream entering one layer for every sequence, advanced block by block
    (:meth:`at`), and what the model run from that layer on gives: each sequence's summed NLL
    (:meth:`nll`) or its final residual at its last real position (:meth:`last`).

    ``tokens``: ``[n, pos]`` token windows (kept in order, ``batch_size`` rows a batch), or a sequence
    of 1-D token tensors of any lengths (sorted by length, right-padded with the tokenizer's pad id
    per batch); results always come back in the given order."""

    def __init__(self, model: HookedTransformer, tokens: Int[Tensor, "n pos"] | Sequence[Tensor], batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        seqs = [torch.as_tensor(t).reshape(-1) for t in tokens]
        if any(len(s) == 0 for s in seqs):
            raise ValueError("DenseStream: every sequence needs at least one token.")
        self.model = model
        self.order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # stable: windows keep their order
        chunks = [self.order[i : i + batch_size] for i in range(0, len(seqs), batch_size)]
        padded = [right_pad([seqs[j] for j in c], pad_id(model)) for c in chunks]
        self.batches = [b for b, _ in padded]
        self.lengths = [n for _, n in padded]
        self.layer: int | None = None
        self.resid: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.order)

    def _in_order(self, parts: list[Tensor]) -> Tensor:
        """Concatenated per-batch results, put back in the given order of the sequences."""
        if not parts:
            return torch.zeros(0)
        out = torch.empty_like(torch.cat(parts))
        out[torch.tensor(self.order, dtype=torch.long)] = torch.cat(parts)
        return out

    @torch.inference_mode()
    def at(self, layer: int) -> list[Float[Tensor, "batch pos d_model"]]:
        """``blocks.{layer}.hook_resid_pre`` of the dense model, one tensor per batch (sorted order)."""
        m = self.model
        if self.layer is None or self.layer > layer:
            self.resid = [m(b.to(m.cfg.device), stop_at_layer=0) for b in self.batches]
            self.layer = 0
        while self.layer < layer:
            self.resid = [m(r, start_at_layer=self.layer, stop_at_layer=self.layer + 1) for r in self.resid]
            self.layer += 1
        return self.resid

    @torch.inference_mode()
    def nll(self, layer: int) -> Float[Tensor, " seq"]:
        """Summed next-token NLL of each sequence's real tokens (every token after its first), of the
        (possibly compressed) model run from ``layer`` on."""
        parts = [
            summed_nll(self.model(r, start_at_layer=layer), b, n)
            for r, b, n in zip(self.at(layer), self.batches, self.lengths)
        ]
        return self._in_order(parts)

    @torch.inference_mode()
    def last(self, layer: int) -> Float[Tensor, "seq d_model"]:
        """The residual stream after the last block (before ``ln_final``) at each sequence's last real
        position, of the (possibly compressed) model run from ``layer`` on."""
        m, parts = self.model, []
        for r, n in zip(self.at(layer), self.lengths):
            out = m(r, start_at_layer=layer, stop_at_layer=m.cfg.n_layers)
            parts.append(out[torch.arange(len(n)), (n - 1).to(out.device)])
        return self._in_order(parts)
