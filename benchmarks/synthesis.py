"""Benchmark: seconds per oracle cell (one component x one operation) against a naive loop.

The oracle of the synthesis chapter (:mod:`analysis.compress.oracle`) compresses one component
alone (50% magnitude pruning, 3-bit quantization, or removal) and scores the eval windows. Ours
is what :func:`analysis.compress.oracle.measure` runs for a cell (uncached): it keeps the dense
residual stream entering each layer (:class:`analysis.compress.oracle.DenseStream`) and runs a
cell only from its layer on. The naive loop
(:func:`analysis.compress.oracle.naive_cell_nll`) reapplies the compression and re-evaluates the
whole model from the tokens for every cell. Both run in this process, on the same windows and the
same cells, in the same batches, cell by cell side by side (so that both see the same load on a
shared machine; which goes first alternates): the attention and MLP of ``--layers`` evenly spaced layers (the
first and the last included, so the mean cell starts half way down) under the three operations.
It prints the seconds of each, the largest difference between their per-window NLL sums, then the
same for the fact part of a cell (``--facts`` prompts of :func:`analysis.data.facts`: top-1 hits
from the held stream of the right-padded prompts against :func:`analysis.evaluate.fact_recall` on
the whole model, and how many hits differ), and as its last line ``cell_s=<ours> naive_cell_s=<naive> ratio=<naive / ours> maxdiff=<nats>``.

Run: ``.venv/bin/python benchmarks/synthesis.py`` (about 2 minutes on 2 idle CPU cores with the
defaults: 4 layers x 2 kinds x 3 operations, 4 windows of 256 tokens, on the ``cpu`` profile's model).
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

from analysis.compress import oracle  # noqa: E402
from analysis.config import get_profile  # noqa: E402
from analysis.data import facts, lm_tokens  # noqa: E402
from analysis.evaluate import fact_recall  # noqa: E402
from analysis.forward import final_logits, first_target_token, prompt_batch  # noqa: E402
from analysis.forward import windows as cut  # noqa: E402
from analysis.models import load_model  # noqa: E402


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--layers", type=int, default=4, help="evenly spaced layers whose attention and MLP are cells")
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--facts", type=int, default=64, help="fact prompts whose top-1 hits each cell also scores")
    args = parser.parse_args()

    profile = get_profile(args.profile)
    model = load_model(profile.model)
    L = model.cfg.n_layers
    k = max(1, min(args.layers, L))
    layers = sorted({round(i * (L - 1) / max(1, k - 1)) for i in range(k)})
    units = [f"blocks.{l}.{kind}" for l in layers for kind in ("attn", "mlp")]
    w = cut(lm_tokens(model.tokenizer, "eval", n_tokens=args.windows * args.context), args.context)
    n_cells = len(units) * len(oracle.OPERATIONS)
    print(f"model={profile.model} layers={layers} cells={n_cells} windows={len(w)}x{args.context}")

    # ours: the oracle's own pass, cell by cell; the naive loop's cell right beside it, so that both
    # see the same load on a shared machine (which one goes first alternates)
    ops = oracle.OPERATIONS
    cells = sorted((oracle.OracleCell(u, op) for u in units for op in ops), key=lambda c: c.layer)
    stream = oracle.DenseStream(model, w, args.batch_size)
    ours_nll, naive_nll, ours_s, naive_s = [], [], 0.0, 0.0

    def ours_cell(cell):
        stream.at(cell.layer)  # the stream's advance counts as the cell's
        with oracle.applied(model, cell, ops[cell.operation]):
            return stream.nll(cell.layer)

    jobs = [(lambda: stream.nll(0), lambda: oracle.naive_cell_nll(model, w, None, None, args.batch_size))]
    jobs += [
        (lambda c=c: ours_cell(c), lambda c=c: oracle.naive_cell_nll(model, w, c, ops[c.operation], args.batch_size))
        for c in cells
    ]
    for i, (ours_job, naive_job) in enumerate(jobs):
        for which in ("ours", "naive") if i % 2 == 0 else ("naive", "ours"):
            t0 = time.perf_counter()
            if which == "ours":
                ours_nll.append(ours_job())
                ours_s += time.perf_counter() - t0
            else:
                naive_nll.append(naive_job())
                naive_s += time.perf_counter() - t0
    ours = oracle.Oracle(tuple(cells), torch.stack(ours_nll[1:]), ours_nll[0], w.shape[1] - 1, torch.zeros(len(cells)))
    naive = naive_nll

    # the fact part of a cell: the held stream of the right-padded prompts against fact_recall
    fs = facts(args.facts)
    prompts, targets = list(fs["prompt"]), list(fs["target"])
    toks, last = prompt_batch(model, prompts)
    fact_stream = oracle.DenseStream(model, [t[: n + 1] for t, n in zip(toks.cpu(), last.tolist())], args.batch_size)
    target_ids = torch.tensor([first_target_token(model, t) for t in targets])

    def ours_facts(cell):
        fact_stream.at(cell.layer)
        with oracle.applied(model, cell, ops[cell.operation]), torch.inference_mode():
            top = final_logits(model, fact_stream.last(cell.layer)).float().log_softmax(-1).argmax(-1).cpu()
            return top == target_ids

    def naive_facts(cell):
        with oracle.applied(model, cell, ops[cell.operation]):
            return fact_recall(model, prompts, targets, batch_size=args.batch_size)

    fact_s, naive_fact_s, fact_diff = 0.0, 0.0, 0
    for i, c in enumerate(cells):
        for which in ("ours", "naive") if i % 2 == 0 else ("naive", "ours"):
            t0 = time.perf_counter()
            hits = ours_facts(c) if which == "ours" else naive_facts(c)
            if which == "ours":
                fact_s += time.perf_counter() - t0
                ours_hits = hits
            else:
                naive_fact_s += time.perf_counter() - t0
                naive_hits = hits
        fact_diff += int((ours_hits != naive_hits).sum())

    maxdiff = float(max((ours.base_nll - naive[0]).abs().max(), (ours.window_nll - torch.stack(naive[1:])).abs().max()))
    for op in oracle.OPERATIONS:
        mean = ours.frame().query("operation == @op")["Δ log-ppl"]
        print(f"{op:9s} Δ log-ppl over the cells: min {mean.min():+.4f}  max {mean.max():+.4f}")
    print(f"ours  {ours_s:7.1f} s  ({ours_s / n_cells:.2f} s per cell)")
    print(f"naive {naive_s:7.1f} s  ({naive_s / n_cells:.2f} s per cell)")
    print(
        f"facts {fact_s:7.1f} s  ({fact_s / n_cells:.2f} s per cell; naive {naive_fact_s / n_cells:.2f} s) "
        f"for {len(prompts)} prompts; hits that differ: {fact_diff}"
    )
    ratio = naive_s / ours_s
    print(f"cell_s={ours_s / n_cells:.3f} naive_cell_s={naive_s / n_cells:.3f} ratio={ratio:.2f} maxdiff={maxdiff:.2e}")
    return ratio


if __name__ == "__main__":
    main()
