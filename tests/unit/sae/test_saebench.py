"""SAEBench metrics against sae-lens's own evals, and sparse probing against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.forward import windows
from analysis.probing import fit_probe
from analysis.sae import activations, adaptive, saebench

BOS = 0


def _seqs(n=6, context=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return windows(torch.randint(1, 50, (n * (context - 1),), generator=g), context, BOS)


def _saes(d):
    torch.manual_seed(0)
    ac = adaptive.AdaptiveCompressSAE(adaptive.AdaptiveCompressSAEConfig(d_in=d, d_sae=2 * d, relu=True))
    ac.importance.uniform_(0, 1)
    ac.importance[:5] = 0  # some latents off: dead
    topk = activations.baseline("topk", d, 2 * d, k=4)
    return {"adaptive": ac, "topk": topk}


def _reference_metrics(sae, model, seqs):
    """sae-lens's own sparsity and variance metrics of ``sae`` on ``seqs`` in one batch, BOS ignored."""
    from sae_lens.evals import get_sparsity_and_variance_metrics
    from sae_lens.training.activation_scaler import ActivationScaler

    return get_sparsity_and_variance_metrics(
        sae,
        model,
        saebench.TokenBatches(seqs),
        ActivationScaler(),
        n_batches=1,
        compute_l2_norms=False,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
        eval_batch_size_prompts=len(seqs),
        model_kwargs={},
        ignore_tokens=[BOS],
    )


@pytest.mark.parametrize("kind", ["adaptive", "topk"])
def test_metrics_equal_sae_lens_evals_on_the_same_sae_and_tokens(tiny_model, kind):
    seqs = _seqs()
    sae = _saes(tiny_model.cfg.d_model)[kind]
    sae.cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    acts = activations.collect_resid(tiny_model, seqs, [1], bos=BOS)[1]
    ours = saebench.sparsity_and_variance(sae, acts, batch=7, legacy_batch=len(acts))
    ref, feats = _reference_metrics(sae, tiny_model, seqs)
    assert ours["tokens"] == len(seqs) * 11
    for a, b in [
        ("L0", "l0"),
        ("L1", "l1"),
        ("MSE", "mse"),
        ("explained variance", "explained_variance"),
        ("explained variance (legacy)", "explained_variance_legacy"),
    ]:
        assert ours[a] == pytest.approx(ref[b], rel=1e-4, abs=1e-6), a
    density = np.asarray(feats["feature_density"])
    assert ours["dead fraction"] == pytest.approx(float((density == 0).mean()))
    assert ours["dense fraction"] == pytest.approx(float((density > saebench.DENSE).mean()))
    if kind == "adaptive":
        assert ours["dead fraction"] >= 5 / sae.cfg.d_sae


def test_a_perfect_reconstruction_scores_one_and_zero_ablation_costs(tiny_model):
    d = tiny_model.cfg.d_model
    sae = adaptive.AdaptiveCompressSAE(adaptive.AdaptiveCompressSAEConfig(d_in=d, d_sae=4, skip=1.0))
    with torch.no_grad():
        sae.W_dec.zero_()  # decode(encode(x)) == x exactly
    out = saebench.downstream(tiny_model, sae, 0, _seqs(), batch_prompts=3, bos=BOS)
    assert out["kl_div_with_sae"] == pytest.approx(0.0, abs=1e-6)
    assert out["kl_div_with_ablation"] > 0
    assert out["kl_div_score"] == pytest.approx(1.0, rel=1e-5)
    assert out["ce_loss_score"] == pytest.approx(1.0, rel=1e-4)
    half = adaptive.AdaptiveCompressSAE(adaptive.AdaptiveCompressSAEConfig(d_in=d, d_sae=4, skip=0.5))
    with torch.no_grad():
        half.W_dec.zero_()
    worse = saebench.downstream(tiny_model, half, 0, _seqs(), batch_prompts=3, bos=BOS)
    assert worse["kl_div_with_sae"] > 0 and worse["kl_div_score"] < 1


def test_fit_probe_matches_scikit_learn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, d = 240, 6
    X = rng.normal(size=(n, d))
    y = (X @ rng.normal(size=d) + 0.8 * rng.normal(size=n) > 0).astype(int)
    train, test = np.arange(160), np.arange(160, n)
    l2 = 1e-2
    ours = fit_probe(torch.tensor(X), torch.tensor(y), torch.tensor(train), torch.tensor(test), l2=l2, steps=500)
    # ours: mean CE + l2 ||W||^2 over two softmax columns = binary logistic with (l2 / 2) ||w||^2
    mu, sd = X[train].mean(0), X[train].std(0, ddof=1)
    Z = (X - mu) / sd
    ref = LogisticRegression(C=1 / (l2 * len(train)), tol=1e-10, max_iter=10_000).fit(Z[train], y[train])
    assert ours == pytest.approx(ref.score(Z[test], y[test]), abs=1 / len(test) + 1e-9)


