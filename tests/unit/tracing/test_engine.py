"""The exact restoration engine against independent references.

References: TransformerLens's ``patching`` module (one hooked forward pass per state) for token
replacement; a plain loop of hooked forward passes for noise corruption and windows.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import patching

from analysis import hooks, tracing

TL_FUNCTIONS = {
    "hook_resid_pre": patching.get_act_patch_resid_pre,
    "hook_attn_out": patching.get_act_patch_attn_out,
    "hook_mlp_out": patching.get_act_patch_mlp_out,
}


@pytest.fixture(autouse=True)
def _no_bars(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")  # TL's patching loops draw bars


def tl_grid(model, clean, corrupt, target):
    """TransformerLens's patching results: hook -> [layer, pos]."""
    metric = lambda logits: torch.softmax(logits[0, -1].float(), -1)[target]  # noqa: E731
    with torch.no_grad():
        _, cache = model.run_with_cache(clean[None])
        return {h: fn(model, corrupt[None], cache, metric) for h, fn in TL_FUNCTIONS.items()}


def reference_noise_trace(model, tokens, span, target, noise, n_samples, seed, hook, window, layer, pos):
    """One hooked forward pass (batch = noise samples) per restored state."""
    eps = tracing.subject_noise(n_samples, span[1] - span[0], model.cfg.d_model, noise, seed)
    _, clean_cache = model.run_with_cache(tokens[None])

    def add_noise(x, hook):
        x = x.clone()
        x[:, span[0] : span[1]] += eps
        return x

    def restore(x, hook):
        x[:, pos] = clean_cache[hook.name][0, pos]
        return x

    layers = tracing.window_layers(layer, window, model.cfg.n_layers) if hook in tracing.WINDOWED else (layer,)
    fwd = [("hook_embed", add_noise)] + [(hooks.act_name(hook, l), restore) for l in layers]
    with torch.no_grad():
        logits = model.run_with_hooks(tokens[None].expand(n_samples, -1), fwd_hooks=fwd)
    return float(torch.softmax(logits[:, -1].float(), -1)[:, target].mean())


@pytest.mark.parametrize("arch", ["gpt2_like", "llama_like"])
@pytest.mark.parametrize("fast", [True, False])
def test_token_replacement_equals_transformer_lens(arch, fast, request, random_tokens):
    model = request.getfixturevalue(arch)
    clean = random_tokens()
    corrupt = clean.clone()
    corrupt[3:5] = torch.tensor([7, 8])
    result = tracing.trace(
        model,
        clean,
        (3, 5),
        None,
        kinds=tuple(TL_FUNCTIONS),
        corruption="tokens",
        replacement=corrupt,
        window=1,
        fast=fast,
    )
    assert tracing.block_runner(model, fast).fast == fast  # both shapes have the fast path
    ref = tl_grid(model, clean, corrupt, result.target_id)
    for hook, grid in ref.items():
        assert result[hook].shape == grid.shape == (4, 10)
        assert torch.allclose(result[hook], grid, atol=1e-5), hook
        assert grid.max() - grid.min() > 1e-3  # a real trace, not a constant grid
    # positions before the corruption cannot be affected, and restoring the input restores all
    assert torch.allclose(result["resid"][:, :3], torch.tensor(result.corrupted_prob), atol=1e-6)
    assert result["resid"][0, 3:5].sub(result.corrupted_prob).abs().max() > 0


