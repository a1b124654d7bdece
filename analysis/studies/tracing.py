"""Study: where facts live (ROME's causal tracing) and the seed's per-component signal.

The causal tracing chapter asks whether ROME's finding on GPT-2 XL (Meng et al. 2022, Fig. 2:
MLP effect at the last subject token in early-to-middle layers, attention effect at the last
token in late layers) holds on the book's model, how much it depends on the corruption, the
window and exact versus attribution patching, and how stable the per-component score of seed
004 (Scarlatescu & Mehta, "Information-Aware Compression Schemes Using Causal Tracing") is.

Here are its sizes per profile (:class:`TraceConfig`), the shared inputs of every section
(:func:`setup`: the ``"score"`` facts of the one known-fact screen, ROME's noise level measured
on their subjects, and the number of noise samples chosen from a measured convergence curve),
one runner per section (each a cached :func:`analysis.tracing.average_indirect_effect` with
the study's settings), the seed's words (:data:`SEED_RESULTS`), the comparison with ROME
(:func:`rome_comparison`) and its verdicts with bootstrap intervals over facts
(:func:`rome_verdicts`), and :func:`causal_scores`, the score the sweep study compresses by.

Layers are numbered as ROME numbers them: the residual stream is restored at block outputs
(``hook_resid_post``), so layer l here is ROME's layer l; ``hook_resid_pre`` of layer l is the
output of block l - 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
import torch
from datasets import Dataset
from transformer_lens import HookedTransformer

from analysis import data, stats, tracing
from analysis.config import PROFILES, Profile, get_profile, study_config
from analysis.scores import ComponentScores
from analysis.studies import verdicts
from analysis.studies.verdicts import Verdict
from analysis.tracing.peaks import peak_depths, percentile_interval, role_margin

SEED_RESULTS: dict[str, str] = {
    "rome_model": "GPT-2 XL (48 layers), 1000 known facts, Gaussian noise 3x the std of subject-token "
    "embeddings, 10 samples, window 10, block outputs restored (Meng et al. 2022, Fig. 2 and Sec. 2.2)",
    "rome_mlp": "early-to-middle-layer MLPs at the last subject token carry a large effect "
    "(ROME's abstract: 'a distinct set of steps in middle-layer feed-forward modules that "
    "mediate factual predictions while processing subject tokens')",
    "rome_mlp_vs_attn": "at the last subject token the MLP effect is large and the attention effect "
    "small (ROME Fig. 2, Sec. 2.3: the early site is mediated by MLPs)",
    "rome_attn": "attention matters in late layers at the last token",
    "rome_resid": "two peaks in the residual stream: early-middle layers at the last subject "
    "token, and late layers at the last token",
    "seed_claim": "causal-tracing scores per layer identify high-information layers, which "
    "should be compressed least (Scarlatescu & Mehta, GPT-2 small, 12 layers; z-score > 0.5 = "
    "'high', < -0.5 = 'low')",
}
"""What ROME and the seed paper report, in words (their claims, labelled as theirs)."""

BAND_EDGE = 0.5
"""Relative depth (layer / (n_layers - 1)) splitting the two bands, which do not overlap: a peak
below it is "early-to-middle", a peak at or above it "late"."""
BANDS: dict[str, str] = {"early-to-middle": "<", "late": ">"}
"""Each depth band as the side of :data:`BAND_EDGE` its peak must lie on."""


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceConfig:
    """Sizes of the causal-tracing study for one run profile (see :func:`trace_config_for`)."""

    n_screen: int
    """Facts screened once (:func:`analysis.data.known_facts`); the study traces the known ones of
    the ``"score"`` split (:func:`analysis.data.fact_splits`)."""
    n_exact: int
    """Known facts traced exactly for the average indirect effect."""
    n_attribution: int
    """Known facts traced by attribution patching (the fast mode)."""
    max_samples: int
    """Most noise samples per corrupted run the profile affords; the number used is the one the
    convergence curve chooses (:func:`choose_samples`), capped here."""
    n_heatmaps: int
    """Facts shown as full ROME-style heatmaps."""
    n_compare: int
    """Facts used to compare corruption modes and exact vs attribution traces."""
    convergence_facts: int
    """Facts traced with ``convergence_samples`` samples for the convergence curve."""
    convergence_samples: int
    """Noise samples of the convergence traces (ROME: 10)."""
    max_share: float = 0.1
    """Largest share of the per-fact variance that noise sampling may make up (chooses the samples)."""
    heatmap_samples: int = 10
    """Noise samples for the heatmaps (equal to ``convergence_samples``, with ``n_heatmaps <=
    convergence_facts``, the heatmaps are the convergence traces, read from the cache)."""
    window: int = 10
    """ROME's restoration window for MLP and attention (layers)."""
    resid: str = "resid_post"
    """Residual state restored: ``resid_post`` (block outputs, ROME's layer numbering) or
    ``resid_pre`` (our layer l is then ROME's l - 1)."""
    noise_source: str = "subjects"
    """``subjects`` (ROME: std of the facts' subject-token embeddings) or ``text`` (eval text)."""
    noise_factor: float = 3.0
    """Noise standard deviation, in units of the embedding standard deviation (ROME: 3)."""
    noise_tokens: int = 4096
    """Evaluation-text tokens for the ``text`` noise option (shown beside ROME's)."""
    n_boot: int = 1000
    """Bootstrap resamples of the facts behind every peak location's interval."""
    seed: int = 0
    max_rows: int = 1024
    """Largest batch (restored sequences) in one forward pass."""
    extra_models: tuple[str, ...] = ()
    """Models also traced when their weights are available (the ``gpu`` profile)."""


