"""AdaptiveCompress on the embedded SmolLM2: sae-lens parity with a real tokenizer's BOS, and the
seed's signal blocking on real activations."""

from __future__ import annotations

import pytest
import torch

from analysis.data import lm_tokens
from analysis.forward import windows
from analysis.sae import activations, adaptive, saebench
from analysis.studies.adaptive.run import skip_only_ev


@pytest.fixture(scope="module")
def setup(smollm2):
    bos = smollm2.tokenizer.bos_token_id
    seqs = windows(lm_tokens(smollm2, "eval", 4 * 31), 32, bos)
    acts = activations.collect_resid(smollm2, seqs, [6])[6]
    return smollm2, seqs, acts


def test_bos_positions_are_left_out(setup):
    model, seqs, acts = setup
    assert len(acts) == int((seqs != model.tokenizer.bos_token_id).sum())


def test_seed_recipe_blocks_the_signal_on_real_activations(setup):
    model, seqs, acts = setup
    torch.manual_seed(0)
    sae = adaptive.AdaptiveCompressTrainingSAE(adaptive.training_config(576, 576, warmup_steps=2, decay_steps=2))
    sae, _ = activations.train(sae, acts, activations.TrainConfig(steps=6, batch_tokens=32))
    m = saebench.sparsity_and_variance(sae, acts)
    assert m["L0"] == 0 and m["dead fraction"] == 1
    assert m["explained variance"] == pytest.approx(skip_only_ev(acts), rel=1e-6)


def test_metrics_match_sae_lens_evals_with_the_real_bos(setup):
    from sae_lens.evals import get_sparsity_and_variance_metrics
    from sae_lens.training.activation_scaler import ActivationScaler

    model, seqs, acts = setup
    torch.manual_seed(1)
    sae = adaptive.AdaptiveCompressSAE(adaptive.AdaptiveCompressSAEConfig(d_in=576, d_sae=576, relu=True))
    sae.cfg.metadata.hook_name = "blocks.6.hook_resid_post"
    ours = saebench.sparsity_and_variance(sae, acts, legacy_batch=len(acts))
    ref, _ = get_sparsity_and_variance_metrics(
        sae,
        model,
        saebench.TokenBatches(seqs),
        ActivationScaler(),
        n_batches=1,
        compute_l2_norms=False,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=False,
        eval_batch_size_prompts=len(seqs),
        model_kwargs={},
        ignore_tokens=[model.tokenizer.bos_token_id],
    )
    for a, b in [("L0", "l0"), ("MSE", "mse"), ("explained variance", "explained_variance")]:
        assert ours[a] == pytest.approx(ref[b], rel=1e-4), a
    down = saebench.downstream(model, sae, 6, seqs[:2], batch_prompts=2)
    assert down["kl_div_with_ablation"] > down["kl_div_with_sae"] >= 0
