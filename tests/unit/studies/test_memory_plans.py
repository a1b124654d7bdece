"""Each study's memory plan on tiny configs, its largest objects against hand counts, and the chapter
cells that print it (only under ``gpu``)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import jupytext
import pandas as pd
import pytest
from transformer_lens import HookedTransformerConfig

from analysis import memory
from analysis.config import ROOT, get_profile
from analysis.studies import adaptive, capability, factorization, memory_plans, sweep, tracing, variance

CONFIG_FOR = {
    "causal_tracing": tracing.trace_config_for,
    "information_aware_compression": sweep.sweep_config_for,
    "factorization": factorization.factor_config_for,
    "capability_density": capability.config_for,
    "adaptive_compress": adaptive.config_for,
    "variance_vs_importance": variance.variance_config_for,
}


def llama_like(n_layers=2, d_model=32, d_mlp=88, n_heads=4, d_vocab=50) -> HookedTransformerConfig:
    return HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        d_mlp=d_mlp,
        n_ctx=64,
        d_vocab=d_vocab,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=d_model // n_heads,
        gated_mlp=True,
        model_name="tiny-llama",
        init_weights=False,
    )


def plan_for(chapter: str, cfg: HookedTransformerConfig, profile: str) -> memory.MemoryPlan:
    args = (get_profile(profile),) if chapter == "information_aware_compression" else ()
    return memory_plans.PLANS[chapter](cfg, CONFIG_FOR[chapter](profile), *args)


@pytest.mark.parametrize("profile", ["smoke", "gpu"])
@pytest.mark.parametrize("chapter", list(memory_plans.PLANS))
def test_every_plan_builds_and_holds_the_weights_throughout(chapter, profile):
    cfg = llama_like()
    plan = plan_for(chapter, cfg, profile)
    weights = memory.parameters(cfg).bytes
    assert plan.rows[0].bytes == weights and plan.rows[0].phase == memory.THROUGHOUT
    assert plan.phases() and plan.peak() > weights and plan.peak(memory.HOST) >= 2 * weights
    assert all(plan.held(p) <= plan.peak() for p in plan.phases())
    assert plan.model == "tiny-llama"


def test_factorization_counts_svdllm_statistics_and_decompositions():
    """Llama-2-7B's shapes under ``gpu``: float64 XᵀX sums of 32 layers, a float32 copy per calibration
    size, and one decomposition per weight, method and calibration size."""
    cfg = llama_like(n_layers=32, d_model=4096, d_mlp=11008, n_heads=32, d_vocab=32000)
    fcfg = factorization.factor_config_for("gpu")
    rows = {r.object: r for r in memory_plans.factorization(cfg, fcfg).rows}
    sums = rows["XᵀX sums (float64), blocks.{l}.mlp.hook_post"]
    assert sums.bytes == 32 * 11008**2 * 8 and sums.phase == "calibration statistics"
    n_sizes = len({fcfg.calib_tokens, *fcfg.calib_sizes})
    assert rows["XᵀX per calibration size, blocks.{l}.mlp.hook_post"].bytes == 32 * n_sizes * 11008**2 * 4
    dec = rows["decompositions of mlp.W_out (left, s, right)"]
    k = 4096  # min(11008, 4096): left [11008, k], s [k], right [k, 4096]
    assert dec.bytes_each == (11008 * k + k + k * 4096) * 4
    assert dec.count == 32 * (1 + 3 * n_sizes)  # svd once; fwsvd, asvd, svdllm per calibration size


def test_capability_trains_one_sae_per_layer_with_adamw():
    cfg = llama_like(n_layers=3)
    ccfg = capability.config_for("smoke")
    rows = {r.object: r for r in memory_plans.capability(cfg, ccfg).rows}
    d_sae = ccfg.sae.expansion * 32
    assert rows["SAE W_enc + W_dec"].bytes == 3 * 2 * 32 * d_sae * 4
    assert rows["AdamW exp_avg + exp_avg_sq"].bytes == 2 * rows["SAE W_enc + W_dec"].bytes
    assert rows["ActivationPool: hook_z of every SAE key"].where == memory.HOST  # tiny: the pool fits


def test_adaptive_caches_the_seed_layers_on_the_host():
    cfg = llama_like(n_layers=26)
    acfg = adaptive.config_for("smoke")
    rows = {r.object: r for r in memory_plans.adaptive(cfg, acfg).rows}
    cached = rows["blocks.{l}.hook_resid_post, training tokens"]
    n = (acfg.train_tokens // (acfg.context - 1)) * (acfg.context - 1)
    assert cached.where == memory.HOST and cached.count == 3 and cached.bytes == 3 * n * 32 * 4


def test_tracing_batches_the_noise_samples():
    cfg = llama_like()
    tcfg = tracing.trace_config_for("gpu")
    rows = memory_plans.tracing(cfg, tcfg).rows
    cache = next(r for r in rows if r.object.startswith("run_with_cache"))
    samples = max(tcfg.max_samples, tcfg.convergence_samples, tcfg.heatmap_samples)
    assert cache.shape[0] == samples + 1 and cache.shape[2] == memory_plans.PROMPT_TOKENS


def test_factorization_needs_mlps():
    cfg = HookedTransformerConfig(n_layers=1, d_model=8, d_head=4, n_heads=2, n_ctx=8, d_vocab=10, attn_only=True)
    with pytest.raises(ValueError, match="no MLPs"):
        memory_plans.factorization(cfg, factorization.factor_config_for("smoke"))


def chapter_cell(chapter: str) -> str:
    nb = jupytext.read(ROOT / "book" / f"{chapter}.md")
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "memory_plans." in c.source]
    assert len(cells) == 1, f"{chapter} should have one memory-plan cell"
    return cells[0]


@pytest.mark.parametrize("chapter", list(memory_plans.PLANS))
def test_chapter_cell_prints_the_plan_under_gpu_only(chapter, capsys, monkeypatch):
    from analysis import book

    source = chapter_cell(chapter)
    assert re.search(rf"book\.memory_plan\(memory_plans\.{memory_plans.PLANS[chapter].__name__}\(", source)
    tables = []
    for name in ("smoke", "gpu"):
        profile = get_profile(name)
        monkeypatch.setattr(book, "table", lambda frame, stem: tables.append((name, stem, frame)))
        exec(
            source,
            {
                "profile": profile,
                "model": SimpleNamespace(cfg=llama_like()),
                "cfg": CONFIG_FOR[chapter](name),
                "book": book,
            },
        )
        out = capsys.readouterr().out
        if name == "smoke":
            assert out == "" and not tables
    assert [(n, s) for n, s, _ in tables] == [("gpu", "memory_plan")]
    assert isinstance(tables[0][2], pd.DataFrame) and "Rule:" in out and "n_devices=k" in out
