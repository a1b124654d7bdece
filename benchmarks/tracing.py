"""Benchmark: our causal-tracing engine against TransformerLens's ``patching`` functions.

The work: one fact prompt on SmolLM2-135M (11 tokens with BOS), corrupted by symmetric token
replacement of its subject, and the full trace: the residual stream (``hook_resid_pre``),
attention output (``hook_attn_out``) and MLP output (``hook_mlp_out``), each restored alone
(window 1) at every layer and every position. The metric is the probability of " Paris" at the
last position. TransformerLens does this with ``get_act_patch_resid_pre``,
``get_act_patch_attn_out`` and ``get_act_patch_mlp_out`` (one hooked forward pass per state);
our engine with :func:`analysis.tracing.trace` in the same process, on the same inputs.

It prints both timings, the ratio, the largest absolute difference of the two result grids,
the peak extra resident memory of each, and, as its last line, ``speedup=<ratio>
maxdiff=<value>``. The engine is timed ``--repeats`` times (median); TransformerLens once.

Run: ``.venv/bin/python benchmarks/tracing.py`` (about 2-4 minutes on 2 CPU cores).

On a machine shared with other jobs, OpenMP threads that spin while waiting make every small
PyTorch op many times slower; ``OMP_WAIT_POLICY=PASSIVE`` (set below unless already set)
removes that for both contenders alike.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("ANALYSIS_QUIET", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's patching bars would flood the output

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from transformer_lens import patching  # noqa: E402

from analysis import memory, tracing  # noqa: E402
from analysis.models import load_model  # noqa: E402

PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "The Eiffel Tower"
REPLACEMENT = "The Colosseum"
TARGET = " Paris"
TL_FUNCTIONS = {
    "hook_resid_pre": patching.get_act_patch_resid_pre,
    "hook_attn_out": patching.get_act_patch_attn_out,
    "hook_mlp_out": patching.get_act_patch_mlp_out,
}


def added_mib(meter: memory.Meter) -> float:
    """The host peak above the starting level that :func:`analysis.memory.measure` saw, in MiB."""
    (peak,) = [p for p in meter.peaks if p.measure == memory.HOST]
    return peak.added / memory.MiB


def run_transformer_lens(model, clean, corrupt, target_id) -> tuple[dict[str, torch.Tensor], float, float]:
    """TransformerLens's patching functions on the full grid: results, seconds, peak extra MiB."""
    metric = lambda logits: torch.softmax(logits[0, -1].float(), dim=-1)[target_id]  # noqa: E731
    with memory.measure() as mem:
        t0 = time.perf_counter()
        with torch.no_grad():
            _, cache = model.run_with_cache(clean)
            out = {h: fn(model, corrupt, cache, metric).cpu() for h, fn in TL_FUNCTIONS.items()}
        seconds = time.perf_counter() - t0
    return out, seconds, added_mib(mem)


def run_engine(model, fast: bool | None) -> tuple[tracing.TraceResult, float, float]:
    """Our engine on the same work: result, seconds, peak extra MiB."""
    with memory.measure() as mem:
        t0 = time.perf_counter()
        result = tracing.trace(
            model,
            PROMPT,
            SUBJECT,
            TARGET,
            kinds=tuple(TL_FUNCTIONS),
            corruption="tokens",
            replacement=REPLACEMENT,
            window=1,
            fast=fast,
        )
        seconds = time.perf_counter() - t0
    return result, seconds, added_mib(mem)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of our engine (median)")
    args = parser.parse_args(argv)

    model = load_model("smollm2-135m")
    clean = model.to_tokens(PROMPT)
    corrupt = model.to_tokens(PROMPT.replace(SUBJECT, REPLACEMENT))
    target_id = int(model.to_tokens(TARGET, prepend_bos=False)[0, 0])
    L, T = model.cfg.n_layers, clean.shape[1]
    print(
        f"model {model.cfg.model_name}: {L} layers; prompt {T} tokens; corrupted prompt "
        f"{model.to_string(corrupt[0, 1:])!r}; torch threads {torch.get_num_threads()}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    print(f"work: 3 kinds x {L} layers x {T} positions = {3 * L * T} restored states")

    run_engine(model, None)  # warm-up: builds the fused weights once, touches every code path
    engine_times, engine_mem = [], []
    for _ in range(args.repeats):
        result, seconds, extra = run_engine(model, None)
        engine_times.append(seconds)
        engine_mem.append(extra)
    blocks_result, blocks_s, blocks_mem = run_engine(model, False)
    tl, tl_s, tl_mem = run_transformer_lens(model, clean, corrupt, target_id)

    ours_s = statistics.median(engine_times)
    maxdiff = max(float((tl[h] - result[h]).abs().max()) for h in TL_FUNCTIONS)
    maxdiff_blocks = max(float((tl[h] - blocks_result[h]).abs().max()) for h in TL_FUNCTIONS)
    base = (memory.rss() or 0) / memory.MiB
    print(f"clean p={result.clean_prob:.4f}  corrupted p={result.corrupted_prob:.4f}")
    print(f"TransformerLens patching : {tl_s:8.2f} s   peak extra memory {tl_mem:7.1f} MiB")
    print(
        f"engine, TL blocks + hooks: {blocks_s:8.2f} s   peak extra memory {blocks_mem:7.1f} MiB   "
        f"({tl_s / blocks_s:.1f}x, maxdiff {maxdiff_blocks:.2e})"
    )
    print(
        f"engine, fast blocks      : {ours_s:8.2f} s   peak extra memory {max(engine_mem):7.1f} MiB   "
        f"(median of {args.repeats}: {', '.join(f'{t:.2f}' for t in engine_times)})"
    )
    print(f"process resident memory  : {base:8.1f} MiB (model weights included)")
    print(f"speedup={tl_s / ours_s:.1f} maxdiff={maxdiff:.2e}")


if __name__ == "__main__":
    main()
