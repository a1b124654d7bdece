"""analysis.tracing on SmolLM2-135M: the engine against TransformerLens and a reference loop on
the real model, subject spans of real tokenizations, and clear errors for bad facts."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformer_lens import patching

from analysis import hooks, tracing

TL_FUNCTIONS = {
    "hook_resid_pre": patching.get_act_patch_resid_pre,
    "hook_attn_out": patching.get_act_patch_attn_out,
    "hook_mlp_out": patching.get_act_patch_mlp_out,
}
PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "The Eiffel Tower"


def test_token_replacement_equals_transformer_lens_on_smollm2(smollm2, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")  # TL's patching loops draw bars
    # TL needs one forward pass per state, so check a cross-section: the first, a middle and the
    # last layer; BOS, two subject tokens, the token after it (layer 0: nothing to restore), the last
    clean = smollm2.to_tokens(PROMPT)[0]
    corrupt = smollm2.to_tokens("The Colosseum is located in the city of")[0]
    T = clean.numel()
    layers, positions = (0, 17, smollm2.cfg.n_layers - 1), (0, 3, 4, 5, T - 1)
    result = tracing.trace(
        smollm2,
        PROMPT,
        SUBJECT,
        " Paris",
        corruption="tokens",
        replacement="The Colosseum",
        window=1,
        positions=positions,
    )
    assert result.tokens[result.subject_span[0] : result.subject_span[1]] == ("The", " E", "iffel", " Tower")
    assert result.correct and result.clean_prob > 0.1 > result.corrupted_prob
    index = pd.DataFrame([(l, p) for l in layers for p in positions], columns=["layer", "pos"])
    metric = lambda logits: torch.softmax(logits[0, -1].float(), -1)[result.target_id]  # noqa: E731
    with torch.no_grad():
        _, cache = smollm2.run_with_cache(clean[None])
        ref = {
            h: fn(smollm2, corrupt[None], cache, metric, index_axis_names=None, index_df=index)
            for h, fn in TL_FUNCTIONS.items()
        }
    for hook, flat in ref.items():
        ours = result[hook][torch.tensor(index.layer.to_list()), torch.tensor(index.pos.to_list())]
        assert torch.allclose(ours, flat, atol=1e-4), (hook, (ours - flat).abs().max())
    assert ref["hook_resid_pre"].max() > 0.1  # restoring the subject restores the answer


def test_noise_trace_on_smollm2_equals_reference_loop(smollm2):
    result = tracing.trace(smollm2, PROMPT, SUBJECT, " Paris", noise=0.1, n_samples=2, seed=0, positions=[4, 10])
    tokens = smollm2.to_tokens(PROMPT)[0]
    s, e = result.subject_span
    eps = tracing.subject_noise(2, e - s, smollm2.cfg.d_model, 0.1, 0)
    _, clean_cache = smollm2.run_with_cache(tokens[None])

    def add_noise(x, hook):
        x = x.clone()
        x[:, s:e] += eps
        return x

    for hook, layer, pos in [
        ("hook_resid_pre", 3, 4),
        ("hook_mlp_out", 6, 4),
        ("hook_attn_out", 20, 10),
        ("hook_mlp_out", 29, 10),
    ]:

        def restore(x, hook, pos=pos):
            x[:, pos] = clean_cache[hook.name][0, pos]
            return x

        layers = tracing.window_layers(layer, 10, smollm2.cfg.n_layers) if hook in tracing.WINDOWED else (layer,)
        fwd = [("hook_embed", add_noise)] + [(hooks.act_name(hook, l), restore) for l in layers]
        with torch.no_grad():
            logits = smollm2.run_with_hooks(tokens[None].expand(2, -1), fwd_hooks=fwd)
        ref = float(torch.softmax(logits[:, -1].float(), -1)[:, result.target_id].mean())
        assert abs(float(result[hook][layer, pos]) - ref) < 1e-4, (hook, layer, pos)
    assert result["resid"][:, 5].isnan().all()  # positions not asked for are NaN


def test_subject_not_in_prompt_names_both(smollm2):
    with pytest.raises(ValueError) as err:
        tracing.trace(smollm2, "The Eiffel Tower is in Paris", "The Louvre", n_samples=1, noise=0.1)
    assert "The Louvre" in str(err.value) and "The Eiffel Tower is in Paris" in str(err.value)


def test_multi_token_target_is_rejected_clearly(smollm2):
    with pytest.raises(ValueError, match=r"tokenizes to \d+ tokens"):
        tracing.prepare(smollm2, "The capital of Malaysia is", "Malaysia", " Kuala Lumpur")


def test_replacement_of_another_length_is_rejected(smollm2):
    with pytest.raises(ValueError, match="same token length"):
        tracing.trace(smollm2, PROMPT, SUBJECT, " Paris", corruption="tokens", replacement="Big Ben")
    with pytest.raises(ValueError, match="replacement"):
        tracing.trace(smollm2, "The Eiffel Tower is in", SUBJECT, corruption="tokens")


def test_pair_subjects_keeps_token_length(smollm2):
    facts = [
        {"prompt": "The capital of France is", "subject": "France", "target": " Paris", "relation": "capital"},
        {"prompt": "The capital of Germany is", "subject": "Germany", "target": " Berlin", "relation": "capital"},
        {
            "prompt": "The capital of Bosnia and Herzegovina is",
            "subject": "Bosnia and Herzegovina",
            "target": " Sarajevo",
            "relation": "capital",
        },
    ]
    pairs = tracing.pair_subjects(smollm2, facts)
    assert pairs[0] == "Germany" and pairs[1] == "France" and pairs[2] is None


@pytest.mark.parametrize(
    "prompt, subject",
    [
        ("The capital of Île-de-France is", "Île-de-France"),
        (PROMPT, SUBJECT),
        ("The official language of São Tomé and Príncipe is", "São Tomé and Príncipe"),
    ],
)
def test_subject_span_covers_exactly_the_subject(smollm2, prompt, subject):
    fact = tracing.prepare(smollm2, prompt, subject, 0)
    s, e = fact.subject_span
    assert smollm2.tokenizer.decode(fact.tokens[s:e]).strip() == subject
    assert subject not in smollm2.tokenizer.decode(fact.tokens[s + 1 : e])  # no token to spare
    assert subject not in smollm2.tokenizer.decode(fact.tokens[s : e - 1])


def test_noise_scale_is_three_embedding_stds_of_eval_text(smollm2, eval_tokens):
    std = tracing.embedding_std(smollm2, eval_tokens)
    emb = smollm2.W_E[eval_tokens].detach()
    assert std == pytest.approx(float(emb.std()), rel=1e-5)
    assert tracing.noise_scale(smollm2, eval_tokens) == pytest.approx(3 * std)


def test_rome_noise_scale_is_three_stds_of_the_subjects_embeddings(smollm2):
    # ROME (collect_embedding_std) embeds each fact's subject and takes the pooled std; our
    # subject tokens are the subject's tokens inside its prompt, which decode to the subject
    facts = [
        {"prompt": "The Eiffel Tower is located in the city of", "subject": "The Eiffel Tower"},
        {"prompt": "Slovakia has its capital in", "subject": "Slovakia"},
    ]
    ids = tracing.subject_tokens(smollm2, facts)
    assert smollm2.tokenizer.decode(ids).replace(" ", "") == "TheEiffelTowerSlovakia"
    reference = float(smollm2.W_E[ids].detach().std())
    assert tracing.noise_scale(smollm2, facts=facts) == pytest.approx(3 * reference, rel=1e-5)
