"""Information-aware compression (seed 004, Scarlatescu and Mehta): prune fractions and bit
widths per information-density level, and whether density knows *where* to compress.

The seed scores each layer's attention and MLP (causal tracing after ROME, Meng et al. 2022;
weight and gradient magnitude as baselines), buckets the scores into low / medium / high density
and compresses low-density components hardest.

A :class:`Cell` names one compressed model: how components are sorted into low / medium /
high density (an *allocation*: a score's z-score levels, the seed's "constant" baselines, or a
random shuffle of a score's levels as a control) and what each level gets (a prune fraction
and a bit width per level). :func:`run_sweep` evaluates a grid of cells against a
:class:`analysis.evaluate.Reference` (perplexity, fact recall, KL to the base model), caching
each cell on disk so an interrupted sweep resumes, optionally across several processes.

High density means *compress least*: the seed writes prune ``[0.3, 0.2, 0.1]`` and bits
``[8, 16, 24]`` in the order (low, medium, high).

The seed's design compares allocations of different sizes. The verdicts here add two
size-matched controls: :func:`versus_random` (a score's levels shuffled: same bucket sizes, same
model size) and :func:`uniform_matched` (uniform compression interpolated to the same size);
:func:`seed_claims` tests the seed's four claims on our sweep.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from analysis import compress
from analysis.scores import LEVELS, ComponentScores

CONSTANT = ("constant low", "constant high")
"""The seed's baselines: every component treated as low (resp. high) density."""
TERCILES = " (terciles)"
"""Suffix of an allocation that buckets a score by equal-count terciles instead of z-scores."""
UNIFORM = "uniform"
"""Every component treated as medium density: with equal settings per level, plain uniform compression."""

SEED_RESULTS = {
    "model": "GPT-2 (124M)",
    "eval": "WikiText-2 perplexity",
    "perplexity_best": 5.552,
    "perplexity_worst": 13.275,
    "prune_grid": "e.g. [0.3, 0.2, 0.1] for (low, medium, high)",
    "bits_grid": "e.g. [8, 16, 24] for (low, medium, high)",
    "claims": [
        "all methods perform worse with more pruning",
        "weight magnitude is no better than compressing the whole network alike",
        "causal tracing and gradient magnitude perform well",
        "causal tracing does best with aggressive quantization and mild to moderate pruning",
    ],
}
"""The seed's reported numbers (its Figure 2 colour scale) and claims, quoted, not ours."""


@dataclass(frozen=True)
class SweepConfig:
    """Sizes of the information-aware compression study for one run profile."""

    eval_tokens: int
    """Held-out tokens each cell is scored on (perplexity, accuracy, KL to the base model)."""
    n_facts: int
    """Known facts whose recall each cell is scored on."""
    calib_tokens: int
    """Calibration tokens for the gradient-magnitude score."""
    prunes: tuple[tuple[float, float, float], ...]
    """The seed-style grid: prune fractions for (low, medium, high) density."""
    bits: tuple[tuple[int, int, int], ...]
    """The seed-style grid: bit widths for (low, medium, high) density."""
    pareto: tuple[tuple[tuple[float, float, float], tuple[int, int, int]], ...]
    """(prune, bits) settings compared across allocations at matched size."""
    uniform: tuple[tuple[float, int], ...]
    """(prune, bits) applied alike everywhere: the uniform size/perplexity curve."""
    random_seeds: tuple[int, ...] = (0, 1)
    """Seeds of the random-allocation control (a score's levels shuffled)."""
    model: str | None = None
    """Model to use instead of the profile's (the seed's GPT-2 under ``gpu``)."""
    batch_size: int = 8
    threshold: float = 0.5
    """The seed's z-score threshold between density levels."""
    n_procs: int = 1


_PRUNES = ((0.3, 0.2, 0.1), (0.5, 0.3, 0.1))
_BITS = ((2, 3, 4), (3, 4, 5), (4, 5, 6), (4, 6, 8), (8, 16, 16))
_PARETO = (((0.0, 0.0, 0.0), (3, 4, 5)), ((0.0, 0.0, 0.0), (4, 5, 6)), ((0.3, 0.2, 0.1), (6, 6, 6)))
_UNIFORM = ((0.0, 3), (0.0, 4), (0.0, 5), (0.0, 6), (0.0, 8), (0.1, 6), (0.2, 6), (0.3, 6))