@pytest.mark.parametrize("arch", ["gpt2_like", "llama_like"])
@pytest.mark.parametrize("window", [1, 3])
def test_noise_trace_equals_reference_loop(arch, window, request, random_tokens):
    model = request.getfixturevalue(arch)
    tokens, span = random_tokens(seed=2, n=8), (2, 4)
    kinds = ("hook_resid_pre", "hook_resid_post", "hook_mlp_out", "hook_attn_out")
    result = tracing.trace(model, tokens, span, None, kinds=kinds, noise=0.8, n_samples=3, seed=5, window=window)
    for hook in kinds if window == 1 else tracing.WINDOWED:
        for layer in range(model.cfg.n_layers):
            for pos in (1, 2, 3, 5, 7):
                ref = reference_noise_trace(model, tokens, span, result.target_id, 0.8, 3, 5, hook, window, layer, pos)
                assert abs(float(result[hook][layer, pos]) - ref) < 1e-5, (hook, layer, pos)
    assert result.n_samples == 3 and result.noise == 0.8
    assert (result["resid"][:, 2:4] - result.corrupted_prob).abs().max() > 1e-3


def test_fast_and_transformer_lens_blocks_agree_with_windows(llama_like, random_tokens):
    tokens = random_tokens(seed=3, n=9)
    a = tracing.trace(llama_like, tokens, (1, 3), None, noise=0.5, n_samples=4, window=2, fast=True)
    b = tracing.trace(llama_like, tokens, (1, 3), None, noise=0.5, n_samples=4, window=2, fast=False)
    for hook in a.kinds:
        assert torch.allclose(a[hook], b[hook], atol=1e-6)


def test_max_rows_chunks_give_the_same_numbers(gpt2_like, random_tokens):
    tokens = random_tokens(seed=4, n=8)
    a = tracing.trace(gpt2_like, tokens, (2, 4), None, noise=0.5, n_samples=3, max_rows=5)
    b = tracing.trace(gpt2_like, tokens, (2, 4), None, noise=0.5, n_samples=3, max_rows=4096)
    for hook in a.kinds:
        assert torch.allclose(a[hook], b[hook], atol=1e-6)


def test_fast_engine_follows_in_place_weight_changes(llama_like, random_tokens):
    """A compression experiment edits weights in place; the fused copies must not go stale."""
    tokens = random_tokens(seed=9, n=7)
    before = tracing.trace(llama_like, tokens, (2, 4), None, noise=0.5, n_samples=2, window=1)
    w = llama_like.blocks[1].attn.W_Q
    saved = w.detach().clone()
    with torch.no_grad():
        w.mul_(0.5)
    try:
        fast = tracing.trace(llama_like, tokens, (2, 4), before.target_id, noise=0.5, n_samples=2, window=1)
        slow = tracing.trace(llama_like, tokens, (2, 4), before.target_id, noise=0.5, n_samples=2, window=1, fast=False)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert torch.allclose(fast["resid"], slow["resid"], atol=1e-6)
    assert not torch.allclose(fast["resid"], before["resid"], atol=1e-6)


def test_fast_blocks_self_check_detects_a_wrong_block(llama_like):
    runner = tracing.FastBlocks(llama_like)
    assert runner.agrees()
    runner.wqkv[0] = runner.wqkv[0] * 1.01  # a fused copy that no longer matches the model
    assert not runner.agrees()


def test_fast_blocks_rotate_a_prefix_once_and_forget_it_with_the_prefix(llama_like, gpt2_like):
    import gc

    runner = tracing.FastBlocks(llama_like)
    gen = torch.Generator().manual_seed(0)
    keys = tuple(torch.randn(2, 5, runner.Hk, runner.dh, generator=gen) for _ in range(4))
    prefix = tracing.Prefix(keys, keys, n_samples=2)
    rotated = runner.rotated_keys(prefix)
    assert runner.rotated_keys(prefix) is rotated  # computed once per prefix
    ref = llama_like.blocks[2].attn.apply_rotary(keys[2], 0, None)
    assert torch.equal(rotated[2], ref) and not torch.allclose(rotated[2], keys[2])
    del prefix, rotated
    gc.collect()
    assert len(runner.rotated) == 0  # the cache never outlives the corrupted run
    plain = tracing.FastBlocks(gpt2_like)  # learned positions: the keys are used as they are
    prefix = tracing.Prefix(keys, keys, n_samples=2)
    assert plain.rotated_keys(prefix) is prefix.keys and len(plain.rotated) == 0