TRACE_CONFIGS: dict[str, TraceConfig] = {
    "smoke": TraceConfig(
        n_screen=PROFILES["smoke"].n_facts,
        n_exact=4,
        n_attribution=6,
        max_samples=2,
        n_heatmaps=1,
        n_compare=3,
        convergence_facts=2,
        convergence_samples=3,
        heatmap_samples=3,
        noise_tokens=512,
        n_boot=200,
        max_rows=512,
    ),
    "cpu": TraceConfig(
        n_screen=PROFILES["cpu"].n_facts,
        n_exact=30,
        n_attribution=150,
        max_samples=2,
        n_heatmaps=2,
        # cut for the 90-minute cpu budget: token replacement and exact-vs-attribution on 8 facts, not 15
        # (agreement tables only; the verdicts read the noise traces of the n_exact facts)
        n_compare=8,
        convergence_facts=4,
        convergence_samples=8,
        heatmap_samples=8,
    ),
    "gpu": TraceConfig(
        n_screen=PROFILES["gpu"].n_facts,
        n_exact=1000,
        n_attribution=2000,
        max_samples=20,
        n_heatmaps=4,
        n_compare=200,
        convergence_facts=50,
        convergence_samples=30,
        noise_tokens=65_536,
        max_rows=4096,
        extra_models=("gemma-2-2b",),
    ),
}
"""Sizes per profile. ``gpu`` is ROME's scale (1000 facts, window 10; noise samples as the
convergence curve chooses). ``cpu`` aims at about 15 minutes cold on 2 cores. Its cost is counted
in *units*, one exact trace of one fact with one noise sample (three kinds, window 10); the
window-1 traces cost about 0.7 units per sample, token replacement one unit per fact. Measured
on the smoke facts under heavy sharing, a unit took 10.5 CPU-seconds (12.5 for a fact's first
sample), so about 5-7 s of wall time on 2 idle cores. ``cpu`` spends 32 units on the
convergence curve (4 facts x 8 samples; the heatmaps are its first facts, free), 60 on the AIE
(30 facts x at most 2 samples), ~42 on the window-1 score and 15 on token replacement: ~150
units, 13-17 minutes, plus about 2 for attribution patching of 150 facts. The cap of 2 samples
is what the budget allows; the chapter prints the sampling share the curve gives it. Cut for the
90-minute cpu budget (the last cold chapter took 1,010 s): token replacement on 8 facts, not 15
(7 units, about 40 s); it feeds agreement tables no verdict reads."""


def trace_config_for(profile: Profile | str) -> TraceConfig:
    """The :class:`TraceConfig` for a profile (a :class:`~analysis.config.Profile` or its name).

    ``profile.extra["tracing"]`` (a dict of field values), when present, overrides fields.
    """
    cfg = study_config(TRACE_CONFIGS, profile, "tracing")
    if cfg.noise_source not in ("subjects", "text"):
        raise ValueError(f"noise_source must be 'subjects' or 'text', got {cfg.noise_source!r}.")
    if cfg.resid not in ("resid_post", "resid_pre"):
        raise ValueError(f"resid must be 'resid_post' or 'resid_pre', got {cfg.resid!r}.")
    return cfg


# --------------------------------------------------------------------------------------
# Inputs shared by every section, and one runner per section
# --------------------------------------------------------------------------------------


def _first(ds: Dataset, n: int) -> Dataset:
    return ds.select(range(min(n, len(ds))))


