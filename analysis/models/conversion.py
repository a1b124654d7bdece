"""Conversion: a Hugging Face checkpoint becomes a TransformerLens model.

TransformerLens reimplements each architecture with hook points (``blocks.{l}.hook_resid_pre``,
``hook_mlp_out`` …) and needs two things from a checkpoint: a :class:`HookedTransformerConfig`
(the sizes and switches: grouped-query attention, rotary positions, RMSNorm, sliding windows, soft
caps) and the weights renamed and reshaped into its layout. The config mapping is written once, in
:func:`hooked_config`: TransformerLens's own table of architectures, fed the Hugging Face config
itself. TransformerLens reads that table from a *name* ("llama" anywhere in it means Llama,
"gemma-2-" means Gemma 2), so the config is handed over in a folder with a neutral name, and the
architectures TransformerLens only knows by hub name (Gemma 2) take that name's switches with the
sizes of the config at hand (:data:`LOCAL_TEMPLATES`).

Three kinds of checkpoint come through here:

- a GGUF file (SmolLM2 ships as one): transformers dequantizes it to float32, TransformerLens's
  ``convert_llama_weights`` renames the weights, and the converted weights are kept on disk
  (:func:`converted_folder`) so that later loads skip the half-minute conversion;
- a BERT folder, as a :class:`~transformer_lens.HookedEncoder` (:func:`load_encoder`);
- any other decoder folder TransformerLens can convert (:func:`load_decoder`);
  :func:`load_folder` tells the two kinds of folder apart by the classes their config.json names.

Nothing is folded or centred on load (:data:`LOAD_KWARGS`), so a hook sees what the original model
computes and a weight we compress is the weight the model has.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from transformer_lens import HookedEncoder, HookedTransformer, HookedTransformerConfig
from transformer_lens import loading_from_pretrained as loading
from transformer_lens.pretrained.weight_conversions import convert_bert_weights, convert_llama_weights
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertForPreTraining,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.utils import logging as hf_logging

from analysis.cache import atomic_write
from analysis.config import CACHE_DIR

LOAD_KWARGS = dict(fold_ln=False, center_writing_weights=False, center_unembed=False)
"""How every decoder is processed on load: not at all, so hooks see the original model."""

BERT_ARCHITECTURES = ("BertForMaskedLM", "BertForPreTraining", "BertModel")
"""BERT checkpoint classes; TransformerLens maps them all by its ``BertForMaskedLM`` entry."""

LOCAL_TEMPLATES: dict[str, str] = {"Gemma2ForCausalLM": "google/gemma-2-2b"}
"""Architectures whose TransformerLens config exists only per hub name: a local checkpoint takes
that name's config (attention pattern, soft caps, norms) with the sizes of its own config.json."""


@contextlib.contextmanager
def quiet_hf(bars: bool = False) -> Iterator[None]:
    """Silence transformers' warnings (and, unless ``bars``, its progress bars) while loading."""

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


def architecture(hf_config: PretrainedConfig) -> str:
    """The checkpoint class a config names; a GGUF file's config names none, so its ``model_type`` decides."""

    return (hf_config.architectures or [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[hf_config.model_type]])[0]


def _template_sizes(c: PretrainedConfig) -> dict:
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
    hf_config: PretrainedConfig, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> HookedTransformerConfig:
    """TransformerLens's config for a Hugging Face config, named ``name`` and with no tokenizer name.

    The one HF → TransformerLens mapping: TransformerLens's table, read from the config itself (in a
    folder whose neutral name cannot pick an architecture), or, for :data:`LOCAL_TEMPLATES`, the hub
    template's switches with this config's sizes. BERT classes map through ``BertForMaskedLM``.
    """

    arch = architecture(hf_config)
    if arch in LOCAL_TEMPLATES:
        fields = loading.convert_hf_model_config(LOCAL_TEMPLATES[arch]) | _template_sizes(hf_config)
        fields |= dict(model_name=name, init_weights=False, device=device, n_devices=1, dtype=dtype)
        fields |= dict(default_prepend_bos=True, tokenizer_name=None)
        return HookedTransformerConfig.from_dict(fields)
    hf_config = copy.deepcopy(hf_config)
    hf_config.architectures = ["BertForMaskedLM" if arch in BERT_ARCHITECTURES else arch]
    with tempfile.TemporaryDirectory() as tmp, quiet_hf():
        folder = Path(tmp) / "checkpoint"
        hf_config.save_pretrained(folder)
        cfg = loading.get_pretrained_model_config(str(folder), device=device, dtype=dtype)
    cfg.model_name, cfg.tokenizer_name = name, None
    return cfg


def load_encoder(folder: Path, device: str, dtype: torch.dtype, name: str) -> HookedEncoder:
    """A BERT checkpoint folder as a HookedEncoder, its config read from the folder's config.json.

    Loaded as ``BertForPreTraining``: an MLM head the checkpoint lacks is initialised (seeded) at
    random, so only hidden states are meaningful for such checkpoints.
    """

    with quiet_hf():
        torch.manual_seed(0)  # the untrained MLM/NSP heads are initialised reproducibly
        hf = BertForPreTraining.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
    cfg = hooked_config(hf.config, name, device, dtype)
    cfg.init_weights = True  # random weights first (from the global generator); the checkpoint's replace them
    model = HookedEncoder(cfg, tokenizer=tok, move_to_device=False)
    model.load_state_dict(convert_bert_weights(hf, cfg), strict=False)
    model.to(device, print_details=False)
    model.eval()
    return model


