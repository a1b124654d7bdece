"""analysis.evaluate on SmolLM2, against plain transformers."""

from __future__ import annotations

import math

import pytest
import torch

from analysis.evaluate import (
    fact_recall,
    perplexity,
)


@pytest.mark.parametrize("context,stride", [(128, 128), (128, 64)])
def test_perplexity_equals_plain_transformers(smollm2, smollm2_hf, eval_tokens, context, stride):
    hf, _ = smollm2_hf
    ours = perplexity(smollm2, eval_tokens, context=context, stride=stride, batch_size=4)
    ref = hf_guide_perplexity(hf, eval_tokens, context, stride)
    assert abs(ours - ref) / ref < 1e-3
    assert 1.5 < ours < 200  # a trained model on English prose, not a random one


def test_fact_recall_on_known_and_wrong_targets(smollm2):
    prompts = ["The Eiffel Tower is located in the city of"] * 2
    got = fact_recall(smollm2, prompts, [" Paris", " Berlin"])
    assert got.tolist() == [True, False]


def test_prompt_longer_than_context_is_rejected(smollm2):
    with pytest.raises(ValueError, match="longer than the context"):
        fact_recall(smollm2, ["word " * 9000], [" x"])


def hf_guide_perplexity(hf, tokens: torch.Tensor, context: int, stride: int) -> float:
    """The Hugging Face perplexity guide's loop: labels of already-scored tokens set to -100."""
    nll_sum, n_scored, prev_end = 0.0, 0, 0
    n = tokens.numel()
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        trg_len = end - prev_end
        ids = tokens[begin:end].unsqueeze(0)
        labels = ids.clone()
        labels[:, :-trg_len] = -100
        with torch.inference_mode():
            loss = hf(ids, labels=labels).loss
        k = (labels[:, 1:] != -100).sum().item()
        nll_sum += loss.item() * k
        n_scored += k
        prev_end = end
        if end == n:
            break
    return math.exp(nll_sum / n_scored)
