"""Benchmark: fitting all 30 block maps of SmolLM2 from streamed ``X^T X`` against a naive fit.

The work: one affine least-squares map per block, from ``blocks.{l}.hook_resid_pre`` to
``hook_resid_post``, on ``--tokens`` tokens of training-split text.

- **streamed** (:func:`analysis.geometry.block_stats` then :func:`analysis.geometry.fit_map`): one
  forward pass accumulates a Gram matrix per residual state and a cross product per block, batch by
  batch; activations of one batch at a time are held (``[tokens in a batch, 31, d_model]``);
- **naive**: the same forward pass stores every state of every token (``[tokens, 31, d_model]``
  float32), then ``torch.linalg.lstsq`` fits each block on the stored design matrix.

Both fits are compared (largest relative difference of the weights), so the speed-up is not bought
with accuracy. Peak memory is the process's peak resident set (``ru_maxrss``) measured after each
phase; the naive phase runs second, so its growth over the streamed peak is what storing costs.

The last line reads ``fit_s=<streamed seconds> naive_s=<naive seconds> peak_mib=<peak RSS>``.
Run: ``.venv/bin/python benchmarks/geometry.py --tokens 4096`` (about 1-2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("ANALYSIS_QUIET", "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from analysis import geometry, hooks  # noqa: E402
from analysis.data import lm_tokens  # noqa: E402
from analysis.forward import windows  # noqa: E402
from analysis.models import load_model  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def streamed(model, tokens, context: int, batch_size: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    st = geometry.block_stats(model, tokens, context, batch_size)["block"]
    maps = {l: geometry.fit_map(s) for l, s in enumerate(st)}
    return time.perf_counter() - t0, maps


@torch.inference_mode()
def naive(model, tokens, context: int, batch_size: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    L = model.cfg.n_layers
    names = [hooks.resid_pre(0)] + [hooks.resid_post(l) for l in range(L)]
    wins = windows(tokens, context)
    parts = []
    for i in range(0, len(wins), batch_size):
        _, cache = model.run_with_cache(wins[i : i + batch_size], names_filter=names, stop_at_layer=L)
        parts.append(torch.stack([cache[n].reshape(-1, model.cfg.d_model) for n in names], 1))
    states = torch.cat(parts)  # [tokens, L + 1, d_model]: every activation at once
    ones = torch.ones(states.shape[0], 1, dtype=torch.float64)
    maps = {}
    for l in range(L):
        design = torch.cat([states[:, l].double(), ones], 1)
        sol = torch.linalg.lstsq(design, states[:, l + 1].double(), driver="gelsd").solution
        maps[l] = (sol[:-1], sol[-1])
    return time.perf_counter() - t0, maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    model = load_model("smollm2-135m")
    tokens = lm_tokens(model.tokenizer, "train", n_tokens=args.tokens)
    print(f"SmolLM2: {model.cfg.n_layers} blocks, d_model {model.cfg.d_model}; {args.tokens} tokens")
    base = peak_mib()
    fit_s, maps = streamed(model, tokens, args.context, args.batch_size)
    stream_peak = peak_mib()
    naive_s, ref = naive(model, tokens, args.context, args.batch_size)
    naive_peak = peak_mib()
    diff = max(float((maps[l].weight - ref[l][0]).norm() / ref[l][0].norm()) for l in maps)
    ridges = sum(m.ridge > 0 for m in maps.values())
    print(f"streamed: {fit_s:.1f} s, peak {stream_peak:.0f} MiB (model loaded: {base:.0f} MiB)")
    print(f"naive:    {naive_s:.1f} s, peak {naive_peak:.0f} MiB")
    print(f"largest relative weight difference {diff:.2e}; blocks regularized by a ridge: {ridges}")
    print(f"fit_s={fit_s:.2f} naive_s={naive_s:.2f} peak_mib={stream_peak:.0f}")


if __name__ == "__main__":
    main()
