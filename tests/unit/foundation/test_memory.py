"""analysis.memory: a measured peak follows the work, measures nest, the cache logs them, and the
pre-flight check counts what TransformerLens builds and warns when it cannot fit."""

from __future__ import annotations

import mmap
import time
import warnings

import pytest
import torch
from transformer_lens import HookedTransformer

from analysis import cache, memory

N = 2**24
"""Floats in a CUDA unit of work (64 MiB)."""
UNIT = 4 * N
"""Bytes in a unit of work."""
needs_proc = pytest.mark.skipif(memory.rss() is None, reason="no /proc/self/statm")


def fresh(nbytes: int) -> mmap.mmap:
    """``nbytes`` of new private anonymous pages, each written once: memory the process did not hold
    before, whatever its allocator kept from earlier tests (malloc can serve a tensor from heap pages
    an earlier test freed but the process still holds, and then nothing grows)."""
    pages = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, nbytes, mmap.PAGESIZE):
        pages[offset] = 1
    return pages


def hold(nbytes: int) -> int:
    """A computation that holds ``nbytes`` of fresh memory for a moment (so the sampler sees it)."""
    pages = fresh(nbytes)
    time.sleep(0.2)
    pages.close()
    return nbytes


def host(peaks: tuple[memory.Peak, ...]) -> memory.Peak:
    (peak,) = [p for p in peaks if p.measure == memory.HOST]
    return peak


@needs_proc
def test_a_measured_peak_grows_with_the_work(tmp_path):
    store = cache.DiskCache(tmp_path)
    added = {}
    for k in (1, 2):
        cache.cached(f"demo/hold{k}", lambda k=k: hold(k * UNIT), cache=store)
        run = cache.RUNS[-1]
        assert (run.name, run.hit) == (f"demo/hold{k}", False) and run.seconds > 0
        added[k] = host(run.peaks).added
    assert added[1] == pytest.approx(UNIT, rel=0.25)
    assert added[2] - added[1] == pytest.approx(UNIT, rel=0.25)  # twice the work, one unit more
    first = cache.RUNS[-2]
    cache.cached("demo/hold1", lambda: hold(UNIT), cache=store)
    hit = cache.RUNS[-1]
    assert (hit.name, hit.hit, hit.seconds, hit.peaks) == ("demo/hold1", True, 0.0, ())  # a hit ran nothing
    assert hit.recorded.seconds == pytest.approx(first.seconds) and hit.recorded.peaks == first.peaks  # its record


@needs_proc
def test_measures_nest_and_end_when_the_block_raises():
    with memory.measure() as outer:
        a = fresh(UNIT)
        with memory.measure() as inner:
            b = fresh(UNIT)
    assert host(inner.peaks).added == pytest.approx(UNIT, rel=0.25)
    assert host(outer.peaks).added == pytest.approx(2 * UNIT, rel=0.25)
    assert host(outer.peaks).total >= host(inner.peaks).total
    a.close()
    b.close()
    with pytest.raises(ValueError), memory.measure() as failed:
        raise ValueError
    assert host(failed.peaks).total > 0 and not failed.thread.is_alive()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peaks_are_exact_and_nest():
    torch.zeros(1, device="cuda")  # CUDA is in use
    with memory.measure() as outer:
        a = torch.empty(N, device="cuda")
        del a
        with memory.measure() as inner:
            b = torch.empty(N // 2, device="cuda")
    (cuda_inner,) = [p for p in inner.peaks if p.measure == memory.CUDA]
    (cuda_outer,) = [p for p in outer.peaks if p.measure == memory.CUDA]
    assert cuda_inner.added == UNIT // 2
    assert cuda_outer.added == UNIT  # the freed tensor before the inner reset still counts
    del b


LLAMA_LIKE = dict(
    normalization_type="RMS",
    n_key_value_heads=2,
    positional_embedding_type="rotary",
    rotary_dim=8,
    gated_mlp=True,
    act_fn="silu",
    dtype=torch.bfloat16,
)


@pytest.mark.parametrize("extra", [dict(normalization_type="LN"), LLAMA_LIKE], ids=["gpt2-like", "llama-like"])
def test_model_bytes_equal_what_a_built_model_holds(extra, tiny_cfg):
    cfg = tiny_cfg(**extra)
    model = HookedTransformer(cfg)
    held = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    assert memory.model_bytes(cfg) == held


def test_preflight_warns_only_when_it_cannot_fit(capsys, tiny_cfg):
    cfg = tiny_cfg()
    ram = memory.available("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert memory.preflight(cfg, {"a small cache": 2**20}, "cpu")
    assert "pre-flight on cpu" in capsys.readouterr().out
    if ram is not None:
        with pytest.warns(UserWarning, match="needs at least"):
            assert not memory.preflight(cfg, {"too big": 2 * ram}, "cpu")