SWEEP_CONFIGS: dict[str, SweepConfig] = {
    "smoke": SweepConfig(
        eval_tokens=256,
        n_facts=8,
        calib_tokens=256,
        prunes=_PRUNES[:1],
        bits=_BITS[1:2],
        pareto=_PARETO[:1],
        uniform=((0.0, 4), (0.0, 5)),
        random_seeds=(0,),
        batch_size=2,
    ),
    "cpu": SweepConfig(
        eval_tokens=2048, n_facts=120, calib_tokens=2048, prunes=_PRUNES, bits=_BITS, pareto=_PARETO, uniform=_UNIFORM
    ),
    "gpu": SweepConfig(
        eval_tokens=65_536,
        n_facts=1000,
        calib_tokens=32_768,
        prunes=_PRUNES + ((0.1, 0.05, 0.0),),
        bits=_BITS + ((8, 16, 24),),
        pareto=_PARETO,
        uniform=_UNIFORM + ((0.0, 8),),
        random_seeds=(0, 1, 2, 3),
        model="gpt2",
        batch_size=16,
    ),
}
"""Sizes per profile. ``cpu`` keeps the chapter near 15 minutes on 2 cores (about 10 s a cell)."""


def sweep_config_for(profile) -> SweepConfig:
    """The sweep sizes for a :class:`analysis.config.Profile` (or its name); ``profile.extra["sweep"]`` overrides fields."""
    from analysis.config import study_config

    return study_config(SWEEP_CONFIGS, profile, "sweep")


def seed_grid(cfg: SweepConfig, allocations: Sequence[str]) -> list[Cell]:
    """The seed's design: every allocation (plus the constant baselines) x prune x bits."""
    return grid(list(allocations) + list(CONSTANT), cfg.prunes, cfg.bits)


def pareto_grid(cfg: SweepConfig, allocations: Sequence[str]) -> list[Cell]:
    """Each allocation and its random controls at each Pareto setting, plus uniform compression.

    Pass score names with the :data:`TERCILES` suffix to compare equal-count buckets."""
    names = list(allocations) + [f"random:{a}:{s}" for a in allocations for s in cfg.random_seeds]
    cells = [Cell(a, p, b) for p, b in cfg.pareto for a in names]
    return cells + [Cell(UNIFORM, (p, p, p), (b, b, b)) for p, b in cfg.uniform]


@dataclass(frozen=True)
class Cell:
    """One compressed model of the sweep.

    ``allocation`` is a score name (its levels), ``"constant low"``/``"constant high"``, or
    ``"random:<score>:<seed>"`` (that score's levels shuffled over the layers of each kind: same
    bucket sizes per kind, hence exactly the same model size, with the information removed). ``prune`` and ``bits`` give
    (low, medium, high); a bit width of 16 or more leaves the weights unquantized.
    """

    allocation: str
    prune: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bits: tuple[int, int, int] = (16, 16, 16)

    def __post_init__(self):
        for name, v in (("prune", self.prune), ("bits", self.bits)):
            if len(v) != 3:
                raise ValueError(f"Cell.{name} needs one value per level (low, medium, high), got {v!r}.")
        for f in self.prune:
            compress.Prune(f)  # validates [0, 1)
        for b in self.bits:
            if not isinstance(b, int) or not 1 <= b <= 32:
                raise ValueError(f"Cell.bits must be integers in [1, 32], got {self.bits!r}.")

    @property
    def label(self) -> str:
        """``"<allocation> | prune [..] | bits [..]"``, for progress lines and plots."""
        return f"{self.allocation} | prune {list(self.prune)} | bits {list(self.bits)}"


