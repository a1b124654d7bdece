"""Memory plans: byte counts against independent references, the peak rule, the device rule, bad input."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from analysis import memory
from analysis.memory import DEVICE, HOST, THROUGHOUT, MemoryPlan, MemoryRow

GiB = 2**30


def tiny(**kw) -> HookedTransformerConfig:
    base = dict(n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=16, d_vocab=50, act_fn="gelu", seed=0)
    return HookedTransformerConfig(**{**base, **kw})


CONFIGS = {
    "gpt2-like": dict(normalization_type="LN"),
    "llama-like": dict(
        normalization_type="RMS",
        n_key_value_heads=2,
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        act_fn="silu",
    ),
    "gemma2-like": dict(
        normalization_type="RMS",
        use_normalization_before_and_after=True,
        n_key_value_heads=2,
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
    ),
    "attn-only, no norms": dict(attn_only=True, normalization_type=None, d_mlp=None),
    "LN blocks, RMS final": dict(normalization_type="LN", final_rms=True),
    "qk norm, bf16": dict(normalization_type="RMS", use_qk_norm=True, dtype=torch.bfloat16),
    "folded LN": dict(normalization_type="LNPre", d_vocab_out=7),
}


@pytest.mark.parametrize("kind", CONFIGS)
def test_parameters_match_a_hooked_transformer(kind):
    """The config-only count equals what TransformerLens actually allocates, name by name."""
    cfg = tiny(**CONFIGS[kind])
    model = HookedTransformer(cfg)
    assert memory.parameter_shapes(cfg) == {n: tuple(p.shape) for n, p in model.named_parameters()}
    row = memory.parameters(cfg)
    assert row.bytes == sum(p.numel() * p.element_size() for p in model.parameters())
    assert row.dtype == str(cfg.dtype).removeprefix("torch.")


def test_block_weights_are_the_compressed_matrices():
    cfg = tiny(**CONFIGS["llama-like"])
    model = HookedTransformer(cfg)
    want = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.startswith("blocks.") and n.rsplit(".", 1)[1].lstrip("_").startswith("W_")
    )
    assert memory.n_parameters(cfg, ("attn", "mlp")) == want
    mlp = sum(p.numel() for n, p in model.named_parameters() if ".mlp.W_" in n)
    assert memory.n_parameters(cfg, ("mlp",)) == mlp == 2 * 3 * 32 * 64


def test_xtx_of_an_11008_wide_mlp_in_float64():
    row = memory.gram("XᵀX at blocks.0.mlp.hook_post", 11008, 1, "calibration")
    assert row.bytes == 11008**2 * 8 and row.dtype == "float64"
    assert memory.gram("x", 11008, 32, "calibration").bytes == 32 * 11008**2 * 8
    assert memory.human(row.bytes) == "924.50 MiB"  # 0.90 GiB per layer


def test_units_and_dtypes():
    assert memory.human(512) == "512 B"
    assert memory.human(1.41 * GiB) == "1.41 GiB"
    assert memory.dtype_name(torch.bfloat16) == "bfloat16"
    assert memory.dtype_name("torch.float32") == memory.dtype_name("float") == "float32"
    assert MemoryRow("x", (3, 5), torch.float16).bytes == 30


def test_peak_is_throughout_plus_the_largest_phase():
    rows = (
        MemoryRow("weights", (100,), "uint8"),
        MemoryRow("a only", (50,), "uint8", phase="a"),
        MemoryRow("b only", (35,), "uint8", 2, phase="b"),
        MemoryRow("a and b", (10,), "uint8", phase=("a", "b")),
        MemoryRow("host cache", (7,), "uint8", 3, phase="a", where=HOST),
    )
    plan = MemoryPlan("study", "model", rows)
    assert plan.phases() == ["a", "b"]
    assert plan.held("a") == 100 + 50 + 10 and plan.held("b") == 100 + 70 + 10
    assert plan.peak() == 180 and plan.peak_phase() == "b"
    assert plan.peak(HOST) == 21 and plan.peak_phase(HOST) == "a"
    only_weights = MemoryPlan("s", "m", rows[:1])
    assert only_weights.peak() == 100 and only_weights.peak_phase() == THROUGHOUT
    nested = memory.rows_of([rows[0], [rows[1], [rows[2]]]])
    assert nested == rows[:3]


def _plan(device_gib: float, host_gib: float = 1) -> MemoryPlan:
    return MemoryPlan(
        "study",
        "model",
        (
            MemoryRow("weights", (int(device_gib * GiB),), "uint8"),
            MemoryRow("host", (int(host_gib * GiB),), "uint8", phase="p", where=HOST),
        ),
    )


def test_a_plan_past_one_device_states_the_n_devices_rule():
    plan = _plan(2.5)
    assert not memory.fits(plan, 1 * GiB)
    assert memory.devices_needed(plan, 1 * GiB) == 3
    text = memory.rule(plan, 1 * GiB, host=4 * GiB)
    assert "Does not fit one device" in text and "k = 3" in text
    assert "n_devices=k" in text and "device_map='auto'" in text
    assert "exceeds this machine's RAM" not in text


def test_a_plan_that_fits_says_so():
    plan = _plan(0.5, host_gib=8)
    assert memory.fits(plan, 1 * GiB) and memory.devices_needed(plan, 1 * GiB) == 1
    text = memory.rule(plan, 1 * GiB, host=4 * GiB)
    assert "Fits one device of 1.00 GiB (50% of it)" in text
    assert "exceeds this machine's RAM" in text
    assert "not checked" in memory.rule(plan, None)


def test_frame_shows_sizes_and_both_peaks():
    plan = _plan(1.41)
    frame = memory.frame(plan)
    assert list(frame["object"])[-2:] == ["peak on the device", "peak on the host"]
    assert frame["size"].iloc[0] == "1.41 GiB" and frame["bytes"].iloc[-2] == plan.peak(DEVICE)
    assert frame["shape"].iloc[0] == f"[{int(1.41 * GiB):,}]"


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="non-negative"):
        MemoryRow("x", (4, -1), "float32")
    with pytest.raises(ValueError, match="non-negative"):
        MemoryRow("x", (4,), "float32", count=-2)
    with pytest.raises(ValueError, match="Unknown dtype"):
        MemoryRow("x", (4,), "complex32")
    with pytest.raises(ValueError, match="where"):
        MemoryRow("x", (4,), "float32", where="disk")
    with pytest.raises(ValueError, match="phase"):
        MemoryRow("x", (4,), "float32", phase=())
    with pytest.raises(ValueError, match="positive"):
        memory.fits(_plan(1), 0)
    with pytest.raises(ValueError, match="negative"):
        memory.human(-1)
    with pytest.raises(ValueError, match="mixture-of-experts"):
        memory.parameter_shapes(tiny(num_experts=4, experts_per_token=2, gated_mlp=True))


def test_device_bytes_without_a_gpu():
    assert memory.device_bytes("cpu") is None
    if not torch.cuda.is_available():
        assert memory.device_bytes("cuda") is None
    assert memory.host_bytes() is None or memory.host_bytes() > 0