def test_top_k_selection_finds_the_informative_latents_and_probes_read_them():
    g = torch.Generator().manual_seed(0)
    n = 200
    y = torch.arange(n) % 2
    X = torch.rand(n, 30, generator=g)
    X[:, 7] += 2.0 * y
    X[:, 3] -= 1.0 * y
    assert saebench.top_k_latents(X, y, 2).tolist() == [7, 3]
    groups = [f"g{i}" for i in range(n)]
    rows = saebench.sparse_probe({"sae": X}, y, groups, saebench.ProbeSetup(ks=(1, 5)))
    acc = {(r["features"], r["k"]): r["accuracy"] for r in rows}
    assert acc[("sae", 1)] > 0.95
    noise = saebench.sparse_probe({"sae": torch.rand(n, 30, generator=g)}, y, groups, saebench.ProbeSetup(ks=(1,)))
    assert noise[0]["accuracy"] < 0.8


def test_one_vs_rest_problems_are_balanced():
    labels = [0] * 10 + [1] * 4 + [2] * 6
    problems = saebench.one_vs_rest(labels, 3)
    assert [c for c, _, _ in problems] == [0, 1, 2]
    for c, rows, yb in problems:
        assert yb.sum() == len(yb) / 2
        assert all((labels[r] == c) == bool(b) for r, b in zip(rows, yb))
    assert len(saebench.one_vs_rest([0, 1, 1, 0], 2)) == 1


def test_top_k_needs_both_classes():
    with pytest.raises(ValueError, match="both positive and negative"):
        saebench.top_k_latents(torch.rand(4, 3), torch.ones(4), 1)


def test_latent_stats_count_signed_codes_as_sae_lens_does(tiny_model):
    """A latent is active when non-zero (sae-lens), not only when positive: on a signed code the old count
    gave about half the L0 and extra dead latents."""

    from analysis import sae as sae_mod

    d = tiny_model.cfg.n_heads * tiny_model.cfg.d_head
    torch.manual_seed(0)
    signed = adaptive.AdaptiveCompressSAE(adaptive.AdaptiveCompressSAEConfig(d_in=d, d_sae=2 * d, relu=False))
    signed.importance.uniform_(0.5, 1)
    signed.importance[:5] = 0  # dead
    signed.cfg.metadata.hook_name = "blocks.0.attn.hook_z"
    seqs = _seqs(n=5)
    key = sae_mod.sae_key(0)
    ours = sae_mod.latent_stats(tiny_model, {key: signed}, {"all": seqs.flatten()}, context=seqs.shape[1])
    ref, feats = _reference_metrics(signed, tiny_model, seqs)
    density = torch.tensor(feats["feature_density"], dtype=torch.float64)
    assert ours.l0(key) == pytest.approx(ref["l0"], rel=1e-5)
    assert torch.equal(ours.alive(key), density > 0)
    torch.testing.assert_close(ours.fires[key][0] / ours.n_tokens[0], density, rtol=1e-5, atol=1e-8)
    assert (ours.sums[key] >= 0).all()  # absolute activations: a density mass
    with torch.no_grad():  # the code is signed, so counting only positive latents would be far off
        z = signed.encode(torch.randn(64, d))
    assert (z < 0).any() and (z > 0).any()


def test_downstream_scores_every_sequence_and_counts_tokens_exactly(tiny_model):
    d = tiny_model.cfg.d_model
    half = adaptive.AdaptiveCompressSAE(adaptive.AdaptiveCompressSAEConfig(d_in=d, d_sae=4, skip=0.5))
    with torch.no_grad():
        half.W_dec.zero_()
    seqs = _seqs(n=7)  # 7 sequences in batches of 3: 3, 3 and 1
    batched = saebench.downstream(tiny_model, half, 0, seqs, batch_prompts=3, bos=BOS)
    whole = saebench.downstream(tiny_model, half, 0, seqs, batch_prompts=7, bos=BOS)
    first6 = saebench.downstream(tiny_model, half, 0, seqs[:6], batch_prompts=6, bos=BOS)
    assert batched["kl_tokens"] == whole["kl_tokens"] == 7 * (seqs.shape[1] - 1)  # every position but BOS
    for name in ("kl_div_with_sae", "kl_div_with_ablation", "ce_loss_with_sae", "ce_loss_with_ablation"):
        assert batched[name] == pytest.approx(whole[name], rel=1e-5), name
    assert batched["kl_div_with_sae"] != pytest.approx(first6["kl_div_with_sae"], rel=1e-6)  # the 7th counts
    batches = saebench.TokenBatches(seqs)
    assert [len(batches.get_batch_tokens(3)) for _ in range(3)] == [3, 3, 1]
    with pytest.raises(IndexError):
        batches.get_batch_tokens(3)
