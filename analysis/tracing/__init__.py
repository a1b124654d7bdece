"""Causal tracing: which hidden states carry a fact from the subject to the answer.

Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", the
ROME paper) asks where, inside a language model, the information that completes a fact such
as "The Eiffel Tower is located in the city of" -> " Paris" is carried. It runs the model
three times. The *clean* run sees the prompt and predicts the answer with probability
``p_clean``. The *corrupted* run hides the subject (Gaussian noise on the subject's
embeddings, 3 standard deviations of subject-token embeddings, or another subject of the same
token length):
the answer's probability drops to ``p_corrupt``. The *restored* runs repeat the corrupted run
but copy one clean hidden state back in, at one layer and one token position, and measure
``p_restored``. A state whose restoration brings the answer back carries the information; its
*indirect effect* is ``p_restored - p_corrupt``. ROME restores the residual stream one state at
a time (block outputs: ``hook_resid_post`` of layer l, which is ``hook_resid_pre`` of l+1), and MLP and attention outputs over a window of 10 consecutive layers. Averaged over
many facts by token role, this is the *average indirect effect* (AIE); on GPT-2 XL it peaks
for MLPs in early-to-middle layers at the last subject token, and for attention in late layers
at the last token.

The package, in the order a trace runs:

- :mod:`.inputs`: a fact's tokens, subject span, target and token roles;
- :mod:`.corrupt`: the corrupted run (noise scale, noise samples, token replacement);
- :mod:`.engine` and :mod:`.blocks`: exact restoration, batched and suffix-only;
- :mod:`.attribution`: attribution patching, the first-order estimate from one backward pass;
- :mod:`.trace`: :func:`trace`, one fact;
- :mod:`.aie`: :func:`average_indirect_effect`, many facts by token role;
- :mod:`.convergence`: how many noise samples the average needs;
- :mod:`.peaks`: where the average peaks, with a bootstrap over facts or their relations;
- :mod:`.recipe`: the facts, noise and samples every trace of a run profile shares.

Results are keyed by TransformerLens hook names (``hook_resid_pre``, ``hook_mlp_out``, ...;
see :mod:`analysis.hooks`).
"""

from analysis.tracing.aie import CACHE_VERSION, AIEResult, Skipped, average_indirect_effect
from analysis.tracing.blocks import FastBlocks, Prefix, TLBlocks, block_runner
from analysis.tracing.convergence import choose_samples, sample_convergence
from analysis.tracing.corrupt import (
    Corruption,
    embedding_std,
    noise_scale,
    pair_subjects,
    subject_embedding_std,
    subject_noise,
    subject_tokens,
)
from analysis.tracing.inputs import (
    ROLES,
    WINDOWED,
    Prepared,
    fact_fields,
    find_subject,
    first_token,
    prepare,
    token_roles,
    window_layers,
)
from analysis.tracing.peaks import (
    PeakDepth,
    RoleMargin,
    bootstrap_means,
    peak_depths,
    peak_difference,
    percentile_interval,
    role_margin,
)
from analysis.tracing.recipe import RECIPES, FactScreen, Recipe, TraceSetup, known_only, recipe_for
from analysis.tracing.trace import Method, TraceResult, trace

__all__ = [
    "PeakDepth",
    "RoleMargin",
    "AIEResult",
    "CACHE_VERSION",
    "TraceSetup",
    "Corruption",
    "FactScreen",
    "FastBlocks",
    "Method",
    "Prefix",
    "Prepared",
    "RECIPES",
    "ROLES",
    "Recipe",
    "Skipped",
    "TLBlocks",
    "TraceResult",
    "WINDOWED",
    "average_indirect_effect",
    "choose_samples",
    "sample_convergence",
    "block_runner",
    "embedding_std",
    "fact_fields",
    "find_subject",
    "first_token",
    "known_only",
    "noise_scale",
    "pair_subjects",
    "peak_depths",
    "peak_difference",
    "bootstrap_means",
    "percentile_interval",
    "prepare",
    "recipe_for",
    "role_margin",
    "subject_embedding_std",
    "subject_noise",
    "subject_tokens",
    "token_roles",
    "trace",
    "window_layers",
]