def load_decoder(folder: Path, device: str, dtype: torch.dtype) -> HookedTransformer:
    """A local decoder checkpoint folder, converted by TransformerLens; named after the folder."""

    path = Path(folder).resolve()
    with quiet_hf():
        cfg = hooked_config(AutoConfig.from_pretrained(path), path.name, device, dtype)
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        state = loading.get_pretrained_state_dict(str(path), cfg, hf, dtype=dtype)
        has_tokenizer = (path / "tokenizer_config.json").exists()
        tok = AutoTokenizer.from_pretrained(path) if has_tokenizer else None  # else: pass ids
        model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
    model.load_and_process_state_dict(state, **LOAD_KWARGS)
    model.to(device, print_details=False)
    return model.eval()


def load_folder(folder: str | Path, device: str, dtype: torch.dtype) -> HookedTransformer | HookedEncoder:
    """A local Hugging Face checkpoint folder: a BERT as a HookedEncoder, any other as a HookedTransformer."""

    path = Path(folder).resolve()
    with quiet_hf():
        architectures = AutoConfig.from_pretrained(path).architectures or []
    if any(a in BERT_ARCHITECTURES for a in architectures):
        return load_encoder(path, device, dtype, path.name)
    return load_decoder(path, device, dtype)


def load_gguf_hf(gguf: Path, dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A GGUF file as a plain transformers causal LM (dequantized to ``dtype``) plus its tokenizer."""

    # the one slow load (about half a minute): transformers' "Converting and de-quantizing GGUF
    # tensors" bar shows in a terminal or notebook; the book drops stderr, so no page keeps it
    with quiet_hf(bars=True):
        hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf.eval()
    return hf, tok


def converted_folder(gguf: Path, key: str) -> Path:
    """Where the converted weights of ``gguf`` are kept: named by ``key`` and the file's size and time."""
    stamp = f"{gguf.stat().st_size}-{int(gguf.stat().st_mtime)}"
    return CACHE_DIR / "models" / f"{key}-{stamp}"


def _gguf_config(hf_config: PretrainedConfig, name: str, device: str, dtype: torch.dtype) -> HookedTransformerConfig:
    """:func:`hooked_config` of a GGUF file's config: the weights we convert are dequantized, so none is declared."""
    cfg = hooked_config(hf_config, name, device, dtype)
    cfg.quantization_method = None
    return cfg


def load_gguf(gguf: Path, key: str, name: str, device: str, dtype: torch.dtype) -> HookedTransformer:
    """A llama-architecture GGUF file as a HookedTransformer named ``name``: converted once (about half a
    minute), then read from :func:`converted_folder` ``(gguf, key)``."""
    folder = converted_folder(gguf, key)
    if (folder / "hooked_state_dict.pt").exists():
        converted = _read_converted(folder)
        if converted is not None:  # only reading may fail over to a rebuild; assembling errors are real
            hf_config, state, tok = converted
            return _assemble(_gguf_config(hf_config, name, device, dtype), state, tok, processed=True)
    return _convert_gguf(gguf, folder, name, device, dtype)


def _read_converted(folder: Path) -> tuple | None:
    """The converted files ``(hf_config, state dict, tokenizer)``; None, with a warning, when any of
    them cannot be read (a crash mid-write, a disk error): the conversion is then redone."""

    try:
        hf_config = torch.load(folder / "hf_config.pt", weights_only=False)
        state = torch.load(folder / "hooked_state_dict.pt", map_location="cpu", weights_only=True)
        with quiet_hf():
            tok = AutoTokenizer.from_pretrained(folder / "tokenizer")
    except Exception as err:  # an unreadable cache entry is rebuilt, never fatal
        warnings.warn(f"Rebuilding the converted weights in {folder}: the cached files are unreadable ({err!r})")
        return None
    return hf_config, state, tok


def _convert_gguf(gguf: Path, folder: Path, name: str, device: str, dtype: torch.dtype) -> HookedTransformer:
    """Convert the GGUF checkpoint and save the result in ``folder``."""

    hf, tok = load_gguf_hf(gguf, torch.float32)
    cfg = _gguf_config(hf.config, name, device, dtype)
    state = convert_llama_weights(hf, cfg)
    model = _assemble(cfg, state, tok, processed=False)
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        folder.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(folder / "tokenizer")
        atomic_write(folder / "hf_config.pt", lambda p: torch.save(hf.config, p))
        atomic_write(folder / "hooked_state_dict.pt", lambda p: torch.save(model.state_dict(), p))
    return model


def _assemble(
    cfg: HookedTransformerConfig, state: dict, tokenizer: PreTrainedTokenizerBase, processed: bool
) -> HookedTransformer:
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
