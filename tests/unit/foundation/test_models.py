"""analysis.models: the registry, the embedded checkpoints, and the hub path."""

from __future__ import annotations

import pytest
import torch

from analysis.models import (
    EMBEDDED,
    ModelNotAvailableError,
    known_models,
    load_model,
    model_card,
)


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


HUB_ARCHITECTURES = ["gpt2", "gemma-2-2b", "mistral-7b", "llama-2-7b", "bert-base-uncased"]


@pytest.mark.parametrize("name", HUB_ARCHITECTURES)
def test_local_checkpoint_of_every_hub_architecture_computes_what_transformers_computes(
    tmp_path, name, tiny_checkpoint
):
    # the folder's name misleads on purpose: TransformerLens alone would pick an architecture from it
    folder, hf = tiny_checkpoint(tmp_path / "llama-gemma-2-x", name)
    model = load_model(str(folder), device="cpu")
    ids = torch.randint(1, 128, (2, 40), generator=torch.Generator().manual_seed(0))  # > gemma's window of 32
    with torch.inference_mode():
        if name.startswith("bert"):
            _, cache = model.run_with_cache(ids)
            ours = cache[f"blocks.{model.cfg.n_layers - 1}.hook_normalized_resid_post"]
            ref = hf.bert(ids).last_hidden_state
        else:
            ours = model(ids, return_type="logits")
            ref = hf(ids).logits
    assert torch.linalg.norm(ours - ref) <= 1e-4 * torch.linalg.norm(ref)
    assert model_card(str(folder)).kind == ("encoder" if name.startswith("bert") else "decoder")


def test_hub_name_loads_from_the_models_folder_when_it_is_there(tmp_path, monkeypatch, tiny_checkpoint):
    from analysis.models import MODELS_DIR_ENV

    tiny_checkpoint(tmp_path / "gemma-2-2b", "gemma-2-2b")
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    model = load_model("gemma-2-2b", device="cpu")
    assert model.cfg.d_model == 64 and model.cfg.n_layers == 2 and model.cfg.attn_types == ["local", "global"]
    assert "local checkpoint" in model_card("gemma-2-2b").source
    monkeypatch.delenv(MODELS_DIR_ENV)
    assert model_card("gemma-2-2b").source.startswith("Hugging Face hub")


def test_model_key_tells_apart_weights_with_equal_sums(tiny_model):
    from analysis.models import model_key

    key = model_key(tiny_model)
    w = tiny_model.blocks[0].mlp.W_in
    with torch.no_grad():
        w[0, :2] = torch.tensor([1.0, 2.0])
    one = model_key(tiny_model)
    with torch.no_grad():
        w[0, :2] = torch.tensor([2.0, 1.0])  # same sum, same |sum|, other weights
    two = model_key(tiny_model)
    assert len({key, one, two}) == 3
    with torch.no_grad():
        w[0, :2] = torch.tensor([1.0, 2.0])
    assert model_key(tiny_model) == one  # content, not identity or version, decides


def test_is_encoder_tells_encoders_from_decoders(tiny_model):
    from transformer_lens import HookedEncoder

    from analysis.models import is_encoder

    enc = HookedEncoder(tiny_model.cfg.__class__(**{**tiny_model.cfg.to_dict(), "act_fn": "gelu"}))
    assert is_encoder(enc) and not is_encoder(tiny_model) and not is_encoder(None)


def test_model_key_and_cached_scores_see_a_weight_edited_through_data(tiny_model, tmp_path, monkeypatch):
    """``W.data.mul_(0)`` moves neither ``_version`` nor the storage; the key and the cached score must follow."""
    import analysis.cache
    from analysis.evaluate import lm_score
    from analysis.models import model_key

    monkeypatch.setattr(analysis.cache, "CACHE_DIR", tmp_path)
    tokens = torch.arange(200) % 50
    before_key, before = model_key(tiny_model), lm_score(tiny_model, tokens, context=32, cache=True)
    tiny_model.blocks[0].mlp.W_out.data.mul_(0)
    tiny_model.unembed.W_U.data.mul_(3)
    truth = lm_score(tiny_model, tokens, context=32)
    assert truth.nll != before.nll
    assert model_key(tiny_model) != before_key
    assert lm_score(tiny_model, tokens, context=32, cache=True).nll == truth.nll


