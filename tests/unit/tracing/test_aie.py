"""analysis.tracing.aie: averaging by token role, skipped facts, and the per-component effects."""

from __future__ import annotations

import pytest
import torch

from analysis import stats, tracing
from analysis.scores import ComponentScores


def test_wrong_clean_prediction_is_reported_and_skipped(gpt2_like, random_tokens):
    tokens = random_tokens(seed=8, n=8)
    top = int(gpt2_like(tokens[None])[0, -1].argmax())
    facts = [
        {"prompt": tokens, "subject": (2, 4), "target": top},
        {"prompt": tokens, "subject": (2, 4), "target": (top + 1) % 50},
        {"prompt": tokens, "subject": (3, 5), "target": top},
    ]
    aie = tracing.average_indirect_effect(gpt2_like, facts, noise=0.5, n_samples=2, cache=False)
    assert aie.n_facts == 2 and len(aie.skipped) == 1
    assert "is not the target" in aie.skipped[0].reason
    manual = torch.stack([t.indirect_effect("mlp")[:, t.subject_span[1] - 1] for t in aie.traces])
    last_subject = tracing.ROLES.index("last subject")
    assert torch.allclose(aie.mean("mlp")[last_subject], manual.mean(0), atol=1e-7)
    assert aie.counts("mlp")[tracing.ROLES.index("further")] == 2
    ci = aie.ci("mlp")
    assert torch.isfinite(ci[last_subject]).all() and (ci[last_subject] >= 0).all()


def test_component_scores_from_single_state_traces(gpt2_like, random_tokens):
    facts = [{"prompt": random_tokens(seed=s, n=8), "subject": (2, 4), "target": None} for s in range(10, 18)]
    aie = tracing.average_indirect_effect(
        gpt2_like, facts, ("attn", "mlp"), noise=0.5, n_samples=2, window=1, cache=False
    )
    info = ComponentScores.from_aie(aie)
    assert info.values.shape == (4, 2) and info.samples.shape == (8, 4, 2)
    assert info.kinds == ("attn", "mlp") and info.name == "causal tracing"
    t = aie.traces[0]
    assert torch.allclose(info.samples[0, :, 1], t.indirect_effect("mlp")[:, 2:].amax(1))
    assert torch.allclose(info.samples[0, :, 0], t.indirect_effect("attn")[:, 2:].amax(1))
    assert torch.allclose(info.values, info.samples.mean(0).double())
    total = ComponentScores.from_aie(aie, reduce="sum")
    assert torch.allclose(total.samples[3, :, 1], aie.traces[3].indirect_effect("mlp")[:, 2:].sum(1))
    # the seed's pooled levels: z over all 8 components
    z = (info.values - info.values.mean()) / info.values.std()
    pooled = info.levels(by_kind=False)
    for (l, k), v in zip([(l, k) for l in range(4) for k in range(2)], z.reshape(-1).tolist()):
        expect = "high" if v > 0.5 else "low" if v < -0.5 else "medium"
        assert pooled[f"blocks.{l}.{info.kinds[k]}"] == expect


def test_split_half_is_the_rank_correlation_of_two_halves():
    gen = torch.Generator().manual_seed(0)
    base = torch.arange(8, dtype=torch.float32).reshape(4, 2)
    same = ComponentScores("same", base.double(), samples=base.expand(6, 4, 2))
    assert torch.equal(same.split_half(n_splits=5), torch.ones(5))  # every fact agrees: rho = 1
    samples = torch.randn(10, 4, 2, generator=gen)
    s = ComponentScores("noisy", samples.mean(0).double(), samples=samples)
    halves = s.split_half(n_splits=3, seed=4)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(4))  # the first split
    expect = stats.spearman(samples[perm[:5]].mean(0), samples[perm[5:]].mean(0))
    assert abs(float(halves[0]) - expect) < 1e-6
    assert len(set(halves.tolist())) > 1  # different splits, different halves


def test_component_effects_need_attention_and_mlp_traces(gpt2_like, random_tokens):
    facts = [{"prompt": random_tokens(seed=20, n=8), "subject": (2, 4), "target": None}]
    aie = tracing.average_indirect_effect(gpt2_like, facts, ("resid",), noise=0.5, n_samples=2, cache=False)
    with pytest.raises(ValueError, match="trace the kinds 'attn' and 'mlp'"):
        aie.component_effects()
