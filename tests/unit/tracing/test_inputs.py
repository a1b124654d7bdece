"""analysis.tracing.inputs and the hook vocabulary tracing uses: ROME's window and token roles."""

from __future__ import annotations

import pytest
import torch

from analysis import hooks, tracing


def test_window_layers_follow_rome():
    # ROME: range(max(0, l - w // 2), min(L, l - (-w // 2)))
    assert tracing.window_layers(12, 10, 30) == tuple(range(7, 17))
    assert tracing.window_layers(0, 10, 30) == (0, 1, 2, 3, 4)
    assert tracing.window_layers(29, 10, 30) == tuple(range(24, 30))
    assert tracing.window_layers(5, 1, 30) == (5,)
    assert tracing.window_layers(5, 3, 30) == (4, 5, 6)
    with pytest.raises(ValueError, match="window"):
        tracing.window_layers(0, 0, 30)


def test_token_roles():
    roles = tracing.token_roles((2, 5), 9)
    assert roles == {
        "first subject": [2],
        "middle subject": [3],
        "last subject": [4],
        "first subsequent": [5],
        "further": [6, 7],
        "last": [8],
    }
    assert tuple(roles) == tracing.ROLES
    single = tracing.token_roles((3, 4), 5)  # one-token subject followed by one token
    assert single["first subject"] == single["last subject"] == [3]
    assert single["middle subject"] == [] and single["further"] == []
    assert single["first subsequent"] == single["last"] == [4]


def test_kind_names_are_hook_names_of_the_model(gpt2_like):
    assert hooks.hook_kind("resid") == "hook_resid_pre"
    assert hooks.hook_kind("mlp") == "hook_mlp_out"
    assert hooks.act_name("attn", 3) == "blocks.3.hook_attn_out"
    for kind in hooks.TRACE_HOOKS:  # every kind a trace restores is a hook point of the model
        assert hooks.act_name(kind, 2) in gpt2_like.hook_dict
    with pytest.raises(ValueError, match="Unknown kind"):
        hooks.hook_kind("mlp_in")


def test_find_subject_maps_characters_to_covering_tokens():
    toks = ["<s>", "The", " E", "iffel", " Tower", " is"]
    assert tracing.find_subject(toks, "The Eiffel Tower") == (1, 5)
    assert tracing.find_subject(toks, "iffel") == (3, 4)
    assert tracing.find_subject(toks, "ffel Tow") == (3, 5)  # partial tokens count whole
    with pytest.raises(ValueError, match="does not occur"):
        tracing.find_subject(toks, "Louvre")


def test_prompt_longer_than_context_is_rejected(gpt2_like):
    with pytest.raises(ValueError, match="context of 32 tokens"):
        tracing.trace(gpt2_like, torch.zeros(40, dtype=torch.long), (1, 2), noise=0.1)


def test_prepare_validates_span_and_target(gpt2_like, random_tokens):
    tokens = random_tokens(seed=1, n=8)
    fact = tracing.prepare(gpt2_like, tokens, (2, 4), None)
    assert fact.target_id == int(gpt2_like(tokens[None])[0, -1].argmax())
    assert fact.str_tokens[2] == f"<{int(tokens[2])}>" and not fact.from_text
    with pytest.raises(ValueError, match="outside the prompt"):
        tracing.prepare(gpt2_like, tokens, (5, 9), 0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tracing.prepare(gpt2_like, tokens, (2, 4), 50)


def test_a_target_without_its_leading_space_is_refused(tiny_cfg):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<bos>", "<unk>", "The", "Eiffel", "Tower", "is", "in", "Paris", "(", "x"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # " Paris" and "Paris" are one token alike
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", pad_token="<pad>", unk_token="<unk>", add_bos_token=True
    )
    tok.init_kwargs["name_or_path"] = "word-level-test"
    cfg = tiny_cfg(n_layers=1, d_model=16, n_heads=2, n_ctx=16, d_vocab=len(words), seed=None)
    model = HookedTransformer(cfg, tokenizer=tok).eval()
    prompt = "The Eiffel Tower is in"
    with pytest.raises(ValueError, match=r"'Paris' has no leading space.*Pass ' Paris'"):
        tracing.prepare(model, prompt, "Eiffel Tower", "Paris")
    assert tracing.prepare(model, prompt, "Eiffel Tower", " Paris").target_id == words.index("Paris")
    assert tracing.prepare(model, prompt + " (", "Eiffel Tower", "x").target_id == words.index("x")  # no space due
