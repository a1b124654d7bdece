"""Sizes of the information-aware compression study per run profile, and the names of its allocations.

Fields that are sizes (tokens, facts, replicates, the extent of the grid) carry ``metadata={"size": True}``:
they are what a smaller profile shrinks; the other fields are choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.config import study_config

CONSTANT = ("constant low", "constant high")
"""The seed's baselines: every component treated as low (resp. high) density."""
TERCILES = " (terciles)"
"""Suffix of an allocation that buckets a score by equal-count terciles instead of z-scores."""
UNIFORM = "uniform"
"""Every component treated as medium density: with equal settings per level, plain uniform compression."""

Setting = tuple[tuple[float, float, float], tuple[int, int, int]]
"""``(prune fractions, bit widths)`` for the (low, medium, high) density levels."""


@dataclass(frozen=True)
class SweepConfig:
    """Sizes of the information-aware compression study for one run profile.

    The grid's settings (``prunes``, ``bits``, ``controls``, ``terciles``, ``uniform``) are marked as
    sizes with the token and sample counts: they set how many cells run, and a smaller profile
    shrinks them together (the controls must lie in the seed grid)."""

    eval_tokens: int = field(metadata={"size": True})
    """Held-out tokens each cell is scored on (perplexity, accuracy, KL to the base model)."""
    n_facts: int = field(metadata={"size": True})
    """At most this many ``"eval"`` known facts score each cell's fact recall."""
    calib_tokens: int = field(metadata={"size": True})
    """Calibration tokens for the gradient-magnitude score (at least 10x the widest input width)."""
    calib_sizes: tuple[int, ...] = field(metadata={"size": True})
    """Calibration sizes at which the gradient score is also computed, to show it has settled."""
    prunes: tuple[tuple[float, float, float], ...] = field(metadata={"size": True})
    """The seed-style grid: prune fractions for (low, medium, high) density."""
    bits: tuple[tuple[int, int, int], ...] = field(metadata={"size": True})
    """The seed-style grid: bit widths for (low, medium, high) density."""
    controls: tuple[Setting, ...] = field(metadata={"size": True})
    """Settings of the seed grid where every score also gets :attr:`n_shuffles` random controls."""
    uniform: tuple[tuple[float, int], ...] = field(metadata={"size": True})
    """(prune, bits) applied alike everywhere, besides the seed's constant baselines: the uniform
    cells whose Pareto frontier is the size-matched baseline. Pruning at 4 bits fills sizes between
    3 and 4 bits (a pruned matrix stored as bitmask plus values: ``1 + (1 - f) b`` bits per entry),
    where the frontier would otherwise be interpolated across the step from 3 to 4 bits."""
    terciles: tuple[Setting, ...] = field(default=(), metadata={"size": True})
    """Settings at which each of :attr:`tercile_scores` also allocates by equal-count terciles (and
    gets :attr:`n_shuffles` random controls of them): whether a score's ranking, not only its tails,
    knows where to compress."""
    tercile_scores: tuple[str, ...] = ("causal tracing",)
    unigram_tokens: int = field(default=1_000_000, metadata={"size": True})
    """Training-split tokens whose frequencies make the unigram model: a compressed model counts as
    usable while its perplexity stays below that model's on the evaluation windows."""
    n_shuffles: int = field(default=5, metadata={"size": True})
    """Random controls (a score's levels shuffled within each kind) per score and control setting."""
    margin: float = 0.02
    """Equivalence margin on Δ log perplexity (0.02: perplexities within about 2%) for "comparable"."""
    n_boot: int = field(default=2000, metadata={"size": True})
    """Bootstrap replicates over evaluation windows (and random controls) behind every interval."""
    model: str | None = None
    """Model to use instead of the profile's (the seed's GPT-2 under ``gpu``)."""
    batch_size: int = field(default=8, metadata={"size": True})
    threshold: float = 0.5
    """The seed's z-score threshold between density levels."""
    n_procs: int = 1

    def __post_init__(self):
        grid = {(tuple(p), tuple(b)) for p in self.prunes for b in self.bits}
        outside = [s for s in self.controls if (tuple(s[0]), tuple(s[1])) not in grid]
        if outside:
            raise ValueError(f"Control settings {outside} are not in the seed grid (prunes x bits); add them there.")
        if self.n_shuffles < 1:
            raise ValueError(f"n_shuffles must be >= 1, got {self.n_shuffles}.")

    @property
    def aggressive_prunes(self) -> list[tuple[float, float, float]]:
        """The seed's "mild to moderate pruning": every prune setting of the grid that prunes at
        all (the grid's run from the seed's mild [0.3, 0.2, 0.1] to a moderate one), mildest first."""
        pruned = [tuple(p) for p in self.prunes if sum(p) > 0] or [tuple(p) for p in self.prunes]
        return sorted(pruned, key=sum)

    @property
    def aggressive(self) -> Setting:
        """The seed's "aggressive quantization with mild pruning": the grid's mildest prune
        setting that prunes at all, with its lowest bit widths."""
        pruned = [p for p in self.prunes if sum(p) > 0] or list(self.prunes)
        return min(pruned, key=sum), min(self.bits, key=sum)


