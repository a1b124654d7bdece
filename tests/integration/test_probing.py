"""analysis.probing on the embedded models: the features a probe reads, against direct computations."""

from __future__ import annotations

import pytest
import torch

from analysis import probing
from analysis.hooks import resid_post

pytestmark = pytest.mark.usefixtures("one_thread")


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
            assert torch.allclose(feats[l, i], cache[resid_post(l)][0, -1], atol=1e-4)


@pytest.mark.parametrize("task", [ours for ours, _ in probing.PROBE_TASKS.values()])
def test_control_types_recur_between_training_and_test(task):
    """Hewitt & Liang's control needs types seen in training: >= 90 % of test rows in every fold,
    at the decoder probe size of the cpu profile (the last word alone falls far short)."""
    from analysis.studies import factorization

    cfg = factorization.config_for("cpu")
    ds = probing.load_probe_task(task, n=min(cfg.n_decoder_probe, len(probing.load_probe_task(task))), seed=0)
    texts, groups = ds["text"][:], ds["group"][:]
    folds = probing.group_folds(groups, cfg.decoder_probe.folds, 0)
    freq = probing.text_types(texts, cfg.decoder_probe.control_by, cfg.decoder_probe.control_vocab)
    last = probing.text_types(texts, "last_word")
    assert min(probing.type_coverage(freq, tr.tolist(), te.tolist()) for tr, te in folds) >= 0.9
    assert max(probing.type_coverage(last, tr.tolist(), te.tolist()) for tr, te in folds) < 0.5
