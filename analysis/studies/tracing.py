"""Study: where facts live (ROME's causal tracing) and the seed's per-component signal.

The causal tracing chapter asks whether ROME's finding on GPT-2 XL (Meng et al. 2022, Fig. 2:
MLP effect at the last subject token in early-to-middle layers, attention effect at the last
token in late layers) holds on the book's model, how much it depends on the corruption, the
window and exact versus attribution patching, and how stable the per-component score of seed
004 (Scarlatescu & Mehta, "Information-Aware Compression Schemes Using Causal Tracing") is.

Here are its sizes per profile (:class:`TraceConfig`), the shared inputs of every section
(:func:`setup`: noise level and known facts), one runner per section (each a cached
:func:`analysis.tracing.average_indirect_effect` with the study's settings), the seed's words
(:data:`SEED_RESULTS`), the comparison with ROME and its verdict (:func:`rome_comparison`,
:func:`rome_verdict`), and :func:`causal_scores`, the score the sweep study compresses by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import torch
from datasets import Dataset
from transformer_lens import HookedTransformer

from analysis import data, stats, tracing
from analysis.config import Profile, get_profile, study_config
from analysis.scores import ComponentScores

SEED_RESULTS: dict[str, str] = {
    "rome_model": "GPT-2 XL (48 layers), 1000 known facts, Gaussian noise 3x embedding std, "
    "10 samples, window 10 (Meng et al. 2022, Fig. 2 and Sec. 2.2)",
    "rome_mlp": "early-to-middle-layer MLPs at the last subject token carry a large effect "
    "(ROME's abstract: 'a distinct set of steps in middle-layer feed-forward modules that "
    "mediate factual predictions while processing subject tokens')",
    "rome_attn": "attention matters in late layers at the last token",
    "rome_resid": "two peaks in the residual stream: early-middle layers at the last subject "
    "token, and late layers at the last token",
    "seed_claim": "causal-tracing scores per layer identify high-information layers, which "
    "should be compressed least (Scarlatescu & Mehta, GPT-2 small, 12 layers; z-score > 0.5 = "
    "'high', < -0.5 = 'low')",
}
"""What ROME and the seed paper report, in words (their claims, labelled as theirs)."""

EARLY_MID_DEPTH = 0.6
"""Relative depth (layer / (n_layers - 1)) up to which a peak counts as "early-to-middle"."""
LATE_DEPTH = 0.5
"""Relative depth from which a peak counts as "late"."""


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceConfig:
    """Sizes of the causal-tracing study for one run profile (see :func:`trace_config_for`)."""

    n_screen: int
    """Facts screened with :func:`analysis.data.known_facts` for ones the model knows."""
    n_exact: int
    """Known facts traced exactly for the average indirect effect."""
    n_attribution: int
    """Known facts traced by attribution patching (the fast mode)."""
    n_samples: int
    """Noise samples per corrupted run (ROME: 10)."""
    n_heatmaps: int
    """Facts shown as full ROME-style heatmaps."""
    n_compare: int
    """Facts used to compare corruption modes and exact vs attribution traces."""
    heatmap_samples: int = 10
    """Noise samples for the heatmaps."""
    window: int = 10
    """ROME's restoration window for MLP and attention (layers)."""
    noise_factor: float = 3.0
    """Noise standard deviation, in units of the embedding standard deviation (ROME: 3)."""
    noise_tokens: int = 4096
    """Evaluation-text tokens on which the embedding standard deviation is measured."""
    seed: int = 0
    max_rows: int = 1024
    """Largest batch (restored sequences) in one forward pass."""
    extra_models: tuple[str, ...] = ()
    """Models also traced when their weights are available (the ``gpu`` profile)."""


TRACE_CONFIGS: dict[str, TraceConfig] = {
    "smoke": TraceConfig(
        n_screen=80,
        n_exact=4,
        n_attribution=6,
        n_samples=2,
        n_heatmaps=1,
        n_compare=3,
        heatmap_samples=2,
        noise_tokens=512,
        max_rows=512,
    ),
    "cpu": TraceConfig(
        n_screen=1800, n_exact=50, n_attribution=220, n_samples=2, n_heatmaps=3, n_compare=25, heatmap_samples=10
    ),
    "gpu": TraceConfig(
        n_screen=8000,
        n_exact=1000,
        n_attribution=2000,
        n_samples=10,
        n_heatmaps=4,
        n_compare=200,
        noise_tokens=65_536,
        max_rows=4096,
        extra_models=("gemma-2-2b",),
    ),
}
"""Sizes per profile. ``cpu`` fits the chapter in about 15 minutes on 2 cores; ``gpu`` is ROME's
scale (1000 facts, 10 noise samples, window 10)."""


