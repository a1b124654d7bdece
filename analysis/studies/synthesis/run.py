"""The synthesis study's steps, each cached: texts, signals, the oracle, the leaderboard.

The chapter runs them one by one with its prose between them:

1. :func:`setup`: the calibration text, the oracle's eval windows and facts, and the disjoint
   windows and facts that score the leaderboard (:class:`Setup`);
2. :func:`~analysis.studies.synthesis.signals.cheap_signals` plus the study chapters' signals;
3. :func:`measure_oracle`: every layer's attention and MLP compressed alone by each operation, and
   each block removed (:func:`analysis.compress.oracle.measure`), as :func:`oracle_signals`;
4. :func:`allocations` and :func:`run_leaderboard`: every signal, the baselines and the published
   procedures at every operation and budget, scored on the leaderboard's windows and facts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import data, hooks, tracing
from analysis.cache import tensors_hash
from analysis.compress import oracle as oracle_mod
from analysis.compress import oracle_pool
from analysis.compress.calibration import wanda_calibration
from analysis.config import Profile, get_profile
from analysis.data import mmlu_scoring as mmlu
from analysis.evaluate import LMScore, Reference
from analysis.forward import windows
from analysis.geometry import removal
from analysis.studies import verdicts as shared
from analysis.studies.synthesis import allocate, leaderboard
from analysis.studies.synthesis.allocate import Allocation
from analysis.studies.synthesis.config import OPS, SynthesisConfig, config_for
from analysis.studies.synthesis.leaderboard import Score, evaluate, evaluate_all
from analysis.studies.synthesis.signals import Signal


@dataclass
class Setup:
    """The texts of one run, each with one purpose (see :mod:`~analysis.studies.synthesis.config`)."""

    model: HookedTransformer
    cfg: SynthesisConfig
    calib: Tensor
    """``[calib_tokens]`` calibration tokens behind the cheap signals."""
    oracle_windows: Tensor
    """``[oracle_windows, context]`` eval windows the oracle is measured on."""
    oracle_facts: tuple[list[str], list[str]]
    reference: Reference
    """The leaderboard's windows (after the oracle's) and facts (the other half), with the dense model's scores."""
    reference_key: dict
    relations: tuple[str, ...] = ()
    mmlu_items: list[dict] = field(default_factory=list)
    model_name: str | None = None
    """A name worker processes load the model by (``cfg.n_procs > 1``)."""


