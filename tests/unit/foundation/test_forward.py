"""The forward core against TransformerLens run directly: windows, streamed hooks, pooling, text
features and per-token log-probabilities."""

from __future__ import annotations

import pytest
import torch

from analysis import forward, hooks


def test_windows_are_disjoint_and_drop_the_tail():
    w = forward.windows(torch.arange(25), 8)
    assert w.shape == (3, 8) and torch.equal(w.flatten(), torch.arange(24))
    b = forward.windows(torch.arange(25), 8, bos=99)
    assert b.shape == (3, 8) and (b[:, 0] == 99).all() and torch.equal(b[:, 1:].flatten(), torch.arange(21))
    with pytest.raises(ValueError, match="at least context=8"):
        forward.windows(torch.arange(5), 8)
    with pytest.raises(ValueError, match="at least 2"):
        forward.windows(torch.arange(5), 1)


def test_stream_matches_one_run_with_cache_and_stops_early(tiny_model):
    x = torch.randint(0, tiny_model.cfg.d_vocab, (5, 12), generator=torch.Generator().manual_seed(0))
    names = [hooks.resid_post(0), hooks.z(0)]
    _, ref = tiny_model.run_with_cache(x)
    got = {n: [] for n in names}
    for batch in forward.stream(tiny_model, x, names, batch_size=2):
        for n in names:
            got[n].append(batch.acts[n])
    for n in names:
        torch.testing.assert_close(torch.cat(got[n]), ref[n], rtol=1e-5, atol=1e-6)
    assert forward.stop_layer(names) == 1
    assert forward.stop_layer([hooks.resid_post(0), "ln_final.hook_normalized"]) is None


def test_pool_mean_last_and_all():
    act = torch.arange(24, dtype=torch.float).view(2, 4, 3)
    last = torch.tensor([1, 3])
    torch.testing.assert_close(forward.pool(act, "last", last), torch.stack([act[0, 1], act[1, 3]]))
    torch.testing.assert_close(forward.pool(act, "mean", last), torch.stack([act[0, :2].mean(0), act[1].mean(0)]))
    torch.testing.assert_close(
        forward.pool(act, "mean", last, skip_first=1), torch.stack([act[0, 1], act[1, 1:].mean(0)])
    )
    assert forward.pool(act, "all") is act
    with pytest.raises(ValueError, match="pool must be"):
        forward.pool(act, "max")


def test_text_features_equal_each_text_run_alone(tiny_model, word_tokenizer):
    texts = ["a b c d e", "a", "b c"]
    tiny_model.set_tokenizer(word_tokenizer(list("abcde")))
    name = hooks.resid_post(1)
    feats = forward.text_features(tiny_model, texts, [name], "last", batch_size=3)[name]
    means = forward.text_features(tiny_model, texts, [name], "mean", batch_size=2, skip_first=1)[name]
    for i, t in enumerate(texts):
        _, cache = tiny_model.run_with_cache(tiny_model.to_tokens(t))
        torch.testing.assert_close(feats[i], cache[name][0, -1], rtol=1e-4, atol=1e-5)
        body = cache[name][0, 1:] if cache[name].shape[1] > 1 else cache[name][0, :0]
        if len(body):
            torch.testing.assert_close(means[i], body.mean(0), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="No texts"):
        forward.text_features(tiny_model, [], [name])


def test_logprobs_and_final_logits_match_the_model(tiny_model):
    x = torch.randint(0, tiny_model.cfg.d_vocab, (2, 6), generator=torch.Generator().manual_seed(1))
    logits, cache = tiny_model.run_with_cache(x)
    torch.testing.assert_close(forward.logprobs(tiny_model, x), logits.log_softmax(-1), rtol=1e-5, atol=1e-6)
    last = hooks.resid_post(tiny_model.cfg.n_layers - 1)
    torch.testing.assert_close(forward.final_logits(tiny_model, cache[last]), logits, rtol=1e-4, atol=1e-5)