def trace_config_for(profile: Profile | str) -> TraceConfig:
    """The :class:`TraceConfig` for a profile (a :class:`~analysis.config.Profile` or its name).

    ``profile.extra["tracing"]`` (a dict of field values), when present, overrides fields.
    """
    return study_config(TRACE_CONFIGS, profile, "tracing")


# --------------------------------------------------------------------------------------
# Inputs shared by every section, and one runner per section
# --------------------------------------------------------------------------------------


def _first(ds: Dataset, n: int) -> Dataset:
    return ds.select(range(min(n, len(ds))))


@dataclass
class Setup:
    """What every section of the study shares: the model, its sizes, ROME's noise level measured
    on held-out text, and the facts the model knows (screened once per model)."""

    model: HookedTransformer
    cfg: TraceConfig
    noise: float
    """Absolute noise std: ``cfg.noise_factor`` x the embedding std on ``noise_tokens`` eval tokens."""
    noise_tokens: int
    known: Dataset
    screen: dict
    """The screen's counts (:func:`analysis.data.filter_known`)."""
    cache: bool = True

    @property
    def exact(self) -> Dataset:
        """The known facts traced exactly (``cfg.n_exact``)."""
        return _first(self.known, self.cfg.n_exact)

    @property
    def many(self) -> Dataset:
        """The known facts traced by attribution (``cfg.n_attribution``)."""
        return _first(self.known, self.cfg.n_attribution)

    @property
    def shown(self) -> Dataset:
        """The known facts drawn as heatmaps (``cfg.n_heatmaps``)."""
        return _first(self.known, self.cfg.n_heatmaps)

    @property
    def compare(self) -> Dataset:
        """The exactly traced facts also traced with token replacement (``cfg.n_compare``)."""
        return _first(self.exact, self.cfg.n_compare)

    def aie(self, facts: Any, kinds: Sequence[str] = ("resid", "mlp", "attn"), **kw) -> tracing.AIEResult:
        """:func:`analysis.tracing.average_indirect_effect` with the study's noise, samples, seed,
        window and batch size (each overridable)."""
        c = self.cfg
        kw = (
            dict(
                n_samples=c.n_samples,
                noise=self.noise,
                seed=c.seed,
                window=c.window,
                max_rows=c.max_rows,
                cache=self.cache,
            )
            | kw
        )
        return tracing.average_indirect_effect(self.model, facts, kinds, **kw)


def setup(model: HookedTransformer, profile: Profile | str | None = None, cache: bool = True) -> Setup:
    """Measure the noise level and screen the known facts for ``model`` under a profile."""
    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    cfg = trace_config_for(profile)
    eval_tokens = data.lm_tokens(model.tokenizer, "eval", n_tokens=cfg.noise_tokens)
    noise = tracing.noise_scale(model, eval_tokens, factor=cfg.noise_factor)
    known, screen = data.known_facts(model, cfg.n_screen, cache=cache)
    return Setup(model, cfg, noise, len(eval_tokens), known, screen, cache)


def heatmap_traces(s: Setup) -> tracing.AIEResult:
    """The facts drawn as ROME-style heatmaps (``cfg.heatmap_samples`` noise samples)."""
    return s.aie(s.shown, n_samples=s.cfg.heatmap_samples, desc="heatmaps")


def exact_aie(s: Setup) -> tracing.AIEResult:
    """ROME's Figure 2: exact traces of residual, MLP and attention, windowed as ROME."""
    return s.aie(s.exact, desc="exact AIE")


def single_state_aie(s: Setup) -> tracing.AIEResult:
    """Exact traces of attention and MLP outputs restored one state at a time (window 1): the
    input of the per-component score."""
    return s.aie(s.exact, ("attn", "mlp"), window=1, desc="component information")


def token_replacement_aie(s: Setup) -> tracing.AIEResult:
    """The :attr:`Setup.compare` facts corrupted by replacing the subject with another of the same
    token length, drawn from all screened facts (:func:`analysis.tracing.pair_subjects`)."""
    replacements = tracing.pair_subjects(s.model, s.compare, pool=data.facts(s.cfg.n_screen), seed=s.cfg.seed)
    return s.aie(s.compare, corruption="tokens", replacements=replacements, noise=None, desc="token-replacement AIE")


