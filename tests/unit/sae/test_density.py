"""analysis.sae.density on constructed latent masses whose densities are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from analysis import sae


def test_uniform_mass_has_full_density():
    mass = torch.ones(3, 8)  # 3 groups using 8 latents alike
    d = sae.capability_density(mass)
    for part in ("breadth", "entropy", "consistency", "density"):
        assert d[part].item() == pytest.approx(1.0)


def test_one_latent_has_zero_entropy_and_minimal_breadth():
    mass = torch.zeros(2, 10)
    mass[:, 4] = 3.0
    alive = torch.ones(10, dtype=torch.bool)
    assert sae.feature_breadth(mass, alive).item() == pytest.approx(1 / 10)
    assert sae.activation_entropy(mass, alive).item() == pytest.approx(0.0)
    assert sae.cross_input_consistency(mass).item() == pytest.approx(1.0)
    assert sae.capability_density(mass, alive)["density"].item() == pytest.approx(0.0)


def test_half_the_latents():
    mass = torch.zeros(2, 8)
    mass[:, :4] = 1.0
    alive = torch.ones(8, dtype=torch.bool)
    assert sae.feature_breadth(mass, alive).item() == pytest.approx(0.5)
    assert sae.activation_entropy(mass, alive).item() == pytest.approx(math.log(4) / math.log(8))


def test_breadth_threshold_counts_latents_above_eps_of_uniform_share():
    mass = torch.tensor([[0.5, 0.45, 0.05, 0.0]])  # eps / |A| = 0.1 / 4 = 0.025
    alive = torch.ones(4, dtype=torch.bool)
    assert sae.feature_breadth(mass, alive, eps=0.1).item() == pytest.approx(0.75)
    assert sae.feature_breadth(mass, alive, eps=0.5).item() == pytest.approx(0.5)  # threshold 0.125


def test_entropy_matches_direct_formula():
    p = torch.tensor([0.5, 0.25, 0.125, 0.125])
    want = -(p * p.log()).sum() / math.log(4)
    assert sae.activation_entropy(p[None] * 7).item() == pytest.approx(want.item())


def test_disjoint_domains_have_zero_consistency():
    mass = torch.zeros(2, 6)
    mass[0, :3] = 1.0
    mass[1, 3:] = 2.0
    assert sae.cross_input_consistency(mass).item() == pytest.approx(0.0, abs=1e-12)


def test_consistency_matches_scipy_jensen_shannon():
    rng = np.random.default_rng(0)
    mass = torch.tensor(rng.random((4, 12)) * (rng.random((4, 12)) > 0.3))
    q = mass / mass.sum(-1, keepdim=True)
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    want = 1 - np.mean([jensenshannon(q[a].numpy(), q[b].numpy(), base=2) ** 2 for a, b in pairs])
    assert sae.cross_input_consistency(mass).item() == pytest.approx(want, abs=1e-10)


def test_density_is_geometric_mean_and_batches():
    rng = np.random.default_rng(1)
    mass = torch.tensor(rng.random((2, 3, 4, 16)))  # [layer, head, group, latent]
    d = sae.capability_density(mass)
    assert d["density"].shape == (2, 3)
    want = (d["breadth"] * d["entropy"] * d["consistency"]) ** (1 / 3)
    torch.testing.assert_close(d["density"], want)
    single = sae.capability_density(mass[1, 2])
    assert single["density"].item() == pytest.approx(d["density"][1, 2].item())


def test_bad_activations_give_clear_errors():
    with pytest.raises(ValueError, match="Empty activations"):
        sae.capability_density(torch.zeros(0, 5))
    with pytest.raises(ValueError, match="Empty activations"):
        sae.capability_density(torch.zeros(3, 0))
    with pytest.raises(ValueError, match="dead"):
        sae.capability_density(torch.ones(2, 4), alive=torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="dead"):
        sae.capability_density(torch.zeros(2, 4))  # nothing ever fired
    with pytest.raises(ValueError, match="two groups"):
        sae.cross_input_consistency(torch.ones(1, 4))
    mass = torch.ones(2, 4)
    mass[1] = 0
    with pytest.raises(ValueError, match="no latent mass in one evaluation group"):
        sae.cross_input_consistency(mass)