@dataclass
class Setup:
    """What every section of the study shares: the model, its sizes, the facts of the ``"score"``
    split, ROME's noise level measured on their subjects, and the number of noise samples the
    convergence curve chose."""

    model: HookedTransformer
    cfg: TraceConfig
    noise: float
    """Absolute noise std used: ``cfg.noise_factor`` x the std of :attr:`noise_options`' chosen source."""
    noise_options: dict[str, float]
    """The noise std each source would give (``subjects``: ROME's; ``text``: eval text)."""
    facts: Dataset
    """The known facts of the ``"score"`` split, in screen order."""
    screen: dict
    """The screen's counts (:func:`analysis.data.filter_known`)."""
    n_samples: int = 1
    """Noise samples per corrupted run (set by :func:`setup` from the convergence curve)."""
    convergence: pd.DataFrame | None = None
    """The convergence curve (:func:`analysis.tracing.sample_convergence`)."""
    chosen: int | None = None
    """The number of samples the curve asks for (before the profile's cap)."""
    cache: bool = True
    require_correct: bool = True
    """Skip facts the clean model gets wrong (ROME); False only under ``fact_screen="all"`` (toy runs)."""

    @property
    def kinds(self) -> tuple[str, ...]:
        """The states traced for ROME's comparison: the residual (``cfg.resid``), MLP, attention."""
        return (self.cfg.resid, "mlp", "attn")

    @property
    def exact(self) -> Dataset:
        """The known facts traced exactly (``cfg.n_exact``)."""
        return _first(self.facts, self.cfg.n_exact)

    @property
    def many(self) -> Dataset:
        """The known facts traced by attribution (``cfg.n_attribution``)."""
        return _first(self.facts, self.cfg.n_attribution)

    @property
    def shown(self) -> Dataset:
        """The known facts drawn as heatmaps (``cfg.n_heatmaps``)."""
        return _first(self.facts, self.cfg.n_heatmaps)

    @property
    def compare(self) -> Dataset:
        """The exactly traced facts also traced with token replacement (``cfg.n_compare``)."""
        return _first(self.exact, self.cfg.n_compare)

    def aie(self, facts: Any, kinds: Sequence[str] | None = None, **kw) -> tracing.AIEResult:
        """:func:`analysis.tracing.average_indirect_effect` with the study's noise, samples, seed,
        window and batch size (each overridable); ``kinds`` default :attr:`kinds`."""
        c = self.cfg
        kw = (
            dict(
                n_samples=self.n_samples,
                noise=self.noise,
                seed=c.seed,
                window=c.window,
                max_rows=c.max_rows,
                cache=self.cache,
                require_correct=self.require_correct,
            )
            | kw
        )
        return tracing.average_indirect_effect(self.model, facts, kinds or self.kinds, **kw)


def setup(model: HookedTransformer, profile: Profile | str | None = None, cache: bool = True) -> Setup:
    """The study's shared inputs for ``model`` under a profile: the ``"score"`` facts of the one
    known-fact screen, the noise level (ROME's by default), and the number of noise samples chosen
    from the convergence curve (:func:`noise_convergence`), capped at ``cfg.max_samples``."""
    profile = get_profile(profile) if profile is None or isinstance(profile, str) else profile
    cfg = trace_config_for(profile)
    _, screen = data.known_facts(model, cfg.n_screen, cache=cache)
    facts = data.fact_splits(model, cfg.n_screen, seed=cfg.seed)["score"]
    eval_tokens = data.lm_tokens(model.tokenizer, "eval", n_tokens=cfg.noise_tokens)
    options = {
        "subjects": tracing.noise_scale(model, facts=facts, factor=cfg.noise_factor),
        "text": tracing.noise_scale(model, eval_tokens, factor=cfg.noise_factor),
    }
    require = profile.fact_screen != "all"
    s = Setup(model, cfg, options[cfg.noise_source], options, facts, screen, cache=cache, require_correct=require)
    s.convergence = tracing.sample_convergence(noise_convergence(s), seed=cfg.seed)
    s.chosen = tracing.choose_samples(s.convergence, cfg.max_share)
    s.n_samples = min(s.chosen or cfg.max_samples, cfg.max_samples)
    return s


def noise_convergence(s: Setup) -> tracing.AIEResult:
    """The first ``cfg.convergence_facts`` facts traced exactly with ``cfg.convergence_samples``
    noise samples each (every sample's probabilities kept), for the convergence curve."""
    c = s.cfg
    return s.aie(_first(s.facts, c.convergence_facts), n_samples=c.convergence_samples, desc="sample convergence")


def heatmap_traces(s: Setup) -> tracing.AIEResult:
    """The facts drawn as ROME-style heatmaps (``cfg.heatmap_samples`` noise samples)."""
    return s.aie(s.shown, n_samples=s.cfg.heatmap_samples, desc="heatmaps")


