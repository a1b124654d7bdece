"""Seed 003's numbers (Salfati 2026, arXiv 2604.20682, as summarized in ``shared/seeds/003_*``)."""

from __future__ import annotations

SEED_RESULTS: dict[str, dict] = {
    "uncorrelated": {
        "claim": "high-variance activation directions are largely uncorrelated with predictive directions",
        "seed": "largely uncorrelated (no share given)",
    },
    "r2_gpt2": {
        "claim": "blocks are conditionally linear: R² about 0.95 (GPT-2) and 0.93 (Mistral block 31) under the "
        "correct upstream",
        "seed": "0.95 (GPT-2); 0.93 (Mistral block 31)",
        "r2_low": 0.93,
    },
    "r2_conditional": {
        "claim": "that linearity is conditional: it holds under the correct upstream, not once the upstream blocks "
        "are replaced (distribution shift)",
        "seed": "conditional on the upstream",
    },
    "r2_depth": {
        "claim": "linearity increases with depth: R² 0.17 (Mistral block 0) to 0.93 (block 31)",
        "seed": "0.17 -> 0.93",
        "first": 0.17,
        "last": 0.93,
    },
    "direct_beats_factor": {
        "claim": "direct quantization beats factoring then quantizing, because of error amplification",
        "seed": "direct better",
    },
    "easy_tokens": {"claim": "about 30% of tokens are computationally easy", "seed": 0.30},
    "last_block": {
        "claim": "one linear map replaces Mistral 7B's last block at 34x compression for +1.71 perplexity",
        "seed": "+1.71 PPL at 34x",
        "ratio": 34.0,
        "delta_ppl": 1.71,
    },
    "multi_block": {"claim": "replacing several blocks at once fails", "seed": "fails"},
}
"""Each claim in the seed's words and its number; ours are set beside them by the verdicts."""

ANCHORS: dict[str, str] = {
    "razzhigaev": "Razzhigaev et al. 2024: linearity score about 0.95-1.0 with the residual, 0.35-0.6 mid-depth without",
    "whipp": "Whipp 2026: an early GPT-2 FFN replaced with 8x fewer parameters for +0.77 perplexity",
}
"""Other public numbers the chapter cites beside ours."""


def claim_of(key: str) -> str:
    """The seed's claim ``key`` in its own words."""
    return SEED_RESULTS[key]["claim"]


def seed_of(key: str):
    """The seed's number (or statement) for claim ``key``."""
    return SEED_RESULTS[key]["seed"]
