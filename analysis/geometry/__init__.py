"""Activation geometry: variance versus predictive directions, block linearity, lenses.

Seed 003 (Salfati 2026, "Variance Is Not Importance") asks which directions of the residual
stream matter and how linear a block is. One module per idea:

- :mod:`~analysis.geometry.streams`: residual streams visited batch by batch (never held whole);
- :mod:`~analysis.geometry.directions`: rogue dimensions, PCA, gradient covariance, readout basis,
  principal angles, CCA;
- :mod:`~analysis.geometry.ablation`: projecting a subspace out of the stream, keeping only top-``r``;
- :mod:`~analysis.geometry.linearity`: Razzhigaev et al.'s linearity score and least-squares block maps
  from streamed ``X^T X`` with a reported ridge;
- :mod:`~analysis.geometry.lens`: logit and (least-squares) tuned lens, confidence-based early exit;
- :mod:`~analysis.geometry.removal`: ShortGPT's Block Influence and Gromov et al.'s angular distance,
  the published layer-removal signals, and the layers each paper's procedure removes.
"""

from analysis.geometry.ablation import ablated, keep_only, project_out
from analysis.geometry.directions import (
    PCA,
    ROGUE_RATIO,
    Rogue,
    cca,
    gradient_covariance,
    orthonormal,
    pca,
    pca_of_cov,
    principal_angles,
    random_subspace,
    readout_basis,
    rogue_dimensions,
    top_directions,
    window_cca,
)
from analysis.geometry.lens import (
    ExitResult,
    LensStats,
    early_exit,
    easy_layers,
    easy_share_ci,
    exit_curve,
    exit_layers,
    lens_stats,
    window_share,
)
from analysis.geometry.linearity import (
    MIN_TOKENS_PER_DIM,
    RIDGE_LADDER,
    GramStats,
    LinearMap,
    check_rank,
    factors,
    fit_map,
    linearity_score,
    r2_from_stats,
    reduced_rank,
    score_from_stats,
    solve_ridge,
)
from analysis.geometry.removal import (
    angular_distance,
    angular_distance_scores,
    angular_distances,
    block_influence,
    cosine,
    gromov_block,
    shortgpt_layers,
)
from analysis.geometry.streams import (
    SINK_POSITIONS,
    block_stats,
    collect,
    heldout_r2,
    heldout_scores,
    heldout_windows,
    visit_blocks,
)

__all__ = [
    "MIN_TOKENS_PER_DIM",
    "PCA",
    "RIDGE_LADDER",
    "ROGUE_RATIO",
    "SINK_POSITIONS",
    "ExitResult",
    "GramStats",
    "LensStats",
    "LinearMap",
    "Rogue",
    "ablated",
    "angular_distance",
    "angular_distance_scores",
    "angular_distances",
    "block_influence",
    "block_stats",
    "cca",
    "check_rank",
    "collect",
    "cosine",
    "early_exit",
    "easy_layers",
    "easy_share_ci",
    "exit_curve",
    "exit_layers",
    "factors",
    "fit_map",
    "gradient_covariance",
    "gromov_block",
    "heldout_r2",
    "heldout_scores",
    "heldout_windows",
    "keep_only",
    "lens_stats",
    "linearity_score",
    "orthonormal",
    "pca",
    "pca_of_cov",
    "principal_angles",
    "project_out",
    "r2_from_stats",
    "random_subspace",
    "readout_basis",
    "reduced_rank",
    "rogue_dimensions",
    "score_from_stats",
    "shortgpt_layers",
    "solve_ridge",
    "top_directions",
    "visit_blocks",
    "window_cca",
    "window_share",
]
