"""The seed's numbers and claims (seed 001, "Capability-Guided Compression"), and ours set beside them."""

from __future__ import annotations

from typing import Any

from analysis.studies.capability.results import HeadTest

SEED_RESULTS: dict[str, Any] = {
    "paper": "Capability-Guided Compression (seed 001), arXiv 2026-03",
    "model": "gpt2-medium",
    "n_heads": 384,
    "spearman_density_wanda": -0.054,
    "orthogonality claim": "capability density is statistically independent of Wanda importance scores",
    "phase-transition claim": "components with higher capability density exhibit lower structural redundancy "
    "and reach their individual phase transition points at lower compression ratios",
    "all metrics claim": "capability density is a genuinely novel compression signal orthogonal to all existing "
    "importance metrics",
    "perplexity claim": "the insensitivity of perplexity-based evaluation to reasoning capability loss "
    "(a negative result on PPL-based compression comparison on GPT-2 Medium)",
    "allocation claim": "SAE-derived capability density maps allocate differential compression budgets "
    "across transformer components (Capability-Guided Compression)",
}
"""The seed's numbers and claims, printed by the chapter from here (theirs, not ours)."""


def headline_rows(ours: HeadTest, model_name: str, n_heads: int, n_perm: int) -> tuple[dict, dict]:
    """The headline test as the seed reports it and as we measure it, one entry per quantity
    (``n_perm``: the within-layer permutations behind our p), for ``book.seed_vs_ours``."""
    seed = {
        "model": SEED_RESULTS["model"],
        "heads": SEED_RESULTS["n_heads"],
        "Spearman ρ(density, Wanda)": SEED_RESULTS["spearman_density_wanda"],
        "95% CI": "not reported",
        "within-layer ρ (p)": "not reported",
    }
    mine = {
        "model": model_name,
        "heads": n_heads,
        "Spearman ρ(density, Wanda)": round(ours.rho, 3),
        "95% CI": f"[{ours.ci_low:.3f}, {ours.ci_high:.3f}] (layer-cluster bootstrap)",
        "within-layer ρ (p)": f"{ours.rho_within:.3f} (p = {ours.p_within:.4f}, {n_perm} permutations)",
    }
    return seed, mine
