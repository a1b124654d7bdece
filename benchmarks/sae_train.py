"""Benchmark: SAEs on every layer's ``hook_z`` from one shared stream, against sae-lens's runner.

The work: one TopK SAE (``d_sae = 2 * 576``, ``k = 16``) on ``blocks.{l}.attn.hook_z`` for each of
SmolLM2-135M's 30 layers, each trained on the same ``--tokens`` tokens of the packaged training
text, with the same batch size and learning rate. Ours (:func:`analysis.sae.train_saes`) runs the
model once and feeds every layer's activations to sae-lens's ``MultiSAETrainer``; the reference
runs sae-lens's ``LanguageModelSAETrainingRunner`` once per layer (its documented override hooks
for model and dataset), which repeats the model's forward pass for every layer.

It prints both end-to-end throughputs (training tokens per second, for all layers), the final
explained variance of one layer's SAE from each side as a sanity check, and as its last line
``ratio=<ours/sae-lens>``.

Run: ``.venv/bin/python benchmarks/sae_train.py`` (about 3 minutes on 2 CPU cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("ANALYSIS_QUIET", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from analysis import hooks, sae  # noqa: E402
from analysis.data import lm_tokens  # noqa: E402
from analysis.forward import windows  # noqa: E402
from analysis.models import load_model  # noqa: E402


def run_sae_lens(model, tokens: torch.Tensor, cfg: sae.SAETrainConfig, layer: int, out: Path):
    """sae-lens's own runner for one layer, on our model and our tokens."""
    from datasets import Dataset
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    seqs = windows(tokens, cfg.context)
    ds = Dataset.from_dict({"input_ids": seqs.tolist()})
    d_in = model.cfg.n_heads * model.cfg.d_head
    runner_cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=d_in, d_sae=cfg.expansion * d_in, k=cfg.k),
        model_name=model.cfg.model_name,
        hook_name=hooks.z(layer),
        dataset_path="local",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=cfg.context,
        training_tokens=seqs.numel(),
        train_batch_size_tokens=cfg.batch_tokens,
        store_batch_size_prompts=cfg.forward_batch,
        n_batches_in_buffer=cfg.buffer_batches,
        lr=cfg.lr,
        device=str(model.cfg.device),
        seed=cfg.seed,
        prepend_bos=False,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=str(out / "ckpt"),
        output_path=str(out / "out"),
        save_final_checkpoint=False,
        n_checkpoints=0,
        verbose=False,
    )
    return LanguageModelSAETrainingRunner(runner_cfg, override_dataset=ds, override_model=model).run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048, help="training tokens per SAE")
    ap.add_argument("--layers", type=int, default=None, help="first N layers only (default: all)")
    args = ap.parse_args()
    # sae-lens logs an error for every hook_z batch (a failed .view it then retries with .reshape)
    logging.getLogger("sae_lens").setLevel(logging.CRITICAL)

    model = load_model("smollm2-135m")
    layers = list(range(args.layers or model.cfg.n_layers))
    cfg = sae.SAETrainConfig(
        train_tokens=args.tokens,
        context=128,
        batch_tokens=256,
        expansion=2,
        k=16,
        forward_batch=8,
        buffer_batches=2,
        skip_first=0,
    )  # every position, as sae-lens
    tokens = lm_tokens(model.tokenizer, "train", n_tokens=args.tokens)
    n = windows(tokens, cfg.context).numel()
    print(
        f"{len(layers)} layers of hook_z SAEs, d_in={model.cfg.n_heads * model.cfg.d_head}, "
        f"d_sae={cfg.expansion * model.cfg.n_heads * model.cfg.d_head}, k={cfg.k}, {n} tokens each, "
        f"batch {cfg.batch_tokens}, torch threads {torch.get_num_threads()}"
    )

    seen = [0]  # tokens entering the model's embedding: the forward work each side does
    model.hook_embed.add_hook(
        lambda x, hook: seen.__setitem__(0, seen[0] + x.shape[0] * x.shape[1]), dir="fwd", is_permanent=True
    )
    try:
        t0 = time.perf_counter()
        ours = sae.train_saes(model, tokens, cfg, layers)
        t_ours = time.perf_counter() - t0
        ours_fwd, seen[0] = seen[0], 0
        print(
            f"ours (one shared stream, sae-lens MultiSAETrainer): {t_ours:.1f} s, {n / t_ours:.1f} tokens/s "
            f"({ours_fwd} tokens through the model)"
        )

        t0 = time.perf_counter()
        theirs = {}
        with tempfile.TemporaryDirectory() as tmp:
            for l in layers:
                theirs[l] = run_sae_lens(model, tokens, cfg, l, Path(tmp) / str(l))
        t_ref = time.perf_counter() - t0
        print(
            f"sae-lens LanguageModelSAETrainingRunner x {len(layers)}: {t_ref:.1f} s, {n / t_ref:.1f} tokens/s "
            f"({seen[0]} tokens through the model)"
        )
    finally:
        model.hook_embed.remove_hooks("fwd", including_permanent=True)

    check = lm_tokens(model.tokenizer, "eval", n_tokens=1024)
    last = layers[-1]
    pair = {"ours": ours[sae.sae_key(last)], "sae-lens": theirs[last]}
    for name, trained in pair.items():
        stats = sae.latent_stats(model, {sae.sae_key(last): trained.eval()}, {"eval": check}, context=cfg.context)
        print(f"explained variance, layer {last}, {name}: {stats.ev(sae.sae_key(last)):.3f}")
    print(f"ratio={(n / t_ours) / (n / t_ref):.2f}")


if __name__ == "__main__":
    main()
