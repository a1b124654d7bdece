"""Benchmark: factorizing every MLP of the embedded decoder, per method, and training probes.

The work: all 90 MLP matrices of SmolLM2-135M (gate, up and down projections of 30 layers;
576 x 1536 and 1536 x 576) factorized at ratio 0.25 (rank 314 of 576) by each method of
:mod:`analysis.compress`, from a fresh start (no decomposition cache). The calibration statistics
(one forward pass over ``--calib-tokens`` tokens, and one backward pass per window for FWSVD's
Fisher) are timed separately, since a sweep computes them once for all methods and ratios.

Precision: plain SVD, FWSVD and ASVD run in float32; SVD-LLM whitens in float64, because
``X^T X`` squares the condition number of the activations. The benchmark also times a float64
plain SVD of the same matrices and prints the largest relative difference of the rank-312
products (rank 314), which says whether float32 loses anything there.

ASVD's rank search: the calibration-perplexity sensitivity of one layer's MLP at each kept
fraction of :data:`analysis.compress.lowrank.SENSITIVITY_KEEP` (2 windows of 256 tokens), and its
extrapolation to every layer, which the factorization chapter's ``cpu`` profile runs once.

MMLU: zero-shot letter scoring (one forward per question,
:func:`analysis.studies.factorization.evaluation.mmlu_correct`) of ``--mmlu-questions`` questions of
the subject-stratified sample, and its extrapolation to the ``cpu`` profile's decoder grid.

Probes: linear and 2-layer MLP probes (with their control tasks) on every layer of
all-MiniLM-L6-v2 for the sentiment task, timed per layer (all layers train as one batch).

The last line reads ``svd_s=<v> fwsvd_s=<v> asvd_s=<v> svdllm_s=<v>`` (seconds to factorize all
MLPs with each method). Run: ``.venv/bin/python benchmarks/factorize.py`` (about 2-4 minutes on
2 CPU cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("ANALYSIS_QUIET", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from analysis import compress, probing  # noqa: E402
from analysis.compress import lowrank  # noqa: E402
from analysis.data import lm_tokens, load_task  # noqa: E402
from analysis.models import load_model  # noqa: E402


def factorize_all(model, method: str, ratio: float, context: compress.Calibration) -> tuple[float, dict]:
    """Seconds to compute the low-rank product of every MLP matrix with ``method``; and the products."""
    params = dict(model.named_parameters())
    out = {}
    t0 = time.perf_counter()
    for w in compress.mlp_weights(model):
        lin = compress.to_linear(w, params[compress.parameter_name(model, w)].detach())
        stored = compress.Stored(lin.clone(), 16.0, lin.numel())
        out[w] = compress.factorization(method, ratio)(stored, name=w, context=context).weight
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--calib-tokens", type=int, default=2048)
    parser.add_argument("--grad-examples", type=int, default=4)
    parser.add_argument("--probe-examples", type=int, default=200)
    parser.add_argument("--mmlu-questions", type=int, default=57)
    args = parser.parse_args(argv)

    model = load_model("smollm2-135m")
    weights = compress.mlp_weights(model)
    d_in, d_out = compress.to_linear(weights[0], model.blocks[0].mlp.W_in).shape
    rank = compress.rank_for_ratio(d_in, d_out, args.ratio)
    print(
        f"model {model.cfg.model_name}: {len(weights)} MLP matrices; ratio {args.ratio} -> rank {rank} of "
        f"{min(d_in, d_out)}; torch threads {torch.get_num_threads()}"
    )

    tokens = lm_tokens(model.tokenizer, "calib", args.calib_tokens)
    t0 = time.perf_counter()
    ctx = compress.calibration_stats(model, tokens, weights, kinds=("xtx", "absmean"), context=256)
    fwd_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    grads = compress.calibration_stats(
        model, tokens, weights, kinds=("grad2",), context=256, max_grad_examples=args.grad_examples
    )
    bwd_s = time.perf_counter() - t0
    ctx.stats.update(grads.stats)
    print(
        f"calibration: X^T X and mean |x| over {len(tokens)} tokens {fwd_s:.1f} s; "
        f"Fisher rows from {args.grad_examples} backward passes {bwd_s:.1f} s"
    )

    times, products = {}, {}
    for method in compress.FACTOR_METHODS:
        times[method], products[method] = factorize_all(model, method, args.ratio, ctx)
        print(
            f"{compress.FACTORIZATIONS[method].__name__:>7}: {times[method]:6.1f} s for {len(weights)} matrices "
            f"({1000 * times[method] / len(weights):.0f} ms each)"
        )

    units = lowrank.mlp_units(model, [0])
    windows = tokens[: 2 * 256].view(2, 256)
    t0 = time.perf_counter()
    lowrank.truncation_sensitivity(model, units, windows, ctx, lowrank.SENSITIVITY_KEEP)
    sens_s = time.perf_counter() - t0
    n_units = len(lowrank.mlp_units(model))
    print(
        f"ASVD sensitivity: one layer's MLP x {len(lowrank.SENSITIVITY_KEEP)} kept fractions on 2 windows of 256 "
        f"tokens {sens_s:.1f} s; the {n_units}-layer search about {n_units * sens_s / 60:.1f} min"
    )

    params = dict(model.named_parameters())
    t0 = time.perf_counter()
    worst = 0.0
    for w in weights:
        W = compress.to_linear(w, params[compress.parameter_name(model, w)].detach()).double()
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        ref = (U[:, :rank] * S[:rank]) @ Vh[:rank]
        worst = max(worst, float((products["svd"][w].double() - ref).norm() / ref.norm()))
    f64_s = time.perf_counter() - t0
    print(
        f"plain SVD in float64: {f64_s:.1f} s ({f64_s / times['svd']:.2f}x float32); largest relative "
        f"difference of the float32 products from float64: {worst:.1e}"
    )

    from analysis.studies import factorization

    fcfg = factorization.config_for("cpu")
    items = factorization.mmlu_items(args.mmlu_questions)
    t0 = time.perf_counter()
    hits = factorization.mmlu_correct(model, items, batch_size=fcfg.batch_size)
    mmlu_s = time.perf_counter() - t0
    per_cell = mmlu_s / len(items) * (fcfg.n_mmlu or 14_042)
    scored = [c for c in fcfg.cells() if fcfg.mmlu_ratios is None or c[1] in (0.0, *fcfg.mmlu_ratios)]
    print(
        f"MMLU: {len(items)} questions (accuracy {sum(hits) / len(hits):.2f}) in {mmlu_s:.1f} s; the cpu profile's "
        f"{fcfg.n_mmlu} per cell about {per_cell:.0f} s, x {len(scored)} scored cells about "
        f"{per_cell * len(scored) / 60:.1f} min"
    )

    encoder = load_model("minilm-l6")
    ds = load_task("sentiment", n=args.probe_examples, seed=0)
    t0 = time.perf_counter()
    feats = probing.hidden_states(encoder, ds["text"][:])
    feat_s = time.perf_counter() - t0
    L = encoder.cfg.n_layers
    cfg = probing.ProbeConfig(seeds=(0,))
    for kind in ("linear", "mlp"):
        t0 = time.perf_counter()
        probing.probe_layers(
            feats,
            ds["label"][:],
            ds["group"][:],
            ds["text"][:],
            probing.ProbeConfig(seeds=(0,), kinds=(kind,), steps=cfg.steps, hidden=cfg.hidden),
        )
        s = time.perf_counter() - t0
        print(
            f"{kind} probe + control, {len(ds)} examples, {cfg.steps} steps: {1000 * s / L:.0f} ms per layer "
            f"({L} layers trained as one batch in {s:.2f} s)"
        )
    print(f"features for {len(ds)} texts from {encoder.cfg.model_name}: {feat_s:.1f} s")
    print(" ".join(f"{m}_s={times[m]:.2f}" for m in compress.FACTOR_METHODS))


if __name__ == "__main__":
    main()