def level_assignment(allocation: str, scores: Mapping[str, ComponentScores], threshold: float = 0.5) -> dict[str, str]:
    """``{component: level}`` for an allocation name (see :class:`Cell`)."""
    any_scores = next(iter(scores.values()), None)
    if allocation in CONSTANT or allocation == UNIFORM:
        if any_scores is None:
            raise ValueError("Constant allocations still need one score to list the components.")
        level = "medium" if allocation == UNIFORM else allocation.split()[1]
        return {c: level for c in any_scores.components}
    if allocation.startswith("random:"):
        _, name, seed = allocation.split(":")
        base = level_assignment(name, scores, threshold)
        rng = random.Random(int(seed))
        out = {}
        for kind in ("attn", "mlp"):  # shuffle within a kind: layers of one kind have equal sizes
            comps = [c for c in base if c.endswith(kind)]
            lv = [base[c] for c in comps]
            rng.shuffle(lv)
            out.update(zip(comps, lv))
        return {c: out[c] for c in base}
    if allocation.endswith(TERCILES) and allocation[: -len(TERCILES)] in scores:
        return scores[allocation[: -len(TERCILES)]].tercile_levels()
    if allocation not in scores:
        raise ValueError(
            f"Unknown allocation {allocation!r}; use one of {list(scores) + list(CONSTANT) + [UNIFORM]} "
            "or 'random:<score>:<seed>'."
        )
    return scores[allocation].levels(threshold)


def plan_for(cell: Cell, levels: Mapping[str, str], dense_bits: int = 16) -> compress.CompressionPlan:
    """The compression plan of a cell: each component gets its level's prune fraction and bits."""
    ops = {}
    for comp, level in levels.items():
        i = LEVELS.index(level)
        o = []
        if cell.prune[i] > 0:
            o.append(compress.Prune(cell.prune[i]))
        if cell.bits[i] < dense_bits:
            o.append(compress.Quantize(cell.bits[i]))
        if o:
            ops[comp] = o
    return compress.CompressionPlan(ops, dense_bits=dense_bits)


def grid(allocations: Sequence[str], prunes: Sequence[Sequence[float]], bits: Sequence[Sequence[int]]) -> list[Cell]:
    """Every (allocation, prune, bits) combination as cells."""
    # setting-major: consecutive cells share most (weight, operations) pairs, which the
    # compression memo then serves without recomputing
    cells = [Cell(a, tuple(p), tuple(b)) for p, b, a in itertools.product(prunes, bits, allocations)]
    if not cells:
        raise ValueError("Empty sweep grid: give at least one allocation, one prune setting and one bits setting.")
    return cells


@dataclass
class CellResult:
    """A cell's evaluation. ``bits_per_weight`` is over the compressed (attention and MLP) weights."""

    cell: Cell
    perplexity: float
    kl: float
    fact_recall: float
    accuracy: float
    bits_per_weight: float
    model_mb: float
    """Whole model in MB (10^6 bytes): compressed weights plus every other parameter at 16 bits."""
    apply_s: float
    eval_s: float
    counts: dict = field(default_factory=dict)
    """How many components fell in each level."""

    def row(self) -> dict:
        """The result as one row of :func:`frame` (prune and bits as strings, e.g. ``"[0.3, 0.2, 0.1]"``)."""
        c = self.cell
        return {
            "allocation": c.allocation,
            "prune": str(list(c.prune)),
            "bits": str(list(c.bits)),
            "perplexity": self.perplexity,
            "KL": self.kl,
            "fact recall": self.fact_recall,
            "accuracy": self.accuracy,
            "bits/weight": self.bits_per_weight,
            "model MB": self.model_mb,
            "apply s": self.apply_s,
            "eval s": self.eval_s,
        }


def evaluate_cell(
    model, reference, cell: Cell, scores: Mapping[str, ComponentScores], threshold: float = 0.5
) -> CellResult:
    """Compress ``model`` as ``cell`` says (reversibly), score it against ``reference``, restore it."""
    levels = level_assignment(cell.allocation, scores, threshold)
    plan = plan_for(cell, levels)
    t0 = time.perf_counter()
    with plan.applied(model) as size:
        t1 = time.perf_counter()
        r = reference.score(model)
        t2 = time.perf_counter()
    counts = {lv: sum(v == lv for v in levels.values()) for lv in LEVELS}
    return CellResult(
        cell,
        r.perplexity,
        r.kl,
        r.fact_recall,
        r.accuracy,
        size.bits_per_weight if size.n_weights else 16.0,
        _model_mb(model, size),
        t1 - t0,
        t2 - t1,
        counts,
    )


