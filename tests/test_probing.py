"""analysis.probing: probes, control tasks and splits, checked against direct computations."""

from __future__ import annotations

import pytest
import torch

from analysis import probing


pytestmark = pytest.mark.usefixtures("one_thread")


def _toy(n=200, d=16, seed=0):
    """Layer 0: noise; layer 1: linearly separable; layer 2: XOR of two coordinates (needs the MLP)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    noise = torch.randn(3, n, d, generator=g)
    feats = noise.clone()
    feats[1, :, 0] += 4 * (y.float() * 2 - 1)
    a = torch.randint(0, 2, (n,), generator=g)
    b = a ^ y
    feats[2, :, 0] = (a.float() * 2 - 1) * 2 + 0.1 * noise[2, :, 0]
    feats[2, :, 1] = (b.float() * 2 - 1) * 2 + 0.1 * noise[2, :, 1]
    texts = [f"sentence number {i} ends with w{i % 7}" for i in range(n)]
    groups = [f"g{i // 2}" for i in range(n)]
    return feats, y, texts, groups


def test_probes_read_what_is_there():
    feats, y, texts, groups = _toy()
    res = probing.probe_layers(feats, y.tolist(), groups, texts,
                               probing.ProbeConfig(seeds=(0, 1), steps=200, hidden=32, lr=2e-2))
    lin, mlp = res.mean("linear"), res.mean("mlp")
    assert lin[0] < 0.7 and mlp[0] < 0.7  # noise: near chance
    assert lin[1] > 0.95 and mlp[1] > 0.95  # linearly separable
    assert mlp[2] > 0.9 and lin[2] < 0.7  # XOR: only the 2-layer probe reads it
    assert res.acc["mlp"]["task"].shape == (3, 2)
    sel = res.selectivity("mlp")
    assert torch.allclose(sel, res.acc["mlp"]["task"] - res.acc["mlp"]["control"])
    assert res.n_train[0] + res.n_test[0] == len(y)


def test_batched_probe_equals_single_probe():
    """Training layers together gives each layer a probe as good as training it alone (they share nothing)."""
    feats, y, _, _ = _toy(n=80)
    Y = y.expand(3, -1)
    together = probing.train_probes(feats, Y, 2, hidden=8, steps=30, seed=0)(feats)
    alone = probing.train_probes(feats[1:2], Y[1:2], 2, hidden=8, steps=30, seed=0)(feats[1:2])
    assert together.shape == (3, 80, 2)
    acc_t = (together[1].argmax(-1) == y).float().mean()
    acc_a = (alone[0].argmax(-1) == y).float().mean()
    assert abs(float(acc_t - acc_a)) < 0.05


def test_control_labels_are_a_function_of_the_word_type():
    texts = ["the cat sat", "a dog sat", "it ran", "we ran", "they sat!", "Ran"]
    labels = [0, 1, 0, 1, 0, 1]
    ctrl = probing.control_labels(texts, labels, by="last_word", seed=3)
    by_type: dict[str, set] = {}
    for t, c in zip(texts, ctrl.tolist()):
        by_type.setdefault(probing.word_type(t), set()).add(c)
    assert all(len(v) == 1 for v in by_type.values())
    assert set(by_type) == {"sat", "ran"}
    assert torch.equal(ctrl, probing.control_labels(texts, labels, seed=3))  # deterministic
    # over many types the control labels follow the task's label distribution
    many = [f"w{i}" for i in range(4000)]
    lab = [0] * 3000 + [1] * 1000
    frac = probing.control_labels(many, lab, seed=0).float().mean()
    assert 0.22 < float(frac) < 0.28


def test_group_split_keeps_groups_together():
    groups = [f"g{i // 3}" for i in range(99)]
    for seed in (0, 1):
        tr, te = probing.group_split(groups, 0.8, seed)
        assert set(tr.tolist()).isdisjoint(te.tolist())
        assert len(tr) + len(te) == 99
        assert {groups[i] for i in tr}.isdisjoint({groups[i] for i in te})
        assert 0.7 < len(tr) / 99 <= 0.8
    assert not torch.equal(probing.group_split(groups, 0.8, 0)[0], probing.group_split(groups, 0.8, 1)[0])
    with pytest.raises(ValueError):
        probing.group_split(groups, 1.0)


def test_encoder_features_are_masked_means_of_the_layer_outputs():
    from analysis.models import load_model

    enc = load_model("minilm-l6")
    texts = ["A short one.", "The keys to the cabinet are on the table."]
    feats = probing.hidden_states(enc, texts, batch_size=2)
    assert feats.shape == (enc.cfg.n_layers, 2, enc.cfg.d_model)
    for i, t in enumerate(texts):  # one at a time: no padding at all
        ids = enc.tokenizer([t], return_tensors="pt")["input_ids"]
        _, cache = enc.run_with_cache(ids)
        for l in (0, enc.cfg.n_layers - 1):
            ref = cache[f"blocks.{l}.hook_normalized_resid_post"][0].mean(0)
            assert torch.allclose(feats[l, i], ref, atol=1e-5)


def test_decoder_features_are_last_token_states(smollm2):
    texts = ["The keys to the cabinet are", "Paris is"]
    feats = probing.hidden_states(smollm2, texts, batch_size=2)  # right-padded together
    for i, t in enumerate(texts):
        _, cache = smollm2.run_with_cache(smollm2.to_tokens(t), names_filter=lambda n: n.endswith("resid_post"))
        for l in (0, 29):
            assert torch.allclose(feats[l, i], cache[f"blocks.{l}.hook_resid_post"][0, -1], atol=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="no texts"):
        probing.hidden_states(None, [])
    with pytest.raises(ValueError, match="labels"):
        probing.probe_layers(torch.zeros(2, 5, 3), [0, 1], ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="control type"):
        probing.word_type("a b", by="middle")
