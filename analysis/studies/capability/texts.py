"""Which text chooses and which text judges: every token span the study reads, by role.

The density map, Wanda and the other importance signals *choose* (they rank heads, and the
ranking picks each allocation); perplexity, head ablations, transition curves and the SAEs'
CE loss recovered *judge*. The two sets never share a token: choosing text comes from the
``calib`` (and the SAEs' ``train``) split of :func:`analysis.data.lm_tokens`, judging text from
``eval``; the splits are disjoint by article. The sentiment probe's examples judge too, so the
density's film-review group leaves them out (:func:`~analysis.studies.capability.run.domain_tokens`).
Facts: the importance signals that patch prompts use the ``"score"`` split, the allocations are
judged on the ``"eval"`` split (:func:`analysis.data.fact_splits`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from transformer_lens import HookedTransformer

from analysis import data
from analysis.studies.capability.config import DensityConfig

DENSITY_SPLIT = "calib"
"""The LM split of the density's Wikipedia group (it was ``eval`` before: the text that then judged the allocation)."""


@dataclass(frozen=True)
class Span:
    """Tokens ``[start, stop)`` of ``lm_tokens(split)``."""

    split: str
    start: int
    stop: int

    def overlaps(self, other: Span) -> bool:
        """Whether the two spans share a token."""
        return self.split == other.split and self.start < other.stop and other.start < self.stop

    def tokens(self, model: HookedTransformer) -> Tensor:
        """The span's tokens under ``model``'s tokenizer."""
        return data.lm_tokens(model.tokenizer, self.split, n_tokens=self.stop)[self.start :]


def text_plan(cfg: DensityConfig) -> dict[str, dict[str, Span]]:
    """``{"choosing": {...}, "judging": {...}}``: every LM-text span the study reads under ``cfg``."""
    train = max(c.train_tokens for c in (*cfg.ladder, cfg.sae))
    return {
        "choosing": {
            "SAE training": Span("train", 0, train),
            "density (Wikipedia group)": Span(DENSITY_SPLIT, 0, cfg.eval_tokens_per_domain),
            "Wanda input norms": Span("calib", 0, cfg.calib_tokens),
            "gradient importance": Span("calib", 0, cfg.gradient_tokens),
        },
        "judging": {
            "SAE CE loss recovered": Span("eval", 0, cfg.ce_tokens),
            "head ablation": Span("eval", 0, cfg.ablation_tokens),
            "transition curves": Span("eval", 0, cfg.ablation_tokens),
            "budget perplexity": Span("eval", 0, cfg.ppl_tokens),
        },
    }


def overlaps(cfg: DensityConfig) -> list[tuple[str, str]]:
    """Every (choosing, judging) pair of :func:`text_plan` spans that share a token (empty: disjoint)."""
    plan = text_plan(cfg)
    return [(c, j) for c, a in plan["choosing"].items() for j, b in plan["judging"].items() if a.overlaps(b)]


def probe_examples(cfg: DensityConfig):
    """The sentiment probe's examples (they judge every allocation): ``load_task(cfg.probe_task, n=cfg.n_probe)``."""
    return data.load_task(cfg.probe_task, n=cfg.n_probe, seed=cfg.seed)