def attribution_aie(s: Setup, facts: Dataset, desc: str = "attribution AIE") -> tracing.AIEResult:
    """Attribution-patching traces at window 1 (re-window with :meth:`AIEResult.with_window`)."""
    return s.aie(facts, method="attribution", window=1, desc=desc)


def causal_scores(model: HookedTransformer, profile_name: str | None = None, cache: bool = True) -> ComponentScores:
    """The causal-tracing score exactly as the causal tracing chapter computes it (same facts,
    noise and samples, so its cached traces are reused): the single-state (window 1) indirect
    effect of each layer's attention and MLP output, max over positions from the subject on,
    averaged over the known facts traced exactly."""
    return ComponentScores.from_aie(single_state_aie(setup(model, profile_name, cache)))


def other_models(profile: Profile) -> dict[str, pd.DataFrame | str]:
    """The ROME comparison on each of the profile's extra models (or why it was skipped)."""
    from analysis.models import ModelNotAvailableError, load_model

    out: dict[str, pd.DataFrame | str] = {}
    for name in trace_config_for(profile).extra_models:
        try:
            other = load_model(name)
        except ModelNotAvailableError as err:
            out[name] = f"skipped, weights not available ({str(err).splitlines()[0]})"
            continue
        aie = exact_aie(setup(other, profile))
        out[name] = rome_comparison(aie, f"{name}, {aie.n_facts} facts")
    return out


# --------------------------------------------------------------------------------------
# ROME's finding beside ours, and the verdict
# --------------------------------------------------------------------------------------


def _where(p: dict, n_layers: int) -> str:
    return (
        f"{p['role']}, layer {p['layer']}/{n_layers - 1} (depth {p['depth']:.2f}), AIE {p['aie']:.3f} ± {p['ci']:.3f}"
    )


def rome_comparison(aie: tracing.AIEResult, label: str = "ours") -> pd.DataFrame:
    """ROME's qualitative finding on GPT-2 XL beside ours, with a computed yes/no per row.

    The rules: the MLP peak (window as traced) matches when it is at the last subject token
    at depth <= :data:`EARLY_MID_DEPTH`, checked twice: over all restorations, and over those
    whose window leaves out layer 0's MLP (which, restored alone, re-supplies much of a
    token's identity); the attention peak matches when it is at the last token at depth >=
    :data:`LATE_DEPTH`; the residual stream when its last-subject-token curve peaks before its
    last-token curve.
    """
    L = aie.traces[0].n_layers
    rows = []
    if "hook_mlp_out" in aie.kinds:
        p = aie.peak("mlp")
        ok = "last subject" in p["role"].split(" = ") and p["depth"] <= EARLY_MID_DEPTH
        rows.append(("MLP peak (hook_mlp_out)", SEED_RESULTS["rome_mlp"], _where(p, L), ok))
        window = aie.config.get("window", 1)
        beyond = [l for l in range(L) if 0 not in tracing.window_layers(l, window, L)]
        p = aie.peak("mlp", layers=beyond)
        ok = "last subject" in p["role"].split(" = ") and p["depth"] <= EARLY_MID_DEPTH
        rows.append(
            (
                f"MLP peak, restorations without layer 0's MLP (layers {beyond[0]}+ at window {window})",
                SEED_RESULTS["rome_mlp"],
                _where(p, L),
                ok,
            )
        )
    if "hook_attn_out" in aie.kinds:
        p = aie.peak("attn")
        ok = "last" in p["role"].split(" = ") and p["depth"] >= LATE_DEPTH
        rows.append(("attention peak (hook_attn_out)", SEED_RESULTS["rome_attn"], _where(p, L), ok))
    if "hook_resid_pre" in aie.kinds:
        a, b = aie.peak("resid", ["last subject"]), aie.peak("resid", ["last"])
        ok = a["layer"] < b["layer"]
        ours = f"last subject token peaks at layer {a['layer']}, last token at layer {b['layer']}"
        rows.append(("residual stream (hook_resid_pre)", SEED_RESULTS["rome_resid"], ours, ok))
    return pd.DataFrame(rows, columns=["finding", "ROME (GPT-2 XL, their words)", label, "same pattern"])


