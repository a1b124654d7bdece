"""analysis.probing: probes, control tasks and splits, checked against direct computations."""

from __future__ import annotations

import numpy as np
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
    res = probing.probe_layers(
        feats, y.tolist(), groups, texts, probing.ProbeConfig(seeds=(0, 1), steps=200, hidden=32, lr=2e-2)
    )
    lin, mlp = res.mean("linear"), res.mean("mlp")
    assert lin[0] < 0.7 and mlp[0] < 0.7  # noise: near chance
    assert lin[1] > 0.95 and mlp[1] > 0.95  # linearly separable
    assert mlp[2] > 0.9 and lin[2] < 0.7  # XOR: only the 2-layer probe reads it
    assert res.acc["mlp"]["task"].shape == (3, 2)
    sel = res.selectivity("mlp")
    assert torch.allclose(sel, res.acc["mlp"]["task"] - res.acc["mlp"]["control"])
    assert res.n_train[0] + res.n_test[0] == len(y)
    # the control labels (a function of the last word, 7 types) cannot be read from these features
    assert float(res.mean("mlp", "control")[1]) < 0.8
    assert float(res.summary("mlp", [1])["selectivity"]) > 0.15


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


def _reference_logistic(X, y, k, l2):
    """The same objective (mean cross-entropy + l2 * ||W||^2 on standardised features), minimised by scipy."""
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    n, d = X.shape
    onehot = np.eye(k)[y]

    def f(theta):
        W, b = theta[: d * k].reshape(d, k), theta[d * k :]
        z = X @ W + b
        lse = logsumexp(z, axis=1)
        p = np.exp(z - lse[:, None])
        loss = np.mean(lse - (z * onehot).sum(1)) + l2 * (W**2).sum()
        gz = (p - onehot) / n
        return loss, np.concatenate([(X.T @ gz + 2 * l2 * W).ravel(), gz.sum(0)])

    res = minimize(f, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options={"maxiter": 2000, "gtol": 1e-10})
    return res.x[: d * k].reshape(d, k), res.x[d * k :]


def test_fit_probe_is_l2_logistic_regression():
    """fit_probe's L-BFGS logistic regression reaches scipy's optimum of the same objective."""
    g = torch.Generator().manual_seed(0)
    n, d, k = 120, 5, 3
    centers = torch.randn(k, d, generator=g) * 1.5
    y = torch.randint(0, k, (n,), generator=g)
    X = centers[y] + torch.randn(n, d, generator=g)
    tr, te = torch.arange(90), torch.arange(90, n)
    l2 = 1e-2
    probe = probing.train_probes(X[None, tr], y[None, tr], k, steps=200, solver="lbfgs", l2=l2)
    Xtr = X[tr].double()
    Z = ((Xtr - Xtr.mean(0)) / Xtr.std(0)).numpy()
    W, b = _reference_logistic(Z, y[tr].numpy(), k, l2)
    Zte = ((X[te].double() - Xtr.mean(0)) / Xtr.std(0)).numpy()
    ref = Zte @ W + b
    ours = probe(X[None, te])[0].double().numpy()
    # logits agree up to a per-row constant (softmax is shift invariant); compare probabilities
    p_ref = np.exp(ref - ref.max(1, keepdims=True))
    p_ref /= p_ref.sum(1, keepdims=True)
    p_ours = np.exp(ours - ours.max(1, keepdims=True))
    p_ours /= p_ours.sum(1, keepdims=True)
    assert np.abs(p_ref - p_ours).max() < 1e-3
    acc = probing.fit_probe(X, y, tr, te, l2=l2)
    assert acc == pytest.approx(float((ref.argmax(1) == y[te].numpy()).mean()))
    assert acc > 0.6  # the classes are separable well above chance (1/3)


def test_fit_probe_reads_only_what_is_there():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (200,), generator=g)
    noise = torch.randn(200, 8, generator=g)
    signal = noise.clone()
    signal[:, 3] += 3 * (y.float() * 2 - 1)
    tr, te = torch.arange(100), torch.arange(100, 200)
    assert probing.fit_probe(signal, y, tr, te) > 0.9
    assert probing.fit_probe(noise, y, tr, te) < 0.7
    assert probing.fit_probe(signal, y, tr, te, hidden=16, steps=100) > 0.9  # the MLP probe reads it too
    with pytest.raises(ValueError, match=r"features \[n, d\]"):
        probing.fit_probe(signal, y[:10], tr, te)
    with pytest.raises(ValueError, match="one training"):
        probing.fit_probe(signal, y, tr[:0], te)
    with pytest.raises(ValueError, match="solver"):
        probing.train_probes(signal[None], y[None], 2, solver="sgd")


def test_control_labels_are_a_function_of_the_word_type():
    texts = ["the cat sat", "a dog sat", "it ran", "we ran", "they sat!", "Ran"]
    labels = [0, 1, 0, 1, 0, 1]
    ctrl = probing.control_labels(texts, labels, by="last_word", seed=3)
    by_type: dict[str, set] = {}
    for t, c in zip(texts, ctrl.tolist()):
        by_type.setdefault(probing.word_type(t), set()).add(c)
    assert all(len(v) == 1 for v in by_type.values())
    assert set(by_type) == {"sat", "ran"}
    assert torch.equal(ctrl, probing.control_labels(texts, labels, by="last_word", seed=3))  # deterministic
    # over many types the control labels follow the task's label distribution
    many = [f"w{i}" for i in range(4000)]
    lab = [0] * 3000 + [1] * 1000
    frac = probing.control_labels(many, lab, by="last_word", seed=0).float().mean()
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


