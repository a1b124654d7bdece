"""The seed's numbers and claims (Scarlatescu and Mehta, seed 004), quoted as written, not ours."""

from __future__ import annotations

SEED_RESULTS = {
    "model": "GPT-2 (124M)",
    "eval": "WikiText-2 perplexity",
    "perplexity_best": 5.552,
    "perplexity_worst": 13.275,
    "prune_grid": "e.g. [0.3, 0.2, 0.1] for (low, medium, high)",
    "bits_grid": "e.g. [8, 16, 24] for (low, medium, high)",
    "levels": "z-scores over the 12 layers; below -0.5 low, above +0.5 high, else medium",
    "claims": [
        "all methods perform worse with larger amounts of pruning",
        "weight magnitude appears ineffective as a heuristic for redundancy and is comparable to simply "
        "compressing the whole network",
        "the causal tracing and gradient magnitude-based heuristics perform well",
        "casual tracing appears to perform best when using a combination of aggressive quantization with "
        "mild to moderate pruning; other methods in comparison perform either the same or worse",
    ],
    "open_question": "at the same model size, does allocating by information density beat compressing every "
    "layer alike? (the seed's figure compares allocations of different sizes)",
}
"""The seed's reported numbers (its Figure 2 colour scale) and claims, quoted, not ours."""
