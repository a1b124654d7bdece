"""analysis.tracing: per-sample probabilities of exact traces, ROME's subject-token noise scale,
the bootstrap over facts, and the noise-sample convergence curve against known variances."""

from __future__ import annotations

import math

import pytest
import torch

from analysis import tracing
from analysis.tracing.convergence import variance_parts


def test_per_sample_probabilities_average_to_the_trace_and_subsets_equal_fewer_samples(gpt2_like, random_tokens):
    tokens = random_tokens(seed=3, n=8)
    kw = dict(noise=0.5, seed=4, window=3, kinds=("resid_post", "mlp", "attn"))
    full = tracing.trace(gpt2_like, tokens, (2, 4), None, n_samples=4, **kw)
    assert full.sample_restored["hook_mlp_out"].shape == (4, 4, 8)
    for hook, grid in full.restored.items():
        assert torch.allclose(full.sample_restored[hook].mean(0), grid, atol=1e-6)
    assert full.corrupted_prob == pytest.approx(float(full.sample_corrupted.mean()), rel=1e-6)
    # the first two of four seeded samples are the two samples of a two-sample trace
    two = tracing.trace(gpt2_like, tokens, (2, 4), None, n_samples=2, **kw)
    sub = full.with_samples([0, 1])
    assert sub.n_samples == 2 and sub.corrupted_prob == pytest.approx(two.corrupted_prob, rel=1e-5)
    for hook in two.restored:
        assert torch.allclose(sub.restored[hook], two.restored[hook], atol=1e-6)
    with pytest.raises(ValueError, match="indices"):
        full.with_samples([4])


def test_attribution_traces_keep_no_samples(gpt2_like, random_tokens):
    t = tracing.trace(gpt2_like, random_tokens(seed=3, n=8), (2, 4), None, noise=0.5, n_samples=2, method="attribution")
    assert t.sample_restored is None
    with pytest.raises(ValueError, match="trace it again exactly"):
        t.with_samples([0])


def test_subject_noise_scale_is_three_stds_of_the_subject_embeddings(gpt2_like, random_tokens):
    facts = [{"prompt": random_tokens(seed=s, n=8), "subject": (2, 5)} for s in range(3)]
    ids = torch.cat([f["prompt"][2:5] for f in facts])
    reference = gpt2_like.W_E[ids].std()
    assert tracing.subject_embedding_std(gpt2_like, facts) == pytest.approx(float(reference), rel=1e-5)
    assert tracing.noise_scale(gpt2_like, facts=facts) == pytest.approx(3 * float(reference), rel=1e-5)
    with pytest.raises(ValueError, match="not both"):
        tracing.noise_scale(gpt2_like, ids, facts=facts)


def synthetic(n_facts: int, n_samples: int, sd_between: float, sd_within: float) -> tracing.AIEResult:
    """Facts whose per-sample MLP effect at one state is ``mu_f + e_fs`` with known spreads."""
    gen = torch.Generator().manual_seed(0)
    L, T = 3, 4
    traces = []
    for f in range(n_facts):
        mu = 0.3 + sd_between * torch.randn(1, generator=gen)
        per = torch.full((n_samples, L, T), 0.1)
        per[:, 1, 1] += mu + sd_within * torch.randn(n_samples, generator=gen)
        samples = {"hook_mlp_out": per}
        traces.append(
            tracing.TraceResult(
                prompt=f"p{f}", subject="s", target=" t", target_id=0, tokens=("a", "b", "c", "d"),
                subject_span=(1, 2), clean_prob=0.9, corrupted_prob=0.1, clean_top=" t", clean_top_id=0,
                restored={h: g.mean(0) for h, g in samples.items()}, window=1, corruption="noise",
                n_samples=n_samples, noise=1.0, sample_restored=samples,
                sample_corrupted=torch.full((n_samples,), 0.1),
            )
        )  # fmt: skip
    return tracing.AIEResult(("hook_mlp_out",), traces, [], {})


def test_variance_parts_recover_known_spreads():
    aie = synthetic(400, 8, sd_between=0.1, sd_within=0.2)
    effects = tracing.convergence.per_sample_effects(aie, "mlp")
    assert effects.shape == (400, 8, len(tracing.ROLES), 3)
    between, within = variance_parts(effects)
    # the state at (layer 1, pos 1) is a one-token subject: both the first and the last subject
    # token, so two role cells hold it and the sums count it twice
    assert between == pytest.approx(2 * 0.1**2, rel=0.2) and within == pytest.approx(2 * 0.2**2, rel=0.1)


def test_convergence_curve_and_choice_follow_the_variance_ratio():
    aie = synthetic(200, 6, sd_between=0.1, sd_within=0.2)  # r = within / between = 4
    curve = tracing.sample_convergence(aie, n_subsets=10)
    share = curve["hook_mlp_out sampling share"]
    assert list(curve.index) == [1, 2, 3, 4, 5, 6] and share.is_monotonic_decreasing
    assert share[1] == pytest.approx(4 / 5, rel=0.1)
    assert math.isnan(curve.loc[6, "hook_mlp_out map error"])
    assert curve["hook_mlp_out map error"].iloc[:-1].is_monotonic_decreasing
    # share(n) = (r/n) / (1 + r/n) <= 0.1  <=>  n >= 9 r: about 36 samples
    assert tracing.choose_samples(curve, 0.1) == pytest.approx(36, rel=0.25)
    assert tracing.choose_samples(curve, 0.5) == pytest.approx(4, rel=0.3)


def test_bootstrap_means_are_seeded_and_centre_on_the_mean():
    aie = synthetic(50, 2, sd_between=0.1, sd_within=0.0)
    boot = aie.bootstrap_means("mlp", n_boot=500, seed=1)
    assert boot.shape == (500, len(tracing.ROLES), 3)
    last_subject = tracing.ROLES.index("last subject")
    assert float(boot[:, last_subject, 1].mean()) == pytest.approx(float(aie.mean("mlp")[last_subject, 1]), rel=0.02)
    assert torch.allclose(boot, aie.bootstrap_means("mlp", n_boot=500, seed=1), equal_nan=True)  # seeded