def test_decoder_features_are_last_token_states(tiny_model):
    """Right-padded batches give each text its own last real position (a tiny model, no tokenizer needed)."""
    from analysis.hooks import resid_post

    seqs = {"ab": torch.tensor([[1, 7, 9]]), "abcdef": torch.tensor([[1, 3, 4, 5, 6, 8]])}
    tiny_model.to_tokens = lambda t, prepend_bos=True, truncate=False: seqs[t]
    feats = probing.hidden_states(tiny_model, list(seqs), batch_size=2)
    assert feats.shape == (2, 2, 32)
    for i, toks in enumerate(seqs.values()):
        _, cache = tiny_model.run_with_cache(toks)
        for l in (0, 1):
            assert torch.allclose(feats[l, i], cache[resid_post(l)][0, -1], atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="no texts"):
        probing.hidden_states(None, [])
    with pytest.raises(ValueError, match="labels"):
        probing.probe_layers(torch.zeros(2, 5, 3), [0, 1], ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="control type"):
        probing.word_type("a b", by="middle")
    with pytest.raises(ValueError, match="vocab"):
        probing.word_type("a b", by="frequent_word")
    with pytest.raises(ValueError, match="k >= 2"):
        probing.group_folds(["a", "b"], 1)


def test_frequent_word_types_recur_where_last_words_do_not():
    """Unique last words never recur across a split; the last *frequent* word does (Hewitt & Liang's intent)."""
    fillers = ["the", "a", "of", "is", "was"]
    texts = [f"{fillers[i % 5]} cat {fillers[(i * 3) % 5]} unique{i}" for i in range(200)]
    groups = [f"g{i}" for i in range(200)]
    tr, te = probing.group_split(groups, 0.8, 0)
    last = probing.text_types(texts, "last_word")
    freq = probing.text_types(texts, "frequent_word", vocab_size=6)
    assert probing.type_coverage(last, tr.tolist(), te.tolist()) == 0.0
    assert probing.type_coverage(freq, tr.tolist(), te.tolist()) == 1.0
    assert set(freq) <= set(fillers)  # "cat" comes earlier, so the last frequent word is the filler
    assert freq[1] == fillers[3]
    ctrl = probing.control_labels(texts, [i % 2 for i in range(200)], vocab_size=6)
    for t in set(freq):  # one label per type
        assert len({int(c) for c, f in zip(ctrl, freq) if f == t}) == 1


def test_group_folds_partition_the_rows_and_hits_match_accuracy():
    feats, y, texts, groups = _toy(n=120)
    folds = probing.group_folds(groups, 4, seed=0)
    tests = torch.cat([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(120))  # every row tested exactly once
    for tr, te in folds:
        assert {groups[i] for i in tr}.isdisjoint({groups[i] for i in te})
        assert len(tr) + len(te) == 120
    res = probing.probe_layers(feats, y.tolist(), groups, texts, probing.ProbeConfig(folds=4, steps=30, hidden=8))
    assert res.acc["mlp"]["task"].shape == (3, 4)
    hits = res.hits["linear"]["task"]
    assert not torch.isnan(hits).any() and set(hits.unique().tolist()) <= {0.0, 1.0}
    n_test = torch.tensor(res.n_test, dtype=torch.float)
    pooled = (res.acc["linear"]["task"] * n_test).sum(1) / n_test.sum()
    assert torch.allclose(hits.mean(1), pooled, atol=1e-6)
    assert 0.0 <= res.coverage <= 1.0


def test_mmlu_answer_task_pairs_each_question_with_a_right_and_a_wrong_choice(monkeypatch):
    from datasets import Dataset

    from analysis.data import benchmarks

    rows = [
        {"question": f"Question {k}?", "subject": "anatomy", "choices": [f"choice {j}" for j in range(4)],
         "answer": k % 4, "id": f"test/anatomy/{k}"}
        for k in range(20)
    ]  # fmt: skip
    rows.append({**rows[0], "question": "x" * probing.MMLU_ANSWER_MAX_CHARS, "id": "test/anatomy/long"})
    monkeypatch.setattr(benchmarks, "mmlu", lambda split="test", subjects=None: Dataset.from_list(rows))
    ds = probing.load_probe_task("mmlu_answer")
    assert len(ds) == 40 and "test/anatomy/long" not in ds["group"]  # too long for the last token to be the answer
    assert ds.features["label"].names == probing.MMLU_ANSWER_LABELS
    for k in range(20):
        pair = ds.filter(lambda r: r["group"] == f"test/anatomy/{k}")
        true = [t for t, y in zip(pair["text"], pair["label"]) if y == 1]
        false = [t for t, y in zip(pair["text"], pair["label"]) if y == 0]
        assert true == [f"Q: Question {k}?\nA: choice {k % 4}"] and len(false) == 1 and false != true
    sub = probing.load_probe_task("mmlu_answer", n=11, seed=0)
    assert len(sub) == 10 and len(set(sub["group"])) == 5 and sum(sub["label"]) == 5  # whole questions
    assert sub["text"] == probing.load_probe_task("mmlu_answer", n=11, seed=0)["text"]
    with pytest.raises(ValueError, match="n must be"):
        probing.load_probe_task("mmlu_answer", n=41)


def test_probe_tasks_name_real_tasks():
    assert set(probing.PROBE_TASKS) == {"SST-2", "TruthfulQA"}  # CoLA: no acceptability data ships here
    assert probing.PROBE_TASKS["SST-2"][0] == "sst2"
