"""Training TopK SAEs on every layer's ``hook_z`` at once, with sae-lens.

A TopK SAE (Gao et al. 2024) encodes ``x`` as ``a = TopK(ReLU(W_enc (x - b_dec) + b_enc))``,
keeping exactly ``k`` latents per token, and decodes ``x̂ = a W_dec + b_dec``; it is trained on
the reconstruction error alone, since TopK fixes the sparsity that an L1 penalty would
otherwise have to buy. Fixing ``k`` removes the penalty's coefficient from the search, and
no latent can shrink its activation to dodge a penalty.

:func:`train_saes` builds one sae-lens ``TopKTrainingSAE`` per key of the
:class:`~analysis.sae.stream.HookZStream` and steps all of them on the same batch with
sae-lens's ``MultiSAETrainer``, so 30 SAEs cost one pass of the model over the data. The
decoder bias starts at the mean of the first batch (the older sae-lens ``b_dec_init_method=
"mean"``), which saves the first steps from learning the mean. :func:`trained_saes` caches the
result on disk in sae-lens's format, keyed by the model's content hash, the training
configuration and the training tokens.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import warnings
from typing import Any, Iterator, Sequence

import torch
from jaxtyping import Int
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training import multi_sae_trainer, sae_trainer
from sae_lens.training.multi_sae_trainer import MultiSAETrainer
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import cache, hooks
from analysis.models import model_key
from analysis.progress import quiet
from analysis.sae.storage import load_saes, save_saes
from analysis.sae.stream import ActivationPool, HookZStream, SAETrainConfig


def training_sae_config(model: HookedTransformer, layer: int, cfg: SAETrainConfig, head: int | None = None):
    """The sae-lens ``TopKTrainingSAEConfig`` of one hook_z SAE, with model and hook in its metadata."""

    d_in = model.cfg.d_head * (model.cfg.n_heads if head is None else 1)
    return TopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=cfg.expansion * d_in,
        k=cfg.k,
        device=str(model.cfg.device),
        metadata=SAEMetadata(
            model_name=model.cfg.model_name,
            hook_name=hooks.z(layer),
            hook_head_index=head,
            context_size=cfg.context,
            prepend_bos=True,
            n_heads=model.cfg.n_heads,
            d_head=model.cfg.d_head,
        ),
    )


@contextlib.contextmanager
def _offline_training():
    """wandb disabled and silent (``WANDB_MODE``, ``WANDB_SILENT``) while sae-lens trains, then
    the environment as it was; sae-lens's tqdm bars are off when progress is :func:`quiet`."""

    saved_env = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_SILENT")}
    saved_tqdm = multi_sae_trainer.tqdm, sae_trainer.tqdm
    os.environ["WANDB_MODE"], os.environ["WANDB_SILENT"] = "disabled", "true"
    if quiet():
        multi_sae_trainer.tqdm = sae_trainer.tqdm = functools.partial(saved_tqdm[0], disable=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        multi_sae_trainer.tqdm, sae_trainer.tqdm = saved_tqdm
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _with_mean_init(stream: HookZStream, saes: dict[str, Any]) -> Iterator[dict[str, Tensor]]:
    """Start each SAE's decoder bias at the mean of the first training batch, then serve that
    batch and the rest of the stream."""
    first = next(stream)
    with torch.no_grad():
        for key, sae in saes.items():
            sae.b_dec.data.copy_(first[key].mean(0).to(sae.b_dec))
    return itertools.chain([first], stream)


def train_saes(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    cfg: SAETrainConfig,
    layers: Sequence[int] | None = None,
    pool: ActivationPool | None = None,
) -> dict[str, Any]:
    """Train one sae-lens TopK SAE per layer (or head) on ``hook_z`` from one shared stream.

    Returns ``{sae key: TopKTrainingSAE}``; each SAE sees every training token ``cfg.epochs`` times.
    ``pool`` serves activations already collected (a sweep of settings on the same tokens).
    """

    torch.manual_seed(cfg.seed)
    stream = HookZStream(model, tokens, cfg, layers, pool)
    if stream.n_batches == 0:
        raise ValueError(f"{torch.as_tensor(tokens).numel()} tokens make no training batch of {cfg.batch_tokens}.")
    saes = {key: TopKTrainingSAE(training_sae_config(model, l, cfg, h)) for key, l, h in stream.keys}
    provider = _with_mean_init(stream, saes)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=stream.n_batches * cfg.batch_tokens,
        train_batch_size_samples=cfg.batch_tokens,
        lr=cfg.lr,
        lr_end=cfg.lr,
        device=str(model.cfg.device),
        lr_scheduler_name="constant",
        dead_feature_window=max(1, stream.n_batches // 4),
        feature_sampling_window=max(1, stream.n_batches),
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=1,
    )
    with _offline_training():
        trainer = MultiSAETrainer(trainer_cfg, saes, {k: k for k in saes}, provider)
        trainer.fit()
    return trainer.saes


def trained_saes(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    cfg: SAETrainConfig,
    layers: Sequence[int] | None = None,
    refresh: bool = False,
    pool: ActivationPool | None = None,
) -> dict[str, Any]:
    """:func:`train_saes`, saved under ``<cache>/sae/<key>/`` and reloaded (sae-lens format).

    The key covers the model's content (:func:`analysis.models.model_key`), ``cfg``, ``layers``
    and the training tokens' content hash (not ``pool``, which only saves a forward pass).
    """
    tokens = torch.as_tensor(tokens).flatten()
    key = cache.cache_key(
        "sae",
        {"cfg": cfg, "layers": list(layers) if layers is not None else None, "tokens": cache.tensors_hash([tokens])},
        model_key(model),
    )
    folder = cache.CACHE_DIR / "sae" / key
    if refresh or not (folder / "index.json").exists():
        save_saes(train_saes(model, tokens, cfg, layers, pool), folder)
    return load_saes(folder, model, cfg.granularity, layers)