def exact_aie(s: Setup) -> tracing.AIEResult:
    """ROME's Figure 2: exact traces of the residual stream, MLP and attention, windowed as ROME."""
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
    averaged over the ``"score"`` facts traced exactly (:func:`analysis.data.fact_splits`)."""
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
# ROME's finding beside ours, and the verdicts
# --------------------------------------------------------------------------------------


def band_of(depth: float) -> str:
    """The depth band (:data:`BAND_EDGE`) a relative depth falls in."""
    return "early-to-middle" if depth < BAND_EDGE else "late"


def resid_hook(aie: tracing.AIEResult) -> str | None:
    """The residual hook an AIE traced (``hook_resid_post`` preferred), or None."""
    return next((h for h in ("hook_resid_post", "hook_resid_pre") if h in aie.kinds), None)


def _where(p: dict, n_layers: int) -> str:
    return (
        f"{p['role']}, layer {p['layer']}/{n_layers - 1} (depth {p['depth']:.2f}), AIE {p['aie']:.3f} ± {p['ci']:.3f}"
    )


def rome_comparison(aie: tracing.AIEResult, label: str = "ours") -> pd.DataFrame:
    """ROME's qualitative finding on GPT-2 XL beside ours (point estimates), with a yes/no per row.

    The MLP peak matches when it is at the last subject token in the early-to-middle band
    (depth < :data:`BAND_EDGE`), checked twice: over all restorations, and over those whose
    window leaves out layer 0's MLP (which, restored alone, re-supplies much of a token's
    identity); the attention peak when it is at the last token in the late band; the residual
    stream when its last-subject-token curve peaks before its last-token curve. The bands do not
    overlap. :func:`rome_verdicts` judges the same findings with intervals.
    """
    L = aie.traces[0].n_layers
    rows = []
    if "hook_mlp_out" in aie.kinds:
        p = aie.peak("mlp")
        ok = "last subject" in p["role"].split(" = ") and band_of(p["depth"]) == "early-to-middle"
        rows.append(("MLP peak (hook_mlp_out)", SEED_RESULTS["rome_mlp"], _where(p, L), ok))
        window = aie.config.get("window", 1)
        beyond = [l for l in range(L) if 0 not in tracing.window_layers(l, window, L)]
        if beyond:  # none when the window spans the whole (shallow) model
            p = aie.peak("mlp", layers=beyond)
            ok = "last subject" in p["role"].split(" = ") and band_of(p["depth"]) == "early-to-middle"
            label_beyond = f"MLP peak, restorations without layer 0's MLP (layers {beyond[0]}+ at window {window})"
            rows.append((label_beyond, SEED_RESULTS["rome_mlp"], _where(p, L), ok))
    if "hook_attn_out" in aie.kinds:
        p = aie.peak("attn")
        ok = "last" in p["role"].split(" = ") and band_of(p["depth"]) == "late"
        rows.append(("attention peak (hook_attn_out)", SEED_RESULTS["rome_attn"], _where(p, L), ok))
    resid = resid_hook(aie)
    if resid is not None:
        a, b = aie.peak(resid, ["last subject"]), aie.peak(resid, ["last"])
        ok = a["layer"] < b["layer"]
        ours = f"last subject token peaks at layer {a['layer']}, last token at layer {b['layer']}"
        rows.append((f"residual stream ({resid})", SEED_RESULTS["rome_resid"], ours, ok))
    return pd.DataFrame(rows, columns=["finding", "ROME (GPT-2 XL, their words)", label, "same pattern"])


def location_verdict(
    claim: str,
    aie: tracing.AIEResult,
    kind: str,
    role: str,
    band: str,
    seed_words: str,
    n_boot: int = 1000,
    seed: int = 0,
    compete: bool = True,
) -> Verdict:
    """ "The ``kind`` effect peaks at ``role`` in ``band``", judged with a bootstrap over facts.

    Two parts: the peak's role (``compete``: the ``role`` curve's peak above every other role's,
    its 95% interval of the margin > 0) and its depth (95% interval of the peak depth on the
    ``band`` side of :data:`BAND_EDGE`), each by :func:`verdicts.interval_verdict`, joined by
    :func:`verdicts.combine`. The row carries the peak depth and its interval.
    """
    if band not in BANDS:
        raise ValueError(f"Unknown band {band!r}; use one of {list(BANDS)}.")
    n = aie.n_facts
    where = peak_depths(aie, kind, role, n_boot, seed)
    parts = [
        verdicts.interval_verdict(
            f"peak depth {band}", where["depth"], where["lo"], where["hi"], BAND_EDGE, BANDS[band], n, what="depth"
        )
    ]
    if compete:
        m = role_margin(aie, kind, role, n_boot, seed)
        parts.insert(
            0,
            verdicts.interval_verdict(
                f"peak at the {role} token",
                m["margin"],
                m["lo"],
                m["hi"],
                0.0,
                ">",
                n,
                what="AIE margin over other roles",
            ),
        )
    whole = verdicts.combine(claim, parts, seed=seed_words)
    criterion = (
        (
            "the 95% bootstrap interval (over facts) of the margin by which its peak exceeds other roles' > 0, and "
            if compete
            else ""
        )
        + f"that of the peak depth {BANDS[band]} {BAND_EDGE} ({band}); reproduced if every part is, "
        "not reproduced if none is, else partly / inconclusive"
    )
    evidence = "; ".join(f"{p.claim}: {p.verdict} ({p.evidence})" for p in parts)
    return dataclasses.replace(
        whole, criterion=criterion, evidence=evidence, ours=where["depth"], ci_low=where["lo"], ci_high=where["hi"]
    )


def mlp_over_attention(
    aie: tracing.AIEResult, role: str = "last subject", n_boot: int = 1000, seed: int = 0
) -> Verdict:
    """ROME's early site is the MLPs': at ``role``, the MLP curve's peak AIE exceeds attention's
    (paired bootstrap over facts; 95% interval of the difference > 0)."""
    r = tracing.ROLES.index(role)
    diff = lambda a, b: (
        a[..., r, :].nan_to_num(float("-inf")).amax(-1) - b[..., r, :].nan_to_num(float("-inf")).amax(-1)
    )  # noqa: E731
    boot = diff(aie.bootstrap_means("mlp", n_boot, seed), aie.bootstrap_means("attn", n_boot, seed))
    lo, hi = percentile_interval(boot)
    est = float(diff(aie.mean("mlp"), aie.mean("attn")))
    return verdicts.interval_verdict(
        f"At the {role} token the MLP effect exceeds attention's",
        est,
        lo,
        hi,
        0.0,
        ">",
        aie.n_facts,
        seed=SEED_RESULTS["rome_mlp_vs_attn"],
        what="peak MLP AIE - peak attention AIE",
    )


def rome_verdicts(aie: tracing.AIEResult, n_boot: int = 1000, seed: int = 0) -> list[Verdict]:
    """ROME's findings judged on an exact AIE (residual, MLP and attention traced), one
    :class:`~analysis.studies.verdicts.Verdict` per finding, intervals by bootstrap over facts."""
    missing = [k for k in ("hook_mlp_out", "hook_attn_out") if k not in aie.kinds]
    resid = resid_hook(aie)
    if missing or resid is None:
        raise ValueError(
            "ROME's findings need exact traces of the residual stream, MLP and attention "
            f"(traced: {list(aie.kinds)}); trace kinds ('resid_post', 'mlp', 'attn')."
        )
    kw = dict(n_boot=n_boot, seed=seed)
    resid_parts = [
        location_verdict(
            "last subject token peak", aie, resid, "last subject", "early-to-middle", "", compete=False, **kw
        ),
        location_verdict("last token peak", aie, resid, "last", "late", "", compete=False, **kw),
    ]
    resid_whole = verdicts.combine(
        f"Two residual peaks ({resid}): early-to-middle at the last subject token, late at the last token",
        resid_parts,
        seed=SEED_RESULTS["rome_resid"],
    )
    early = resid_parts[0]
    resid_whole = dataclasses.replace(
        resid_whole,
        criterion="both peaks' 95% bootstrap depth intervals on their band's side of "
        f"{BAND_EDGE}; ours = the last subject token's peak depth",
        evidence="; ".join(f"{p.claim}: {p.verdict} ({p.evidence})" for p in resid_parts),
        ours=early.ours,
        ci_low=early.ci_low,
        ci_high=early.ci_high,
    )
    return [
        location_verdict(
            "MLP effect peaks at the last subject token in early-to-middle layers",
            aie,
            "mlp",
            "last subject",
            "early-to-middle",
            SEED_RESULTS["rome_mlp"],
            **kw,
        ),
        mlp_over_attention(aie, **kw),
        location_verdict(
            "Attention effect peaks at the last token in late layers",
            aie,
            "attn",
            "last",
            "late",
            SEED_RESULTS["rome_attn"],
            **kw,
        ),
        resid_whole,
    ]


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
        (resid_hook(exact) or "resid", exact, attr, 1),
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