def rome_verdict(comparison: pd.DataFrame) -> dict[str, Any]:
    """ROME's pattern on our model, from a :func:`rome_comparison` table: "reproduced" when
    every finding matches, "not reproduced" when none does, "partly reproduced" otherwise.

    Returns ``verdict``, ``n_match``, ``n_findings`` and the ``criterion`` in words.
    """
    if len(comparison) == 0:
        raise ValueError("The comparison has no findings; trace at least one of resid, mlp, attn.")
    n_match, n = int(comparison["same pattern"].sum()), len(comparison)
    verdict = "reproduced" if n_match == n else "not reproduced" if n_match == 0 else "partly reproduced"
    criterion = (
        f"all findings match (MLP peak at the last subject token, depth <= {EARLY_MID_DEPTH}; "
        f"attention peak at the last token, depth >= {LATE_DEPTH}; residual last-subject peak "
        "before last-token peak)"
    )
    return {"verdict": verdict, "n_match": n_match, "n_findings": n, "criterion": criterion}


# --------------------------------------------------------------------------------------
# How methods agree
# --------------------------------------------------------------------------------------


def agreement(a: Sequence[tracing.TraceResult], b: Sequence[tracing.TraceResult], kind: str) -> dict[str, Any]:
    """Correlation of two methods' indirect effects on the same facts (states from the subject on).

    Traces are paired by prompt; facts traced by only one method are left out. Returns
    ``pearson``, ``spearman``, ``n`` (states compared) and the paired values ``x``, ``y``.
    """
    xs, ys = [], []
    by_prompt = {t.prompt: t for t in b}
    pairs = [(ta, by_prompt[ta.prompt]) for ta in a if ta.prompt in by_prompt]
    if not pairs:
        raise ValueError("The two lists of traces share no fact (matched by prompt).")
    for ta, tb in pairs:
        s = ta.subject_span[0]
        x, y = ta.indirect_effect(kind)[:, s:].reshape(-1), tb.indirect_effect(kind)[:, s:].reshape(-1)
        ok = ~(x.isnan() | y.isnan())
        xs.append(x[ok])
        ys.append(y[ok])
    x, y = torch.cat(xs), torch.cat(ys)
    return {"pearson": stats.pearson(x, y), "spearman": stats.spearman(x, y), "n": int(x.numel()), "x": x, "y": y}


def aie_agreement(a: tracing.AIEResult, b: tracing.AIEResult, labels: tuple[str, str] = ("a", "b")) -> pd.DataFrame:
    """How two AIE results (e.g. two corruptions) agree: correlation of the role x layer maps
    and each one's peak, per kind they share."""
    rows = []
    for kind in [k for k in a.kinds if k in b.kinds]:
        ma, mb = a.mean(kind).reshape(-1), b.mean(kind).reshape(-1)
        ok = ~(ma.isnan() | mb.isnan())
        pa, pb = a.peak(kind), b.peak(kind)
        rows.append(
            {
                "kind": kind,
                "pearson r of AIE maps": stats.pearson(ma[ok], mb[ok]),
                f"peak ({labels[0]})": f"{pa['role']}, layer {pa['layer']}",
                f"peak ({labels[1]})": f"{pb['role']}, layer {pb['layer']}",
                f"max AIE ({labels[0]})": pa["aie"],
                f"max AIE ({labels[1]})": pb["aie"],
            }
        )
    return pd.DataFrame(rows).set_index("kind")


def exact_vs_attribution(
    exact: tracing.AIEResult, single: tracing.AIEResult, attr_single: tracing.AIEResult, window: int
) -> dict[str, dict[str, Any]]:
    """:func:`agreement` of exact and attribution traces on the same facts: the residual stream,
    MLP and attention at ROME's window, and MLP and attention one state at a time."""
    attr = attr_single.with_window(window)
    pairs = [
        ("resid", exact, attr, 1),
        ("mlp", exact, attr, window),
        ("attn", exact, attr, window),
        ("mlp", single, attr_single, 1),
        ("attn", single, attr_single, 1),
    ]
    return {f"{k} (window {w})": agreement(e.traces, a.traces, k) for k, e, a, w in pairs}


def agreement_table(rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The Pearson and Spearman correlations and sizes of several :func:`agreement` results."""
    return pd.DataFrame({k: {m: v[m] for m in ("pearson", "spearman", "n")} for k, v in rows.items()}).T


def stability(scores: dict[str, ComponentScores], n_splits: int = 200, seed: int = 0) -> pd.DataFrame:
    """Split-half Spearman of each score (mean and sd over ``n_splits`` random halves of its facts;
    empty when it has fewer than 4 facts)."""
    out = {}
    for name, s in scores.items():
        halves = s.split_half(n_splits, seed) if len(s.samples) >= 4 else torch.tensor([])
        out[name] = {
            "split-half Spearman (mean)": halves.mean().item() if len(halves) else None,
            f"sd over {n_splits} splits": halves.std().item() if len(halves) > 1 else None,
        }
    return pd.DataFrame(out).T
