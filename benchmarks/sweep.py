"""Benchmark: seconds per sweep cell on the ``cpu`` profile, and the share spent applying the plan.

A cell of the information-aware compression sweep compresses the model reversibly (prune and
quantize every attention and MLP weight per its density level), scores it against the
reference (perplexity, accuracy and KL on ``eval_tokens`` held-out tokens, fact recall on
``n_facts`` eval facts) and restores the weights. This runs a few representative cells of the
chapter's grid uncached, in one process, and reports per cell the time to apply and restore the
plan and the time to evaluate.

Cells run in the chapter's order, and every cell counts, the first ones included: a weight's
first (prune, bits) pair is computed, later cells that give it the same pair are served from
the compression memo (one copy), as in the chapter's sweep. Last line: ``cell_s=<mean seconds per cell> apply_share=<apply / cell>``.

Run: ``.venv/bin/python benchmarks/sweep.py`` (about 2 minutes on 2 idle CPU cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("ANALYSIS_QUIET", "1")

import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from analysis import scores  # noqa: E402
from analysis.config import get_profile  # noqa: E402
from analysis.models import load_model  # noqa: E402
from analysis.studies import sweep  # noqa: E402


def main() -> None:
    profile = get_profile("cpu")
    cfg = sweep.config_for(profile)
    model = load_model(profile.model)
    by_name = {"weight magnitude": scores.weight_magnitude(model)}
    t0 = time.perf_counter()
    reference = sweep.reference_for(model, cfg, profile).reference
    print(
        f"reference built in {time.perf_counter() - t0:.1f} s: {reference.base.n_tokens} tokens, "
        f"{reference.base.n_facts} facts"
    )
    # one control setting of the chapter's grid, in its order: a score, its random controls,
    # the two constant baselines (uniform cells) and a uniform cell
    wm = "weight magnitude"
    names = [wm] + [f"random:{wm}:{s}" for s in range(cfg.n_shuffles)] + ["constant low", "constant high"]
    prune, bits = cfg.controls[0]
    cells = sweep.grid(names, [prune], [bits]) + sweep.uniform_grid(cfg)[:1]
    apply_s = eval_s = 0.0
    for cell in cells:
        t = time.perf_counter()
        r = sweep.evaluate_cell(model, reference, cell, by_name)
        total = time.perf_counter() - t
        restore = total - r.apply_s - r.eval_s
        apply_s += r.apply_s + restore
        eval_s += r.eval_s
        print(
            f"{cell.label:70s} apply+restore {r.apply_s + restore:5.2f} s  eval {r.eval_s:5.2f} s  "
            f"ppl {r.perplexity:9.3f}  {r.model_mb:6.1f} MB"
        )
    n = len(cells)
    print(f"cell_s={(apply_s + eval_s) / n:.2f} apply_share={apply_s / (apply_s + eval_s):.3f}")


if __name__ == "__main__":
    main()
