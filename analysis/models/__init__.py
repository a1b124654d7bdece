"""Models: one name, one TransformerLens model, offline first.

Every study in this book runs on a TransformerLens model, so that hooks are named the same way
everywhere (``blocks.{l}.hook_resid_pre``, ``hook_mlp_out``, ``hook_attn_out``, ``attn.hook_z``).
The package has three rooms:

- :mod:`~analysis.models.registry`: the names :func:`load_model` accepts (the two embedded models,
  hub names, local checkpoint folders), their cards, and the errors that say what to do;
- :mod:`~analysis.models.conversion`: how a Hugging Face checkpoint (a GGUF file, a BERT folder, any
  decoder folder) becomes a HookedTransformer or HookedEncoder, through the one config mapping
  :func:`hooked_config`;
- :mod:`~analysis.models.identity`: what a loaded model is (:func:`model_key`, the content hash
  every cached result is keyed by; :func:`describe`, :func:`n_params`, :func:`is_encoder`).

We load without folding LayerNorm and without centring weights (``fold_ln=False``,
``center_writing_weights=False``, ``center_unembed=False``) so that what a hook sees is what
the original model computes, and so that a weight we compress is the weight the model has.
"""

from analysis.models.conversion import BERT_ARCHITECTURES, LOAD_KWARGS, LOCAL_TEMPLATES, hooked_config
from analysis.models.identity import describe, is_encoder, model_key, n_params, weights_version
from analysis.models.registry import (
    EMBEDDED,
    HUB_MODELS,
    MODELS_DIR_ENV,
    SMOLLM2_GGUF,
    ModelCard,
    ModelNotAvailableError,
    first_available,
    known_models,
    load_model,
    load_smollm2_hf,
    local_folder,
    model_card,
    package_dir,
    timed_load,
)

__all__ = [
    "BERT_ARCHITECTURES",
    "EMBEDDED",
    "HUB_MODELS",
    "LOAD_KWARGS",
    "LOCAL_TEMPLATES",
    "MODELS_DIR_ENV",
    "SMOLLM2_GGUF",
    "ModelCard",
    "ModelNotAvailableError",
    "describe",
    "first_available",
    "hooked_config",
    "is_encoder",
    "known_models",
    "load_model",
    "load_smollm2_hf",
    "local_folder",
    "model_card",
    "model_key",
    "n_params",
    "package_dir",
    "timed_load",
    "weights_version",
]
