"""analysis.evaluate on tiny random models, against hand loops."""

from __future__ import annotations

import pytest
import torch

from analysis.evaluate import (
    kl_to_base,
    lm_score,
    logit_lens,
    perplexity,
    sliding_windows,
)


def test_windows_score_every_token_once():
    for n, c, s in [(600, 128, 128), (600, 128, 64), (130, 128, 100), (5, 128, 128), (600, 128, 1)]:
        scored = []
        for b, e, k in sliding_windows(n, c, s):
            assert e - b <= c and k <= e - b - 1
            scored += list(range(e - k, e))
        if s < c:  # overlapping windows score every token after the first, once
            assert scored == list(range(1, n))
        else:  # disjoint windows skip each window's first token
            assert scored == [i for i in range(1, n) if i % c != 0]


def test_accuracy_matches_hand_count(tiny_model):
    tokens = torch.randint(0, 50, (200,), generator=torch.Generator().manual_seed(1))
    score = lm_score(tiny_model, tokens, context=50, stride=50)
    with torch.inference_mode():
        logits = tiny_model(tokens[:200].view(4, 50), return_type="logits")
    target = tokens.view(4, 50)[:, 1:]
    assert score.n_tokens == 4 * 49
    assert score.accuracy == pytest.approx((logits[:, :-1].argmax(-1) == target).float().mean().item())
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 50), target.reshape(-1))
    assert score.nll == pytest.approx(nll.item(), rel=1e-5)


def test_kl_is_zero_to_itself_and_positive_to_another(tiny_model):
    from transformer_lens import HookedTransformer

    tokens = torch.randint(0, 50, (128,), generator=torch.Generator().manual_seed(2))
    assert kl_to_base(tiny_model, tiny_model, tokens, context=32) == pytest.approx(0.0, abs=1e-6)
    other = HookedTransformer(tiny_model.cfg.__class__(**{**tiny_model.cfg.to_dict(), "seed": 1})).eval()
    assert kl_to_base(other, tiny_model, tokens, context=32) > 1e-3


def test_logit_lens_last_layer_is_the_model(tiny_model):
    tokens = torch.randint(0, 50, (128,), generator=torch.Generator().manual_seed(3))
    lens = logit_lens(tiny_model, tokens, context=32)
    score = lm_score(tiny_model, tokens, context=32)
    assert lens["accuracy"].shape == (tiny_model.cfg.n_layers,)
    assert lens["accuracy"][-1].item() == pytest.approx(score.accuracy)
    assert lens["nll"][-1].item() == pytest.approx(score.nll, rel=1e-5)


def test_bad_input_is_explained(tiny_model):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(tiny_model, torch.tensor([1]), context=32)
    with pytest.raises(ValueError, match="context window"):
        perplexity(tiny_model, torch.arange(100) % 50, context=1000)
    with pytest.raises(ValueError, match="stride"):
        perplexity(tiny_model, torch.arange(100) % 50, context=32, stride=64)


def test_right_padding_leaves_real_positions_unchanged(tiny_model):
    from analysis.forward import right_pad

    seqs = [torch.tensor([1, 2, 3, 4, 5]), torch.tensor([6, 7]), torch.tensor([8, 9, 10])]
    batch, lengths = right_pad(seqs, pad=0)
    assert batch.tolist()[1] == [6, 7, 0, 0, 0] and lengths.tolist() == [5, 2, 3]
    with torch.inference_mode():
        padded = tiny_model(batch, return_type="logits")
        for i, s in enumerate(seqs):
            torch.testing.assert_close(padded[i, : len(s)], tiny_model(s[None], return_type="logits")[0])
    with pytest.raises(ValueError, match="no sequences"):
        right_pad([])


def test_final_logits_finish_the_forward(tiny_model):
    from analysis.forward import final_logits

    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        logits, cache = tiny_model.run_with_cache(tokens)
        got = final_logits(tiny_model, cache["blocks.1.hook_resid_post"])
    torch.testing.assert_close(got, logits, rtol=1e-5, atol=1e-5)


def test_perplexity_interval_resamples_windows(tiny_model):
    tokens = torch.randint(0, 50, (640,), generator=torch.Generator().manual_seed(5))
    score = lm_score(tiny_model, tokens, context=32)
    assert len(score.window_nll) == 20 and sum(score.window_tokens) == score.n_tokens
    assert sum(score.window_nll) / score.n_tokens == pytest.approx(score.nll, rel=1e-6)
    lo, hi = score.perplexity_interval(n_boot=500)
    assert lo < score.perplexity < hi
    with pytest.raises(ValueError, match="at least 2"):
        lm_score(tiny_model, tokens[:32], context=32).perplexity_interval()


def test_a_batch_of_rows_is_not_silently_joined_into_one_stream(tiny_model):
    from analysis.evaluate import Reference, kl_to_base

    rows = (torch.arange(128) % 50).view(2, 64)
    for call in (
        lambda: perplexity(tiny_model, rows, context=32),
        lambda: kl_to_base(tiny_model, tiny_model, rows, context=32),
        lambda: Reference(tiny_model, rows, context=32),
    ):
        with pytest.raises(ValueError, match=r"batch of shape \(2, 64\).*tokens.flatten\(\)"):
            call()
    one_row = rows[:1]  # what model.to_tokens gives for one text: still one stream
    assert perplexity(tiny_model, one_row, context=32) == perplexity(tiny_model, one_row[0], context=32)


def test_empty_fact_prompts_are_refused(tiny_model):
    from analysis.evaluate import fact_recall

    with pytest.raises(ValueError, match=r"empty or not text \(at positions \[1\]\).*Drop those facts"):
        fact_recall(tiny_model, ["The capital of France is", "  "], [" Paris", " Rome"])
