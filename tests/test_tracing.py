"""analysis.tracing: the causal-tracing engine against independent references.

References: TransformerLens's ``patching`` module (one hooked forward pass per state) for token
replacement; a plain loop of hooked forward passes for noise corruption and windows; TL's
backward hooks for attribution patching; ROME's window formula and token roles.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig, patching

from analysis import tracing

os.environ.setdefault("TQDM_DISABLE", "1")  # TL's patching loops draw bars

TL_FUNCTIONS = {
    "hook_resid_pre": patching.get_act_patch_resid_pre,
    "hook_attn_out": patching.get_act_patch_attn_out,
    "hook_mlp_out": patching.get_act_patch_mlp_out,
}


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request):
    """Tiny models gain nothing from threads, and on a shared machine spinning threads cost a lot."""
    if "smollm2" in request.fixturenames:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(**kw) -> HookedTransformer:
    cfg = dict(n_layers=4, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=32, d_vocab=50,
               act_fn="gelu", normalization_type="LN", seed=0, initializer_range=0.4)
    cfg.update(kw)
    return HookedTransformer(HookedTransformerConfig(**cfg)).eval()


@pytest.fixture(scope="module")
def gpt2_like() -> HookedTransformer:
    """4 layers, LayerNorm, learned positions, plain GELU MLP."""
    return _tiny()


@pytest.fixture(scope="module")
def llama_like() -> HookedTransformer:
    """4 layers, RMSNorm, rotary, grouped-query attention, gated SiLU MLP (SmolLM2's shape)."""
    return _tiny(normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=8,
                 n_key_value_heads=2, gated_mlp=True, act_fn="silu",
                 original_architecture="LlamaForCausalLM")


def _tokens(seed: int = 1, n: int = 10) -> torch.Tensor:
    return torch.randint(0, 50, (n,), generator=torch.Generator().manual_seed(seed))


def _tl_grid(model, clean, corrupt, target, kinds=TL_FUNCTIONS, index_df=None):
    """TransformerLens's patching results: hook -> [layer, pos] (or flat over index_df)."""
    metric = lambda logits: torch.softmax(logits[0, -1].float(), -1)[target]  # noqa: E731
    with torch.no_grad():
        _, cache = model.run_with_cache(clean[None])
        if index_df is None:
            return {h: TL_FUNCTIONS[h](model, corrupt[None], cache, metric) for h in kinds}
        return {h: TL_FUNCTIONS[h](model, corrupt[None], cache, metric, index_axis_names=None,
                                   index_df=index_df) for h in kinds}


# ----------------------------------------------------------------------------- vocabulary


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
    assert roles == {"first subject": [2], "middle subject": [3], "last subject": [4],
                     "first subsequent": [5], "further": [6, 7], "last": [8]}
    single = tracing.token_roles((3, 4), 5)  # one-token subject followed by one token
    assert single["first subject"] == single["last subject"] == [3]
    assert single["middle subject"] == [] and single["further"] == []
    assert single["first subsequent"] == single["last"] == [4]


def test_kind_names_are_hook_names():
    assert tracing.hook_kind("resid") == "hook_resid_pre"
    assert tracing.hook_kind("mlp") == "hook_mlp_out"
    assert tracing.act_name("attn", 3) == "blocks.3.hook_attn_out"
    with pytest.raises(ValueError, match="Unknown trace kind"):
        tracing.hook_kind("mlp_in")


def test_trace_config_for_profiles():
    from analysis.config import get_profile

    cpu = tracing.trace_config_for(get_profile("cpu"))
    assert cpu.n_exact >= 50 and cpu.n_attribution >= 200
    gpu = tracing.trace_config_for("gpu")
    assert gpu.n_exact >= 1000 and gpu.n_samples == 10 and gpu.window == 10
    assert tracing.trace_config_for("smoke").n_exact < cpu.n_exact
    with pytest.raises(ValueError, match="profile"):
        tracing.trace_config_for("laptop")


# ------------------------------------------------ token replacement == TransformerLens patching


@pytest.mark.parametrize("arch", ["gpt2_like", "llama_like"])
@pytest.mark.parametrize("fast", [True, False])
def test_token_replacement_equals_transformer_lens(arch, fast, request):
    model = request.getfixturevalue(arch)
    clean = _tokens()
    corrupt = clean.clone()
    corrupt[3:5] = torch.tensor([7, 8])
    result = tracing.trace(model, clean, (3, 5), None, kinds=tuple(TL_FUNCTIONS),
                           corruption="tokens", replacement=corrupt, window=1, fast=fast)
    assert tracing._engine(model, fast).fast == fast  # both shapes have the fast path
    ref = _tl_grid(model, clean, corrupt, result.target_id)
    for hook, grid in ref.items():
        assert result[hook].shape == grid.shape == (4, 10)
        assert torch.allclose(result[hook], grid, atol=1e-5), hook
        assert grid.max() - grid.min() > 1e-3  # a real trace, not a constant grid
    # positions before the corruption cannot be affected, and restoring the input restores all
    assert torch.allclose(result["resid"][:, :3], torch.tensor(result.corrupted_prob), atol=1e-6)
    assert result["resid"][0, 3:5].sub(result.corrupted_prob).abs().max() > 0


def test_token_replacement_equals_transformer_lens_on_smollm2(smollm2):
    prompt, subject, target = "The Eiffel Tower is located in the city of", "The Eiffel Tower", " Paris"
    # TL needs one forward pass per state, so check a cross-section: the first, a middle and the
    # last layer; BOS, two subject tokens, the token after it (layer 0: nothing to restore), the last
    clean = smollm2.to_tokens(prompt)[0]
    corrupt = smollm2.to_tokens("The Colosseum is located in the city of")[0]
    T = clean.numel()
    layers, positions = (0, 17, smollm2.cfg.n_layers - 1), (0, 3, 4, 5, T - 1)
    result = tracing.trace(smollm2, prompt, subject, target, corruption="tokens",
                           replacement="The Colosseum", window=1, positions=positions)
    assert result.tokens[result.subject_span[0]:result.subject_span[1]] == ("The", " E", "iffel", " Tower")
    assert result.correct and result.clean_prob > 0.1 > result.corrupted_prob
    index = pd.DataFrame([(l, p) for l in layers for p in positions], columns=["layer", "pos"])
    ref = _tl_grid(smollm2, clean, corrupt, result.target_id, index_df=index)
    for hook, flat in ref.items():
        ours = result[hook][torch.tensor(index.layer.to_list()), torch.tensor(index.pos.to_list())]
        assert torch.allclose(ours, flat, atol=1e-4), (hook, (ours - flat).abs().max())
    assert ref["hook_resid_pre"].max() > 0.1  # restoring the subject restores the answer


# ------------------------------------------------------- noise mode == a plain reference loop


def _reference_noise_trace(model, tokens, span, target, noise, n_samples, seed, hook, window, layer, pos):
    """One hooked forward pass (batch = noise samples) per restored state."""
    eps = tracing.subject_noise(n_samples, span[1] - span[0], model.cfg.d_model, noise, seed)
    _, clean_cache = model.run_with_cache(tokens[None])

    def add_noise(x, hook):
        x = x.clone()
        x[:, span[0]:span[1]] += eps
        return x

    def restore(x, hook):
        x[:, pos] = clean_cache[hook.name][0, pos]
        return x

    layers = tracing.window_layers(layer, window, model.cfg.n_layers) if hook in tracing.WINDOWED else (layer,)
    hooks = [("hook_embed", add_noise)] + [(f"blocks.{l}.{hook}", restore) for l in layers]
    with torch.no_grad():
        logits = model.run_with_hooks(tokens[None].expand(n_samples, -1), fwd_hooks=hooks)
    return float(torch.softmax(logits[:, -1].float(), -1)[:, target].mean())


@pytest.mark.parametrize("arch", ["gpt2_like", "llama_like"])
@pytest.mark.parametrize("window", [1, 3])
def test_noise_trace_equals_reference_loop(arch, window, request):
    model = request.getfixturevalue(arch)
    tokens, span = _tokens(seed=2, n=8), (2, 4)
    kinds = ("hook_resid_pre", "hook_resid_post", "hook_mlp_out", "hook_attn_out")
    result = tracing.trace(model, tokens, span, None, kinds=kinds, noise=0.8, n_samples=3, seed=5,
                           window=window)
    for hook in kinds if window == 1 else tracing.WINDOWED:
        for layer in range(model.cfg.n_layers):
            for pos in (1, 2, 3, 5, 7):
                ref = _reference_noise_trace(model, tokens, span, result.target_id, 0.8, 3, 5,
                                             hook, window, layer, pos)
                assert abs(float(result[hook][layer, pos]) - ref) < 1e-5, (hook, layer, pos)
    assert result.n_samples == 3 and result.noise == 0.8
    assert (result["resid"][:, 2:4] - result.corrupted_prob).abs().max() > 1e-3


def test_noise_trace_on_smollm2_equals_reference_loop(smollm2):
    prompt, subject = "The Eiffel Tower is located in the city of", "The Eiffel Tower"
    result = tracing.trace(smollm2, prompt, subject, " Paris", noise=0.1, n_samples=2, seed=0,
                           positions=[4, 10])
    tokens = smollm2.to_tokens(prompt)[0]
    for hook, layer, pos in [("hook_resid_pre", 3, 4), ("hook_mlp_out", 6, 4),
                             ("hook_attn_out", 20, 10), ("hook_mlp_out", 29, 10)]:
        ref = _reference_noise_trace(smollm2, tokens, result.subject_span, result.target_id, 0.1, 2,
                                     0, hook, 10, layer, pos)
        assert abs(float(result[hook][layer, pos]) - ref) < 1e-4, (hook, layer, pos)
    assert result["resid"][:, 5].isnan().all()  # positions not asked for are NaN


def test_fast_and_transformer_lens_blocks_agree_with_windows(llama_like):
    tokens = _tokens(seed=3, n=9)
    a = tracing.trace(llama_like, tokens, (1, 3), None, noise=0.5, n_samples=4, window=2, fast=True)
    b = tracing.trace(llama_like, tokens, (1, 3), None, noise=0.5, n_samples=4, window=2, fast=False)
    for hook in a.kinds:
        assert torch.allclose(a[hook], b[hook], atol=1e-6)


def test_max_rows_chunks_give_the_same_numbers(gpt2_like):
    tokens = _tokens(seed=4, n=8)
    a = tracing.trace(gpt2_like, tokens, (2, 4), None, noise=0.5, n_samples=3, max_rows=5)
    b = tracing.trace(gpt2_like, tokens, (2, 4), None, noise=0.5, n_samples=3, max_rows=4096)
    for hook in a.kinds:
        assert torch.allclose(a[hook], b[hook], atol=1e-6)


# ---------------------------------------------------------------------- attribution patching


@pytest.mark.parametrize("fast", [True, False])
def test_attribution_equals_gradient_reference(gpt2_like, fast):
    """Our attribution equals (clean - corrupt) . grad from TL's own backward hooks."""
    model, tokens, span = gpt2_like, _tokens(seed=6, n=8), (2, 4)
    result = tracing.trace(model, tokens, span, None, noise=0.6, n_samples=3, seed=1, window=1,
                           method="attribution", fast=fast)
    eps = tracing.subject_noise(3, 2, model.cfg.d_model, 0.6, 1)
    _, clean = model.run_with_cache(tokens[None])
    acts, grads = {}, {}

    def add_noise(x, hook):
        x = x.clone()
        x[:, span[0]:span[1]] += eps
        return x

    names = [f"blocks.{l}.{h}" for l in range(4) for h in ("hook_resid_pre", "hook_mlp_out")]
    fwd = [("hook_embed", add_noise)] + [(n, lambda x, hook: acts.__setitem__(hook.name, x.detach()))
                                          for n in names]
    bwd = [(n, lambda g, hook: grads.__setitem__(hook.name, g.detach())) for n in names]
    with model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        logits = model(tokens[None].expand(3, -1))
        torch.softmax(logits[:, -1], -1)[:, result.target_id].mean().backward()
    model.zero_grad(set_to_none=True)
    for hook in ("hook_resid_pre", "hook_mlp_out"):
        for l in range(4):
            name = f"blocks.{l}.{hook}"
            ref = ((clean[name][0] - acts[name]) * grads[name]).sum(dim=(0, 2))
            assert torch.allclose(result.indirect_effect(hook)[l], ref, atol=1e-6), name


def test_attribution_matches_exact_in_the_linear_regime(llama_like):
    tokens = _tokens(seed=7, n=8)
    kw = dict(noise=1e-3, n_samples=2, window=1, kinds=("resid", "mlp", "attn"))
    exact = tracing.trace(llama_like, tokens, (2, 4), None, **kw)
    approx = tracing.trace(llama_like, tokens, (2, 4), None, method="attribution", **kw)
    for hook in exact.kinds:
        stats = tracing.agreement([exact], [approx], hook)
        assert stats["pearson"] > 0.99, (hook, stats["pearson"])
    big = tracing.trace(llama_like, tokens, (2, 4), None, method="attribution", noise=5.0,
                        n_samples=2, window=3)
    assert big["mlp"].shape == (4, 8)


# ----------------------------------------------------------------------------- bad input


def test_subject_not_in_prompt_names_both(smollm2):
    with pytest.raises(ValueError) as err:
        tracing.trace(smollm2, "The Eiffel Tower is in Paris", "The Louvre", n_samples=1, noise=0.1)
    assert "The Louvre" in str(err.value) and "The Eiffel Tower is in Paris" in str(err.value)


def test_multi_token_target_is_rejected_clearly(smollm2):
    with pytest.raises(ValueError, match=r"tokenizes to \d+ tokens"):
        tracing.prepare(smollm2, "The capital of Malaysia is", "Malaysia", " Kuala Lumpur")


def test_prompt_longer_than_context_is_rejected(gpt2_like):
    with pytest.raises(ValueError, match="context of 32 tokens"):
        tracing.trace(gpt2_like, torch.zeros(40, dtype=torch.long), (1, 2), noise=0.1)


def test_replacement_of_another_length_is_rejected(smollm2):
    with pytest.raises(ValueError, match="same token length"):
        tracing.trace(smollm2, "The Eiffel Tower is located in the city of", "The Eiffel Tower",
                      " Paris", corruption="tokens", replacement="Big Ben")
    with pytest.raises(ValueError, match="replacement"):
        tracing.trace(smollm2, "The Eiffel Tower is in", "The Eiffel Tower", corruption="tokens")


def test_wrong_clean_prediction_is_reported_and_skipped(gpt2_like):
    tokens = _tokens(seed=8, n=8)
    top = int(gpt2_like(tokens[None])[0, -1].argmax())
    facts = [{"prompt": tokens, "subject": (2, 4), "target": top},
             {"prompt": tokens, "subject": (2, 4), "target": (top + 1) % 50},
             {"prompt": tokens, "subject": (3, 5), "target": top}]
    aie = tracing.average_indirect_effect(gpt2_like, facts, noise=0.5, n_samples=2, cache=False)
    assert aie.n_facts == 2 and len(aie.skipped) == 1
    assert "is not the target" in aie.skipped[0].reason
    manual = torch.stack([t.indirect_effect("mlp")[:, t.subject_span[1] - 1] for t in aie.traces])
    last_subject = tracing.ROLES.index("last subject")
    assert torch.allclose(aie.mean("mlp")[last_subject], manual.mean(0), atol=1e-7)
    assert aie.counts("mlp")[tracing.ROLES.index("further")] == 2
    ci = aie.ci("mlp")
    assert torch.isfinite(ci[last_subject]).all() and (ci[last_subject] >= 0).all()


# -------------------------------------------------------------- aggregates and the signal


def test_component_information_and_split_half(gpt2_like):
    facts = [{"prompt": _tokens(seed=s, n=8), "subject": (2, 4), "target": None} for s in range(10, 18)]
    info = tracing.component_information(gpt2_like, facts, noise=0.5, n_samples=2, cache=False)
    assert info.scores.shape == (4, 2) and info.per_fact.shape[1:] == (4, 2)
    assert info.components == ("hook_attn_out", "hook_mlp_out")
    t = info.aie.traces[0]
    expected = t.indirect_effect("mlp")[:, 2:].amax(1)
    assert torch.allclose(info.per_fact[0, :, 1], expected)
    z = info.zscores()
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-5
    assert all(v in ("low", "medium", "high") for row in info.levels() for v in row)
    halves = info.split_half(n_splits=20)
    assert halves.shape == (20,) and ((halves >= -1) & (halves <= 1)).all()


def test_pair_subjects_keeps_token_length(smollm2):
    facts = [
        {"prompt": "The capital of France is", "subject": "France", "target": " Paris", "relation": "capital"},
        {"prompt": "The capital of Germany is", "subject": "Germany", "target": " Berlin", "relation": "capital"},
        {"prompt": "The capital of Bosnia and Herzegovina is", "subject": "Bosnia and Herzegovina",
         "target": " Sarajevo", "relation": "capital"},
    ]
    pairs = tracing.pair_subjects(smollm2, facts)
    assert pairs[0] == "Germany" and pairs[1] == "France" and pairs[2] is None


def test_fast_engine_follows_in_place_weight_changes(llama_like):
    """A compression experiment edits weights in place; the fused copies must not go stale."""
    tokens = _tokens(seed=9, n=7)
    before = tracing.trace(llama_like, tokens, (2, 4), None, noise=0.5, n_samples=2, window=1)
    w = llama_like.blocks[1].attn.W_Q
    saved = w.detach().clone()
    with torch.no_grad():
        w.mul_(0.5)
    try:
        fast = tracing.trace(llama_like, tokens, (2, 4), before.target_id, noise=0.5, n_samples=2, window=1)
        slow = tracing.trace(llama_like, tokens, (2, 4), before.target_id, noise=0.5, n_samples=2, window=1,
                             fast=False)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert torch.allclose(fast["resid"], slow["resid"], atol=1e-6)
    assert not torch.allclose(fast["resid"], before["resid"], atol=1e-6)


def test_fast_blocks_self_check_detects_a_wrong_block(llama_like):
    engine = tracing._FastBlocks(llama_like)
    assert engine.agrees()
    engine.wqkv[0] = engine.wqkv[0] * 1.01  # a fused copy that no longer matches the model
    assert not engine.agrees()


@pytest.mark.parametrize("prompt, subject", [
    ("The capital of Île-de-France is", "Île-de-France"),
    ("The Eiffel Tower is located in the city of", "The Eiffel Tower"),
    ("The official language of São Tomé and Príncipe is", "São Tomé and Príncipe"),
])
def test_subject_span_covers_exactly_the_subject(smollm2, prompt, subject):
    fact = tracing.prepare(smollm2, prompt, subject, 0)
    s, e = fact.subject_span
    assert smollm2.tokenizer.decode(fact.tokens[s:e]).strip() == subject
    assert subject not in smollm2.tokenizer.decode(fact.tokens[s + 1:e])  # no token to spare
    assert subject not in smollm2.tokenizer.decode(fact.tokens[s:e - 1])


def test_attribution_windows_are_sums_of_single_states(llama_like):
    tokens = _tokens(seed=11, n=8)
    kw = dict(noise=0.5, n_samples=2, method="attribution")
    single = tracing.trace(llama_like, tokens, (2, 4), None, window=1, **kw)
    windowed = tracing.trace(llama_like, tokens, (2, 4), None, window=3, **kw)
    for hook in windowed.kinds:
        assert torch.allclose(single.with_window(3)[hook], windowed[hook], atol=1e-6)
    exact = tracing.trace(llama_like, tokens, (2, 4), None, window=1, noise=0.5, n_samples=2)
    with pytest.raises(ValueError, match="re-windowed"):
        exact.with_window(3)