def _model_mb(model, size) -> float:
    if size.n_weights:
        return size.model_bits / 8e6
    from analysis.models import n_params

    return n_params(model) * size.dense_bits / 8e6


# worker state for run_sweep(n_procs > 1)
_WORKER: dict = {}


def _worker_init(model_name: str, reference_args: dict, scores: dict, threshold: float) -> None:
    import torch

    from analysis.evaluate import Reference
    from analysis.models import load_model

    torch.set_num_threads(1)
    model = load_model(model_name)
    _WORKER.update(model=model, reference=Reference(model, **reference_args), scores=scores, threshold=threshold)


def _worker_cell(cell: Cell) -> CellResult:
    w = _WORKER
    return evaluate_cell(w["model"], w["reference"], cell, w["scores"], w["threshold"])


def run_sweep(
    model,
    reference,
    cells: Iterable[Cell],
    scores: Mapping[str, ComponentScores],
    *,
    threshold: float = 0.5,
    cache_config: dict | None = None,
    n_procs: int = 1,
    model_name: str | None = None,
    reference_args: dict | None = None,
    desc: str = "sweep",
) -> list[CellResult]:
    """Evaluate every cell; each is cached under ``cache_config`` (the reference's settings) plus
    the cell and the scores it depends on, so a rerun or an interrupted sweep resumes.

    ``n_procs > 1`` evaluates missing cells in worker processes, each loading ``model_name``
    and rebuilding the reference from ``reference_args`` (one thread each).
    """
    from analysis.cache import DiskCache, cache_key, cached
    from analysis.models import model_key
    from analysis.progress import progress

    cells = list(cells)
    if not cells:
        raise ValueError("Empty sweep grid: give at least one cell.")
    if cache_config is None:
        raise ValueError("run_sweep needs cache_config (the reference's tokens, context and facts) to key its cache.")
    score_key = {k: v.values.tolist() for k, v in scores.items()}
    key_of = lambda c: {
        "sweep": cache_config,
        "cell": dataclasses.asdict(c),
        "scores": score_key,
        "threshold": threshold,
    }  # noqa: E731
    mkey = model_key(model)
    if n_procs > 1:
        store = DiskCache()
        missing = [c for c in cells if not store.load("sweep/cell", cache_key("sweep/cell", key_of(c), mkey))[0]]
        if missing:
            if model_name is None or reference_args is None:
                raise ValueError("n_procs > 1 needs model_name and reference_args to rebuild the model in each worker.")
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(
                n_procs,
                mp_context=mp.get_context("spawn"),
                initializer=_worker_init,
                initargs=(model_name, reference_args, dict(scores), threshold),
            ) as pool:
                for c, res in progress(zip(missing, pool.map(_worker_cell, missing)), total=len(missing), desc=desc):
                    store.save("sweep/cell", cache_key("sweep/cell", key_of(c), mkey), res)
    return [
        cached("sweep/cell", lambda c=c: evaluate_cell(model, reference, c, scores, threshold), key_of(c), mkey)
        for c in progress(cells, desc=desc)
    ]


def frame(results: Sequence[CellResult]):
    """All results as a pandas table, one row per cell."""
    import pandas as pd

    return pd.DataFrame([r.row() for r in results])