_NONE, _MILD, _MODERATE = (0.0, 0.0, 0.0), (0.3, 0.2, 0.1), (0.5, 0.3, 0.1)
_BITS = ((2, 3, 4), (3, 4, 5))

CONFIGS: dict[str, SweepConfig] = {
    "smoke": SweepConfig(
        eval_tokens=512,
        n_facts=8,
        calib_tokens=512,
        calib_sizes=(256, 512),
        prunes=(_NONE, _MILD),
        bits=_BITS[1:],
        controls=((_MILD, _BITS[1]),),
        terciles=((_NONE, _BITS[1]),),
        uniform=((0.0, 4), (0.0, 5)),
        unigram_tokens=20_000,
        n_shuffles=2,
        n_boot=200,
        batch_size=2,
    ),
    "cpu": SweepConfig(
        eval_tokens=3072,
        n_facts=150,
        calib_tokens=16_384,
        calib_sizes=(2048, 8192, 16_384),
        prunes=(_NONE, _MILD, _MODERATE),
        bits=_BITS,
        controls=((_NONE, _BITS[1]), (_MILD, _BITS[1])),
        terciles=((_NONE, _BITS[1]),),
        uniform=((0.0, 2), (0.0, 3), (0.4, 4), (0.3, 4), (0.0, 4), (0.0, 5)),
    ),
    "gpu": SweepConfig(
        eval_tokens=65_536,
        n_facts=1000,
        calib_tokens=65_536,
        calib_sizes=(2048, 8192, 32_768, 65_536),
        prunes=(_NONE, (0.1, 0.05, 0.0), _MILD, _MODERATE),
        bits=_BITS + ((4, 5, 6), (4, 6, 8), (8, 16, 24)),
        controls=tuple((p, b) for p in (_MILD, _MODERATE) for b in _BITS + ((4, 6, 8),)),
        terciles=((_NONE, _BITS[1]), (_NONE, (4, 6, 8))),
        tercile_scores=("causal tracing", "weight magnitude", "gradient magnitude"),
        uniform=((0.0, 2), (0.0, 3), (0.4, 4), (0.3, 4), (0.0, 4), (0.0, 5), (0.0, 6), (0.0, 8)),
        n_shuffles=10,
        model="gpt2",
        batch_size=16,
    ),
}
"""Sizes per profile. The seed grid adds a no-pruning row to the seed's prune settings: its
constant baselines are the uniform quantization-only cells, and its score cells compare
allocations where pruning (which buys size only when the prune fraction times the bit width
exceeds 1) does not blur the comparison. ``cpu`` has 66 distinct cells (18 score cells, 12
distinct uniform cells, 30 random controls, and causal tracing's terciles with 5 controls of them,
on 3,072 tokens in 12 windows and 150 facts) plus the
gradient score on 16,384 tokens (forward and backward). Cold on 2 otherwise idle cores, with the
tracing chapter's traces cached, the chapter took 936 s on the December 2026 data (806 s of cells,
about 13 s a cell): just over the 15 minutes it aims at."""


def config_for(profile) -> SweepConfig:
    """The sweep sizes for a :class:`analysis.config.Profile` (or its name); ``profile.extra["sweep"]`` overrides fields."""
    return study_config(CONFIGS, profile, "sweep")
