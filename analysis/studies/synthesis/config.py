"""Sizes of the synthesis study per run profile: the oracle's grid, the leaderboard's budgets.

Fields that are sizes (tokens, facts, budgets, random draws) carry ``metadata={"size": True}``: they
are what a smaller profile shrinks; the other fields are choices.

Every text has one purpose. The cheap signals read ``calib_tokens`` of the calibration split. The
eval split's first ``oracle_windows`` windows score the oracle, the next ``eval_windows`` windows
score the leaderboard; the known ``"eval"`` facts are halved the same way. So the oracle, which
chooses the oracle allocation, never also judges it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.config import study_config

OPS = ("remove", "prune", "quantize")
"""The leaderboard's three operations: drop whole layers, prune weights, lower their bit width."""


@dataclass(frozen=True)
class SynthesisConfig:
    """Sizes of the synthesis study for one run profile."""

    context: int = field(metadata={"size": True})
    """Tokens per window, for the oracle, the leaderboard and the calibration text."""
    oracle_windows: int = field(metadata={"size": True})
    """Eval-split windows the oracle measures every cell on."""
    eval_windows: int = field(metadata={"size": True})
    """The next eval-split windows, which score every allocation of the leaderboard."""
    n_facts: int = field(metadata={"size": True})
    """Known ``"eval"`` facts: the first half scores the oracle's fact-recall drop, the second the leaderboard's."""
    calib_tokens: int = field(metadata={"size": True})
    """Calibration-split tokens behind the cheap signals (gradients, Wanda, Fisher, BI, angular distance)."""
    lens_tokens: int = field(metadata={"size": True})
    """The first calibration tokens behind the two lens signals, which decode every layer's stream
    over the whole vocabulary (the costliest of the cheap signals per token)."""
    prune_budgets: tuple[float, ...] = field(metadata={"size": True})
    """Mean prune fractions over attention and MLP weights; each allocation prunes its thirds at
    ``b + spread``, ``b`` and ``b - spread``."""
    bit_budgets: tuple[int, ...] = field(metadata={"size": True})
    """Mean bit widths; each allocation quantizes its thirds at ``b - 1``, ``b`` and ``b + 1`` bits."""
    remove_budgets: tuple[int, ...] = field(metadata={"size": True})
    """Layers removed whole."""
    n_random: int = field(metadata={"size": True})
    """Random allocations (seeds) per operation and budget."""
    n_mmlu: int = field(metadata={"size": True})
    """MMLU questions scoring the leaderboard's headline rows (0: left out)."""
    oracle_mmlu: int = field(metadata={"size": True})
    """MMLU questions scoring every oracle cell (0: left out)."""
    survival_tokens: int = field(metadata={"size": True})
    """Eval tokens on which the SAE features of the dense and the compressed model are compared."""
    survival_bits: tuple[int, ...] = field(metadata={"size": True})
    """Uniform bit widths whose feature survival is measured."""
    head_layers: int = field(default=0, metadata={"size": True})
    """Evenly spaced layers whose attention heads the oracle removes one by one (0: none)."""
    n_boot: int = field(default=1000, metadata={"size": True})
    """Layer-cluster bootstrap draws behind every rank-correlation interval."""
    batch_size: int = field(default=8, metadata={"size": True})
    prune_spread: float = 0.2
    margin: float = 0.1
    """Equivalence margin on a rank correlation (the cheapest signal against the best)."""
    ppl_margin: float = 0.01
    """Margin on Δ log-perplexity (about 1%) below which a win counts for nothing."""
    n_procs: int = 1
    """Worker processes for the oracle's cells (:mod:`analysis.compress.oracle_pool`); 1 runs them here."""
    models: tuple[str, ...] = ()
    """Further decoder models whose oracle and leaderboard the chapter also runs (``gpu``: a second
    family and a Llama-architecture model)."""

    def __post_init__(self):
        if self.oracle_windows < 1 or self.eval_windows < 1:
            raise ValueError("oracle_windows and eval_windows must be at least 1.")
        for b in self.prune_budgets:
            if not (0 < b - self.prune_spread and b + self.prune_spread < 1):
                raise ValueError(f"Prune budget {b} ± {self.prune_spread} leaves [0, 1); choose a budget inside it.")
        for b in self.bit_budgets:
            if not 2 <= b <= 15:
                raise ValueError(f"Bit budget {b} needs b - 1 >= 1 and b + 1 < 16; choose 2..15.")


CONFIGS: dict[str, SynthesisConfig] = {
    "smoke": SynthesisConfig(
        context=32,
        oracle_windows=4,
        eval_windows=4,
        n_facts=8,
        calib_tokens=256,
        lens_tokens=128,
        prune_budgets=(0.3, 0.5),
        bit_budgets=(3, 4),
        remove_budgets=(1, 2),
        n_random=1,
        n_mmlu=4,
        oracle_mmlu=0,
        survival_tokens=128,
        survival_bits=(3, 8),
        head_layers=1,
        n_boot=100,
        batch_size=4,
    ),
    "cpu": SynthesisConfig(
        context=96,
        oracle_windows=4,
        eval_windows=8,
        n_facts=48,
        calib_tokens=2048,
        lens_tokens=576,
        prune_budgets=(0.3, 0.4, 0.5),
        bit_budgets=(3, 4, 5),
        remove_budgets=(2, 4, 6),
        n_random=2,
        n_mmlu=12,
        oracle_mmlu=0,
        survival_tokens=1152,
        survival_bits=(3, 4, 5, 6, 7, 8),
    ),
    "gpu": SynthesisConfig(
        context=256,
        oracle_windows=32,
        eval_windows=64,
        n_facts=600,
        calib_tokens=65_536,
        lens_tokens=16_384,
        prune_budgets=(0.3, 0.4, 0.5, 0.6),
        bit_budgets=(3, 4, 5),
        remove_budgets=(2, 4, 6, 8),
        n_random=10,
        n_mmlu=570,
        oracle_mmlu=285,
        survival_tokens=16_384,
        survival_bits=(3, 4, 5, 6, 7, 8),
        head_layers=1000,
        n_boot=2000,
        batch_size=16,
        models=("gpt2-medium", "llama-2-7b"),
    ),
}
"""Sizes per profile. ``cpu`` measures 30 layers x 2 kinds x 3 operations + 30 block removals =
210 oracle cells on 4 windows of 96 tokens and 24 facts, and 3 operations x 3 budgets x (13
signals, the oracle, uniform, 2 random draws, the published procedures) = 157 allocations on 8 other
windows and 24 other facts: the chapter's 15-minute budget on 2 cores sets these sizes (an
allocation costs about 2.5 s, an oracle cell about 1 s). MMLU scores only the headline rows there (12
questions: SmolLM2-135M answers MMLU at chance, as the factorization chapter measures), and no
oracle cell; no head is measured alone (270 cells). Cold, with the study chapters' results cached
(as in a book build), the chapter took 875 s on 2 cores in December 2026 with 56 facts, 16 MMLU
questions and 1,536 survival tokens; these sizes trim that for a margin below 15 minutes."""


def config_for(profile) -> SynthesisConfig:
    """The synthesis sizes for a :class:`analysis.config.Profile` (or its name); ``profile.extra["synthesis"]`` overrides fields."""
    return study_config(CONFIGS, profile, "synthesis")
