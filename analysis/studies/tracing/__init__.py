"""Study: where facts live (ROME's causal tracing) and the seed's per-component signal.

The causal tracing chapter asks whether ROME's finding on GPT-2 XL (Meng et al. 2022, Fig. 2:
MLP effect at the last subject token in early-to-middle layers, attention effect at the last
token in late layers) holds on the book's model, how much it depends on the corruption, the
window and exact versus attribution patching, and how stable the per-component score of seed
004 (Scarlatescu & Mehta, "Information-Aware Compression Schemes Using Causal Tracing") is. That
score is a signal of its own, :func:`analysis.scores.causal_tracing`, traced with the same
recipe (:class:`analysis.tracing.Recipe`) so that it reuses this study's cached traces.

- :mod:`~analysis.studies.tracing.config`: :class:`TraceConfig` per profile (:func:`config_for`);
- :mod:`~analysis.studies.tracing.seed`: :data:`SEED_RESULTS`, ROME's and the seed's words;
- :mod:`~analysis.studies.tracing.run`: :func:`setup` and one cached runner per section;
- :mod:`~analysis.studies.tracing.verdicts`: ROME's findings beside ours, and the verdicts;
- :mod:`~analysis.studies.tracing.agreement`: how methods agree, and the score's stability;
- :mod:`~analysis.studies.tracing.results`: the agreement rows the chapter reads (:class:`Agreement`);
- :mod:`~analysis.studies.tracing.plots`: ROME's heatmaps and AIE curves.

Layers are numbered as ROME numbers them: the residual stream is restored at block outputs
(``hook_resid_post``), so layer l here is ROME's layer l; ``hook_resid_pre`` of layer l is the
output of block l - 1.
"""

from analysis.studies.tracing.agreement import (
    agreement,
    agreement_table,
    aie_agreement,
    exact_vs_attribution,
    stability,
)
from analysis.studies.tracing.config import CONFIGS, TraceConfig, config_for
from analysis.studies.tracing.results import Agreement
from analysis.studies.tracing.run import (
    Setup,
    attribution_aie,
    exact_aie,
    heatmap_traces,
    judge,
    other_models,
    setup,
    single_state_aie,
    token_replacement_aie,
)
from analysis.studies.tracing.seed import SEED_RESULTS
from analysis.studies.tracing.verdicts import (
    BAND_EDGE,
    BANDS,
    band_of,
    beyond_layer0,
    location_verdict,
    mlp_over_attention,
    resid_hook,
    rome_comparison,
    verdicts,
)
from analysis.tracing.peaks import peak_depths

__all__ = [
    "BANDS",
    "BAND_EDGE",
    "CONFIGS",
    "SEED_RESULTS",
    "Agreement",
    "agreement",
    "agreement_table",
    "aie_agreement",
    "attribution_aie",
    "band_of",
    "beyond_layer0",
    "config_for",
    "exact_aie",
    "exact_vs_attribution",
    "heatmap_traces",
    "judge",
    "location_verdict",
    "mlp_over_attention",
    "other_models",
    "peak_depths",
    "resid_hook",
    "rome_comparison",
    "verdicts",
    "Setup",
    "setup",
    "single_state_aie",
    "stability",
    "token_replacement_aie",
    "TraceConfig",
]