def setup(model: HookedTransformer, profile: Profile | str, model_name: str | None = None) -> Setup:
    """Cut the texts: calibration tokens, then eval tokens split between the oracle and the leaderboard,
    and the known ``"eval"`` facts split the same way (never the ``"score"`` facts behind causal tracing)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    cfg = config_for(profile)
    calib = data.lm_tokens(model.tokenizer, "calib", n_tokens=cfg.calib_tokens)
    n_eval = (cfg.oracle_windows + cfg.eval_windows) * cfg.context
    wins = windows(data.lm_tokens(model.tokenizer, "eval", n_tokens=n_eval), cfg.context)
    facts = tracing.recipe_for(profile).screen.splits(model)["eval"]
    facts = facts.select(range(min(cfg.n_facts, len(facts))))
    half = len(facts) // 2
    if half == 0:
        raise ValueError("Fewer than 2 known eval facts: the oracle and the leaderboard need one each (screen more).")
    o_facts, e_facts = facts.select(range(half)), facts.select(range(half, len(facts)))
    held = wins[cfg.oracle_windows :]
    reference = Reference(
        model, held.flatten(), cfg.context, cfg.batch_size, list(e_facts["prompt"]), list(e_facts["target"])
    )
    key = {"windows": tensors_hash([held]), "context": cfg.context, "facts": list(e_facts["id"])}
    items = mmlu.mmlu_items(cfg.n_mmlu) if cfg.n_mmlu else []
    return Setup(
        model,
        cfg,
        calib,
        wins[: cfg.oracle_windows],
        (list(o_facts["prompt"]), list(o_facts["target"])),
        reference,
        key,
        tuple(e_facts["relation"]),
        items,
        model_name or profile.model,
    )


def oracle_cells(s: Setup, units, operations=oracle_mod.OPERATIONS, desc: str = "oracle", **kw) -> oracle_mod.Oracle:
    """:func:`analysis.compress.oracle.measure` on the oracle's windows and facts, in ``cfg.n_procs``
    worker processes when that is above 1 (:mod:`analysis.compress.oracle_pool`)."""
    kw = dict(batch_size=s.cfg.batch_size, facts=s.oracle_facts, desc=desc, **kw)
    if s.cfg.n_procs > 1:
        return oracle_pool.measure(s.model, s.model_name, s.oracle_windows, units, operations, s.cfg.n_procs, **kw)
    return oracle_mod.measure(s.model, s.oracle_windows, units, operations, **kw)


def measure_oracle(s: Setup) -> tuple[oracle_mod.Oracle, oracle_mod.Oracle]:
    """Every layer's attention and MLP under each operation, and every block removed, on the oracle's windows and facts."""
    # MMLU's dev split, never the test questions that score the leaderboard
    items = mmlu.mmlu_items(s.cfg.oracle_mmlu, split="dev") if s.cfg.oracle_mmlu else None
    sub = oracle_cells(s, oracle_mod.units(s.model), mmlu=items, desc="oracle (sublayers)")
    layers = [oracle_mod.block(l) for l in range(s.model.cfg.n_layers)]
    return sub, oracle_cells(s, layers, {oracle_mod.REMOVE: None}, desc="oracle (blocks)")


def oracle_signals(measured: tuple[oracle_mod.Oracle, oracle_mod.Oracle], metric: str = "ppl") -> dict[str, Signal]:
    """The oracle's cost maps as signals: ``"prune"``, ``"quantize"``, ``"remove"`` per sublayer,
    ``"remove (block)"`` per block."""
    sub, blocks = measured
    out = {op: Signal(sub.scores(op, metric=metric), source="oracle") for op in oracle_mod.OPERATIONS}
    out["remove (block)"] = Signal(
        blocks.scores(oracle_mod.REMOVE, blocks=True, metric=metric), source="oracle", level="block"
    )
    return out


ORACLE_FOR = {"prune": "prune", "quantize": "quantize", "remove": "remove (block)"}
"""Which oracle map allocates each leaderboard operation."""


def budgets(cfg: SynthesisConfig, op: str) -> tuple:
    return {"prune": cfg.prune_budgets, "quantize": cfg.bit_budgets, "remove": cfg.remove_budgets}[op]


def allocations(
    s: Setup, signals: Mapping[str, Signal], oracles: Mapping[str, Signal], gromov: Tensor | None = None
) -> list[Allocation]:
    """Every allocation of the leaderboard: per operation and budget, each signal's, the oracle's,
    uniform (not for removal), ``n_random`` random ones, and the published procedures (ShortGPT
    and Gromov for removal; Wanda 50% once). ``gromov``: :func:`analysis.geometry.removal.angular_distances`."""
    cfg, L = s.cfg, s.model.cfg.n_layers
    out = []
    for op in OPS:
        for b in budgets(cfg, op):
            out += [allocate.by_signal(sig, op, b, cfg.prune_spread) for sig in signals.values()]
            out.append(allocate.by_signal(oracles[ORACLE_FOR[op]], op, b, cfg.prune_spread, name=allocate.ORACLE))
            if op != "remove":
                out.append(allocate.uniform(L, op, b))
            out += [allocate.randomized(L, op, b, seed, cfg.prune_spread) for seed in range(cfg.n_random)]
            if op == "remove":
                bi = signals.get("Block Influence (ShortGPT)")
                if bi is not None:
                    out.append(allocate.removal(allocate.SHORTGPT, removal.shortgpt_layers(bi.scores, b)))
                if gromov is not None:
                    out.append(allocate.removal(allocate.GROMOV, removal.gromov_block(gromov, b)))
    out.append(allocate.wanda50(L))
    return out


def run_leaderboard(s: Setup, allocs: Sequence[Allocation]) -> list[Score]:
    """Every allocation on the leaderboard's windows and facts (each compressed model once; cached)."""
    calibration = None
    if any(a.wanda for a in allocs):
        calibration = wanda_calibration(s.model, s.calib, s.cfg.context, s.cfg.batch_size)
    key = tensors_hash([s.calib])
    return evaluate_all(s.model, s.reference, allocs, s.reference_key, calibration=calibration, calibration_key=key)


