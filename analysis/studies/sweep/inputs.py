"""What the sweep needs before any cell: the three redundancy scores and the reference.

Facts are split by purpose (:func:`analysis.data.fact_splits`, the one known-fact screen of the
profile's tracing recipe, :class:`analysis.tracing.FactScreen`, which the causal tracing study
shares): the causal-tracing score is traced on the ``"score"`` facts, and
every cell's fact recall is measured on the ``"eval"`` facts, so no fact both chooses the
allocation and judges it.
"""

from __future__ import annotations

from transformer_lens import HookedTransformer

from analysis import data, scores, tracing
from analysis.evaluate import LMScore, Reference
from analysis.scores import ComponentScores
from analysis.studies import verdicts
from analysis.studies.sweep.config import SweepConfig
from analysis.studies.sweep.results import ReferenceSetup


def fact_split(model: HookedTransformer, profile) -> dict:
    """``{"score", "eval"}`` known facts, as the causal tracing study splits them (the screen of
    the profile's :class:`analysis.tracing.Recipe`); raises if the two overlap."""

    splits = tracing.recipe_for(profile).screen.splits(model)
    shared = set(splits["score"]["id"]) & set(splits["eval"]["id"])
    if shared:
        raise ValueError(f"{len(shared)} facts are in both the score and the eval split; the splits must be disjoint.")
    return splits


def gradient_curve(model: HookedTransformer, cfg: SweepConfig, profile) -> dict[int, ComponentScores]:
    """The gradient-magnitude score at each of ``cfg.calib_sizes`` calibration tokens (and at
    ``cfg.calib_tokens``), from one cached pass over the largest."""
    sizes = sorted(set(cfg.calib_sizes) | {cfg.calib_tokens})
    calib = data.lm_tokens(model.tokenizer, "calib", n_tokens=max(sizes))
    return scores.gradient_magnitude_curve(model, calib, sizes, profile.context)


def redundancy_scores(model: HookedTransformer, cfg: SweepConfig, profile) -> dict[str, ComponentScores]:
    """The seed's three scores of every component, by name: causal tracing
    (:func:`analysis.scores.causal_tracing`: the causal tracing study's traces of its ``"score"``
    facts, reused from the cache), weight magnitude, and gradient magnitude of the LM loss on
    ``cfg.calib_tokens`` calibration tokens."""

    curve = gradient_curve(model, cfg, profile)
    used = max(n for n in curve if n <= cfg.calib_tokens)
    return {
        "causal tracing": scores.causal_tracing(model, profile),
        "weight magnitude": scores.weight_magnitude(model),
        "gradient magnitude": curve[used],
    }


def reference_for(model: HookedTransformer, cfg: SweepConfig, profile) -> ReferenceSetup:
    """The evaluation every cell is scored by: ``cfg.eval_tokens`` held-out tokens and at most
    ``cfg.n_facts`` of the ``"eval"`` known facts (never those behind the causal-tracing score),
    with the settings that key the cell cache and the arguments that rebuild it in a worker."""
    facts = fact_split(model, profile)["eval"]
    facts = facts.select(range(min(cfg.n_facts, len(facts))))
    if len(facts) == 0:
        raise ValueError("The eval split has no known facts; fact recall cannot be measured (screen more facts).")
    tokens = data.lm_tokens(model.tokenizer, "eval", n_tokens=cfg.eval_tokens)
    args = dict(
        tokens=tokens,
        context=profile.context,
        batch_size=cfg.batch_size,
        prompts=list(facts["prompt"]),
        targets=list(facts["target"]),
    )
    key = {"eval_tokens": cfg.eval_tokens, "context": profile.context, "facts": list(facts["id"])}
    return ReferenceSetup(Reference(model, **args), key, args, tuple(facts["relation"]))


def unigram_bar(model: HookedTransformer, cfg: SweepConfig, reference: Reference) -> LMScore:
    """The perplexity below which a compressed model counts as usable
    (:func:`analysis.studies.verdicts.unigram_line` of ``cfg.unigram_tokens`` training tokens),
    scored on the reference's evaluation windows."""
    windows = reference.windows
    return verdicts.unigram_line(model, windows.flatten(), windows.shape[1], cfg.unigram_tokens)
