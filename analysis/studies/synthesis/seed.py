"""The anchors the synthesis chapter measures beside: no seed has this study, so these are the
published numbers and procedures it is set against, quoted, not ours."""

from __future__ import annotations

SURVIVAL_ANCHORS = {
    "source": "arXiv 2606.03002 (SAE features as a fixed basis; Pearson per feature, dense vs quantized)",
    "Gemma-2-2B INT7: active features degraded": 0.187,
    "Gemma-2-2B INT7: perplexity": "improves",
    "Pythia-70M INT6: active features surviving": 0.624,
    "Gemma-2-2B INT6: active features surviving": 0.513,
}
"""That paper's reported feature-survival numbers: anchors to measure ours beside, not to match."""

PUBLISHED = {
    "ShortGPT (Men et al. 2024)": "remove the k layers of lowest Block Influence 1 - E[cos(x_i, x_{i+1})], every token",
    "Gromov et al. 2024": "drop the n consecutive layers starting at argmin_l arccos(cos(x^l_T, x^{l+n}_T)) / pi, last token",
    "Wanda (Sun et al. 2023)": "prune 50% of each weight per output by |W_ij| * ||X_j||, calibration inputs",
}
"""The published procedures the leaderboard runs as their papers state them."""

SEED_RESULTS = {**{f"survival: {k}": v for k, v in SURVIVAL_ANCHORS.items()}, **PUBLISHED}
"""Everything quoted, for the chapter's first table."""