def dense(s: Setup) -> Score:
    """The uncompressed model on the leaderboard's windows and facts, and on MMLU."""
    base = evaluate(s.model, s.reference, Allocation("dense", "dense", 0, ()), s.reference_key)
    return leaderboard.with_mmlu(s.model, base, s.mmlu_items) if s.mmlu_items else base


def with_mmlu(s: Setup, scores: Sequence[Score]) -> list[Score]:
    """The same allocations with their MMLU correctness (the headline rows only: MMLU costs more than the rest)."""
    if not s.mmlu_items:
        return list(scores)
    calibration = None
    if any(sc.allocation.wanda for sc in scores):
        calibration = wanda_calibration(s.model, s.calib, s.cfg.context, s.cfg.batch_size)
    key = tensors_hash([s.calib])
    return [leaderboard.with_mmlu(s.model, sc, s.mmlu_items, calibration, key) for sc in scores]


def usable_line(s: Setup) -> LMScore:
    """The unigram model on the leaderboard's windows: a compressed model is usable below its perplexity."""
    held = s.reference.windows
    return shared.unigram_line(s.model, held.flatten(), held.shape[1])


def feature_tokens(s: Setup) -> Tensor:
    """``[n, context]`` windows on which SAE features are compared: ``survival_tokens`` of eval
    text after the oracle's and the leaderboard's windows."""
    cfg = s.cfg
    n = max(1, cfg.survival_tokens // cfg.context)
    total = (cfg.oracle_windows + cfg.eval_windows + n) * cfg.context
    wins = windows(data.lm_tokens(s.model.tokenizer, "eval", n_tokens=total), cfg.context)
    return wins[cfg.oracle_windows + cfg.eval_windows :]


def _middle(result, op: str):
    """``(budget, the signals' scores ranked by perplexity, best first)`` at ``op``'s middle budget, or None."""
    bs = result.budgets(op)
    if not bs:
        return None
    b = bs[len(bs) // 2]
    return b, sorted((sc for n in result.signals if (sc := result.score(n, op, b))), key=lambda sc: sc.log_ppl)


def headline(result) -> list[Score]:
    """At each operation's middle budget: the best signal's allocation by perplexity, uniform (where
    it exists) and the oracle's: the rows scored on MMLU too."""
    out = []
    for op in OPS:
        if (mid := _middle(result, op)) is None:
            continue
        b, mine = mid
        out += mine[:1]
        out += [sc for n in (allocate.UNIFORM, allocate.ORACLE) if (sc := result.score(n, op, b))]
    return out


def survival_models(result, bits: Sequence[int]) -> list[Allocation]:
    """What the feature-survival section measures: the best and the worst signal's quantization at the
    middle bit budget, and uniform quantization at each of ``bits``."""
    L = next(iter(result.signals.values())).scores.values.shape[0]
    picked = []
    if (mid := _middle(result, "quantize")) is not None:
        b, mine = mid
        if mine:
            best, worst = mine[0].allocation, mine[-1].allocation
            picked += [
                dataclasses.replace(best, name=f"best: {best.name} ({b} bits mean)"),
                dataclasses.replace(worst, name=f"worst: {worst.name} ({b} bits mean)"),
            ]
    picked += [dataclasses.replace(allocate.uniform(L, "quantize", b), name=f"uniform {b} bits") for b in bits]
    return picked


def perplexities(s: Setup, allocs: Sequence[Allocation]) -> list[tuple[Allocation, float]]:
    """Each allocation's perplexity on the leaderboard's windows (cached, shared with the leaderboard)."""
    return [(a, evaluate(s.model, s.reference, a, s.reference_key).perplexity) for a in allocs]


def survival_saes(
    model: HookedTransformer, saes: Mapping[str, Any], depths: Sequence[float] = (0.25, 0.5, 0.75)
) -> dict[str, Any]:
    """The trained SAEs to measure feature survival with: for each relative depth, the first of
    ``saes`` (keyed by the hook they read) whose layer is nearest to it."""
    L = model.cfg.n_layers
    by_layer: dict[int, str] = {}
    for key in saes:
        by_layer.setdefault(hooks.layer_of(key), key)
    if not by_layer:
        raise ValueError("No trained SAE given: feature survival needs at least one.")
    picked = {}
    for d in depths:
        layer = min(by_layer, key=lambda l: abs(l - d * (L - 1)))
        picked[by_layer[layer]] = saes[by_layer[layer]]
    return picked
