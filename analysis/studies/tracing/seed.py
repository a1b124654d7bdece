"""What ROME (Meng et al. 2022) and seed 004 (Scarlatescu & Mehta) report, in their words."""

from __future__ import annotations

SEED_RESULTS: dict[str, str] = {
    "rome_model": "GPT-2 XL (48 layers), 1000 known facts, Gaussian noise 3x the std of subject-token "
    "embeddings, 10 samples, window 10, block outputs restored (Meng et al. 2022, Fig. 2 and Sec. 2.2)",
    "rome_mlp": "early-to-middle-layer MLPs at the last subject token carry a large effect "
    "(ROME's abstract: 'a distinct set of steps in middle-layer feed-forward modules that "
    "mediate factual predictions while processing subject tokens')",
    "rome_mlp_vs_attn": "at the last subject token the MLP effect is large and the attention effect "
    "small (ROME Fig. 2, Sec. 2.3: the early site is mediated by MLPs)",
    "rome_attn": "attention matters in late layers at the last token",
    "rome_resid": "two peaks in the residual stream: early-middle layers at the last subject "
    "token, and late layers at the last token",
    "seed_claim": "causal-tracing scores per layer identify high-information layers, which "
    "should be compressed least (Scarlatescu & Mehta, GPT-2 small, 12 layers; z-score > 0.5 = "
    "'high', < -0.5 = 'low')",
}
"""What ROME and the seed paper report, in words (their claims, labelled as theirs)."""
