"""Benchmark: training throughput of AdaptiveCompress against sae-lens's standard SAE at equal width.

The work: one SAE of width ``d_sae = d_model`` (the seed's ``W_θ ∈ R^{d x d}``) on SmolLM2-135M's
``blocks.14.hook_resid_post``, trained by sae-lens's own ``SAETrainer`` for ``--steps`` steps of
``--batch`` tokens from the same cached activations (collected once, before either clock starts).
Ours is :class:`analysis.sae.adaptive.AdaptiveCompressTrainingSAE` with the seed's recipe (EMA
gate, retention schedule, ``0.1 h`` skip, L1 and contrastive terms); the reference is sae-lens's
``StandardTrainingSAE`` (ReLU + L1). Both run in this one process, one after the other, and each
is timed twice (the better time counts) so that a burst of load on a shared machine does not
decide the ratio.

It prints both throughputs (training tokens per second) and, as its last line,
``ratio=<AdaptiveCompress / standard>`` (below 1: AdaptiveCompress trains slower).

Run: ``.venv/bin/python benchmarks/adaptive.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("ANALYSIS_QUIET", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from analysis.data import lm_tokens  # noqa: E402
from analysis.forward import windows  # noqa: E402
from analysis.models import load_model  # noqa: E402
from analysis.sae import activations, adaptive  # noqa: E402


def batches(acts: torch.Tensor, batch: int, seed: int = 0):
    """An endless data provider: random batches of rows of ``acts``."""
    g = torch.Generator().manual_seed(seed)
    while True:
        yield acts[torch.randint(len(acts), (batch,), generator=g)]


def timed(make_sae, acts: torch.Tensor, steps: int, batch: int) -> float:
    """Training tokens per second of sae-lens's ``SAETrainer`` on a fresh SAE (best of two runs)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    best = float("inf")
    for _ in range(2):
        sae = make_sae()
        cfg = SAETrainerConfig(
            total_training_samples=steps * batch,
            train_batch_size_samples=batch,
            lr=3e-4,
            lr_end=3e-4,
            dead_feature_window=max(1, steps // 4),
            feature_sampling_window=steps,
            logger=LoggingConfig(log_to_wandb=False),
            n_batches_for_norm_estimate=1,
        )
        trainer = SAETrainer(cfg, sae, batches(acts, batch))
        start = time.perf_counter()
        trainer.fit()
        best = min(best, time.perf_counter() - start)
    return steps * batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=4096, help="activation rows collected once")
    parser.add_argument("--layer", type=int, default=14)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model("smollm2-135m")
    bos = model.tokenizer.bos_token_id
    seqs = windows(lm_tokens(model, "train", args.tokens), 128, bos)
    acts = activations.collect_resid(model, seqs, [args.layer])[args.layer]
    d = model.cfg.d_model
    steps = args.steps
    cfg = dict(warmup_steps=int(0.4 * steps), decay_steps=max(1, int(0.4 * steps)))
    ours = timed(
        lambda: adaptive.AdaptiveCompressTrainingSAE(adaptive.training_config(d, d, **cfg)), acts, steps, args.batch
    )
    ref = timed(lambda: activations.baseline("standard", d, d), acts, steps, args.batch)
    print(f"width {d}, {steps} steps of {args.batch} tokens, {len(acts)} cached activation rows")
    print(f"AdaptiveCompress: {ours:,.0f} training tokens/s")
    print(f"sae-lens standard: {ref:,.0f} training tokens/s")
    print(f"ratio={ours / ref:.3f}")


if __name__ == "__main__":
    main()