def uniform_matched(results: Sequence[CellResult], uniform: Sequence[CellResult]):
    """Each result beside uniform compression *at the same size*: the uniform cells' perplexity
    (log-scale) interpolated linearly in model size; ``delta < 0`` means the allocation beats uniform.
    Results outside the uniform cells' size range get NaN."""
    import numpy as np
    import pandas as pd

    u = sorted(uniform, key=lambda r: r.model_mb)
    xs = np.array([r.model_mb for r in u])
    ys = np.log(np.array([r.perplexity for r in u]))
    rows = []
    for r in results:
        inside = xs.min() <= r.model_mb <= xs.max()
        matched = float(np.exp(np.interp(r.model_mb, xs, ys))) if inside else float("nan")
        rows.append(
            {
                **r.row(),
                "uniform ppl at same size": matched,
                "delta log ppl": float(np.log(r.perplexity) - np.log(matched)) if inside else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def versus_random(results: Sequence[CellResult]):
    """Each score-based allocation against its random controls at the same setting.

    A random control shuffles the score's levels over components, so it has the same bucket
    sizes and hence the same model size: the comparison is exactly size-matched. ``delta log
    ppl < 0`` (and ``delta KL < 0``, ``delta recall > 0``) means the score's placement helps.
    """
    import numpy as np
    import pandas as pd

    rows = []
    by_setting: dict[tuple, dict[str, list[CellResult]]] = {}
    for r in results:
        by_setting.setdefault((r.cell.prune, r.cell.bits), {}).setdefault(r.cell.allocation, []).append(r)
    for (prune, bits), cells in by_setting.items():
        for name, (r,) in ((n, c) for n, c in cells.items() if not n.startswith("random:") and n != UNIFORM):
            rand = [x for n, c in cells.items() if n.startswith(f"random:{name}:") for x in c]
            if not rand:
                continue
            rp = np.array([x.perplexity for x in rand])
            rows.append(
                {
                    "score": name,
                    "prune": str(list(prune)),
                    "bits": str(list(bits)),
                    "model MB": r.model_mb,
                    "same size": all(abs(x.model_mb - r.model_mb) < 1e-9 for x in rand),
                    "perplexity": r.perplexity,
                    "random perplexity (mean)": float(rp.mean()),
                    "random perplexity (min..max)": f"{rp.min():.4g}..{rp.max():.4g}",
                    "delta log ppl": float(np.log(r.perplexity) - np.log(rp).mean()),
                    "delta KL": r.kl - float(np.mean([x.kl for x in rand])),
                    "delta fact recall": r.fact_recall - float(np.mean([x.fact_recall for x in rand])),
                    "n random": len(rand),
                }
            )
    return pd.DataFrame(rows)


def seed_claims(seed_frame, vs_random, scores: Sequence[str]):
    """The seed's four claims, each tested on our sweep: a table of claim, evidence and verdict
    (``holds`` is None where the sweep has no cells that test the claim)."""
    import numpy as np
    import pandas as pd

    f = seed_frame.copy()
    f["prune total"] = f["prune"].map(lambda s: sum(ast.literal_eval(s)))
    pairs = worse = 0
    for _, g in f.groupby(["allocation", "bits"]):
        g = g.sort_values("prune total")
        ppl, size = g["perplexity"].to_numpy(), g["model MB"].to_numpy()
        changed = np.diff(size) != 0  # e.g. "constant high" prunes 0.1 in every prune setting
        pairs += int(changed.sum())
        worse += int(((np.diff(ppl) > 0) & changed).sum())
    rows = [
        {
            "claim (the seed's)": SEED_RESULTS["claims"][0],
            "evidence (ours)": f"more pruning raised perplexity in {worse} of {pairs} (allocation, bits) pairs "
            "whose pruning differs",
            "holds": (worse >= 0.9 * pairs) if pairs else None,
        }
    ]

    def mean_delta(name):
        d = vs_random[vs_random["score"] == name]["delta log ppl"]
        return float(d.mean()) if len(d) else float("nan"), int((d < 0).sum()), len(d)

    d, better, n = mean_delta("weight magnitude")
    rows.append(
        {
            "claim (the seed's)": SEED_RESULTS["claims"][1],
            "evidence (ours)": f"weight magnitude vs size-matched random allocation: mean delta log ppl "
            f"{d:+.3f}; better in {better} of {n} settings",
            "holds": (better <= n / 2) if n else None,
        }
    )
    ev, ok = [], []
    for name in [s for s in scores if s in ("causal tracing", "gradient magnitude")]:
        d, better, n = mean_delta(name)
        if not n:  # no random controls: untested, not failed
            ev.append(f"{name}: no size-matched random controls")
            continue
        ev.append(f"{name}: mean delta log ppl {d:+.3f}, better than random in {better} of {n}")
        ok.append(better > n / 2 and d < 0)
    rows.append(
        {
            "claim (the seed's)": SEED_RESULTS["claims"][2],
            "evidence (ours)": "; ".join(ev),
            "holds": all(ok) if ok else None,
        }
    )
    mild = min(f["prune total"])
    aggressive = f[f["prune total"] == mild]
    bits_total = aggressive["bits"].map(lambda s: sum(ast.literal_eval(s)))
    cell = aggressive[(bits_total == bits_total.min()) & aggressive["allocation"].isin(scores)]
    best = cell.sort_values("perplexity").iloc[0] if len(cell) else None
    rows.append(
        {
            "claim (the seed's)": SEED_RESULTS["claims"][3],
            "evidence (ours)": "no cell"
            if best is None
            else f"at prune {best['prune']} and bits {best['bits']}, the best score-based allocation is "
            f"{best['allocation']} (perplexity {best['perplexity']:.4g}, {best['model MB']:.1f} MB)",
            "holds": None if best is None else best["allocation"] == "causal tracing",
        }
    )
    return pd.DataFrame(rows)


def allocation_summary(vs_random, matched):
    """Per score-based allocation: mean deltas against its random controls, the number of
    settings where it beats them (``delta log ppl < 0``), and its mean ``delta log ppl`` against
    uniform compression at the same size (NaN where no uniform cell brackets its size)."""
    summary = vs_random.groupby("score")[["delta log ppl", "delta KL", "delta fact recall"]].mean()
    summary["better than random (settings)"] = (
        vs_random.assign(b=vs_random["delta log ppl"] < 0).groupby("score")["b"].sum()
    )
    summary["vs uniform at same size (mean delta log ppl)"] = matched.groupby("allocation")["delta log ppl"].mean()
    return summary


def matched_verdict(vs_random, matched) -> dict:
    """The open question at matched size, counted: in how many comparisons a score-based
    allocation beats its size-matched random control, and uniform compression at the same size
    (a negative ``delta log ppl`` is a win; uniform comparisons outside the uniform cells' size
    range are not counted), with the mean ``delta log ppl`` of each."""
    tested = matched["delta log ppl"].notna()
    d = matched.loc[tested, "delta log ppl"]
    return {
        "wins vs random": int((vs_random["delta log ppl"] < 0).sum()),
        "n vs random": len(vs_random),
        "mean vs random": float(vs_random["delta log ppl"].mean()) if len(vs_random) else float("nan"),
        "wins vs uniform": int((d < 0).sum()),
        "n vs uniform": int(tested.sum()),
        "mean vs uniform": float(d.mean()) if len(d) else float("nan"),
    }


def redundancy_scores(model, cfg: SweepConfig, profile) -> dict[str, ComponentScores]:
    """The seed's three scores of every component, by name: causal tracing (the causal tracing
    chapter's traces, reused from the cache), weight magnitude, and gradient magnitude of the LM
    loss on ``cfg.calib_tokens`` calibration tokens in windows of ``profile.context``."""
    from analysis import data, scores
    from analysis.studies import tracing

    calib = data.lm_tokens(model.tokenizer, "calib", n_tokens=cfg.calib_tokens)
    return {
        "causal tracing": tracing.causal_scores(model, profile.name),
        "weight magnitude": scores.weight_magnitude(model),
        "gradient magnitude": scores.gradient_magnitude(model, calib, profile.context),
    }


def reference_for(model, cfg: SweepConfig, profile) -> tuple:
    """The evaluation every cell is scored by: ``cfg.eval_tokens`` held-out tokens and the first
    ``cfg.n_facts`` known facts (screened as in the causal tracing chapter).

    Returns ``(reference, cache_config, reference_args)``: the
    :class:`analysis.evaluate.Reference`, the settings that key the cell cache, and the
    arguments that rebuild the reference in a worker process.
    """
    from analysis import data
    from analysis.evaluate import Reference
    from analysis.studies import tracing

    known, _ = data.known_facts(model, tracing.trace_config_for(profile).n_screen)
    facts = known.select(range(min(cfg.n_facts, len(known))))
    if len(facts) == 0:
        raise ValueError("The model knows none of the screened facts; fact recall cannot be measured.")
    tokens = data.lm_tokens(model.tokenizer, "eval", n_tokens=cfg.eval_tokens)
    args = dict(
        tokens=tokens,
        context=profile.context,
        batch_size=cfg.batch_size,
        prompts=list(facts["prompt"]),
        targets=list(facts["target"]),
    )
    key = {"eval_tokens": cfg.eval_tokens, "context": profile.context, "facts": list(facts["id"])}
    return Reference(model, **args), key, args