def test_cuda_on_a_machine_without_it_says_what_to_do(monkeypatch):
    from analysis.models import registry

    def must_not_load(*a):
        pytest.fail("nothing may load (or rebuild) for a bad device")

    card = registry.EMBEDDED["smollm2-135m"][0]
    monkeypatch.setitem(registry.EMBEDDED, "smollm2-135m", (card, must_not_load))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r'torch.cuda.is_available\(\) is False.*device="cpu"'):
        load_model("smollm2-135m", device="cuda")
    with pytest.raises(ValueError, match="Unknown device 'gpu'"):
        load_model("smollm2-135m", device="gpu")


class Rebuilt(Exception):
    """Raised instead of dequantizing a GGUF file again."""


@pytest.fixture()
def gguf_cache(tmp_path, monkeypatch):
    """A stand-in GGUF file, its empty converted-weights folder in a temporary cache, and the list of
    rebuilds started (each raises :class:`Rebuilt` instead of reading the file)."""
    from analysis.models import conversion

    monkeypatch.setattr(conversion, "CACHE_DIR", tmp_path / "cache")
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    folder = conversion.converted_folder(gguf, "tiny")
    folder.mkdir(parents=True)
    rebuilt = []

    def rebuild(path, dtype):
        rebuilt.append(path)
        raise Rebuilt

    monkeypatch.setattr(conversion, "load_gguf_hf", rebuild)
    return gguf, folder, rebuilt


def test_only_an_unreadable_conversion_cache_is_rebuilt(gguf_cache):
    from analysis.models import conversion

    gguf, folder, rebuilt = gguf_cache
    (folder / "hooked_state_dict.pt").write_bytes(b"\x80 not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"), pytest.raises(Rebuilt):
        conversion.load_gguf(gguf, "tiny", "tiny", "cpu", torch.float32)
    assert rebuilt == [gguf]


def test_an_error_after_reading_the_conversion_cache_is_not_a_rebuild(gguf_cache):
    """Readable converted files whose weights do not fit the config raise; only unreadable ones are rebuilt."""
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    from analysis.models import conversion

    gguf, folder, rebuilt = gguf_cache
    sizes = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=8)
    torch.save(LlamaConfig(**sizes), folder / "hf_config.pt")  # no architectures, as a GGUF file's config
    torch.save({}, folder / "hooked_state_dict.pt")  # readable, but no weights
    core = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>").save_pretrained(folder / "tokenizer")
    with pytest.raises(RuntimeError, match="Missing key"):
        conversion.load_gguf(gguf, "tiny", "tiny", "cpu", torch.float32)
    assert not rebuilt


@pytest.mark.parametrize("name", HUB_ARCHITECTURES)
def test_hooked_config_keeps_the_checkpoint_sizes(tmp_path, name, tiny_checkpoint):
    from analysis.models import hooked_config

    _, hf = tiny_checkpoint(tmp_path / "llama-gemma-2-x", name)
    c = hf.config
    cfg = hooked_config(c, "tiny", dtype=torch.bfloat16)
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_vocab) == (
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.vocab_size,
    )
    assert cfg.d_mlp == (getattr(c, "intermediate_size", None) or 4 * c.hidden_size)
    assert (cfg.model_name, cfg.tokenizer_name, cfg.dtype) == ("tiny", None, torch.bfloat16)
    assert cfg.attention_dir == ("bidirectional" if name.startswith("bert") else "causal")
    if not name.startswith("bert"):  # a config without architectures (a GGUF file's) is read by its model_type
        c.architectures = None
        assert hooked_config(c, "tiny", dtype=torch.bfloat16).to_dict() == cfg.to_dict()


def test_a_missing_or_incomplete_checkpoint_folder_says_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="checkpoint folder .*nowhere' does not exist"):
        load_model(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json.*save_pretrained"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="has no config.json"):
        model_card(str(tmp_path / "empty"))
