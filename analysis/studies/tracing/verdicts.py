"""ROME's finding beside ours, and the verdicts with bootstrap intervals over relations.

ROME (Meng et al. 2022, Fig. 2) finds, on GPT-2 XL, the MLP effect at the last subject token in
early-to-middle layers, the attention effect at the last token in late layers, and two residual
peaks (early at the last subject token, late at the last token). :func:`rome_comparison` sets each
finding beside ours by point estimate; :func:`verdicts` judges them with 95% intervals from a
bootstrap (:func:`location_verdict`, :func:`mlp_over_attention`). Facts of one relation share a
template and often an answer, so given each fact's relation the bootstrap resamples relations,
and fewer than :data:`~analysis.studies.verdicts.MIN_UNITS` relations make a verdict inconclusive.
The MLP claims are judged on the windows that leave out layer 0's MLP (:func:`beyond_layer0`), as
the comparison table's second MLP row is: restored alone, that one layer re-supplies much of a
token's identity, and ROME's middle-layer claim is about windows that do not reach it.

Layers are numbered as ROME numbers them: the residual stream is restored at block outputs
(``hook_resid_post``), so layer l here is ROME's layer l.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import pandas as pd

from analysis import tracing
from analysis.studies import verdicts as shared
from analysis.studies.tracing.seed import SEED_RESULTS
from analysis.studies.verdicts import Verdict
from analysis.tracing.peaks import peak_depths, peak_difference, role_margin

BAND_EDGE = 0.5
"""Relative depth (layer / (n_layers - 1)) splitting the two bands, which do not overlap: a peak
below it is "early-to-middle", a peak at or above it "late"."""
BANDS: dict[str, str] = {"early-to-middle": "<", "late": ">"}
"""Each depth band as the side of :data:`BAND_EDGE` its peak must lie on."""


def band_of(depth: float) -> str:
    """The depth band (:data:`BAND_EDGE`) a relative depth falls in."""
    return "early-to-middle" if depth < BAND_EDGE else "late"


def resid_hook(aie: tracing.AIEResult) -> str | None:
    """The residual hook an AIE traced (``hook_resid_post`` preferred), or None."""
    return next((h for h in ("hook_resid_post", "hook_resid_pre") if h in aie.kinds), None)


def beyond_layer0(aie: tracing.AIEResult) -> list[int]:
    """The layers whose restoration window (``aie.config["window"]``) leaves out layer 0; empty when
    every window reaches it (a window as deep as the model)."""
    L, window = aie.traces[0].n_layers, aie.config.get("window", 1)
    return [l for l in range(L) if 0 not in tracing.window_layers(l, window, L)]


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
    overlap. :func:`verdicts` judges the same findings with intervals.
    """
    L = aie.traces[0].n_layers
    rows = []
    if "hook_mlp_out" in aie.kinds:
        p = aie.peak("mlp")
        ok = "last subject" in p["role"].split(" = ") and band_of(p["depth"]) == "early-to-middle"
        rows.append(("MLP peak (hook_mlp_out)", SEED_RESULTS["rome_mlp"], _where(p, L), ok))
        window = aie.config.get("window", 1)
        beyond = beyond_layer0(aie)
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


UNIT = "relations"


def _clusters(aie: tracing.AIEResult, relations: Mapping[str, str] | None) -> list[str] | None:
    """Each traced fact's relation (by prompt), or None to count facts as the units."""
    if relations is None:
        return None
    missing = [t.prompt for t in aie.traces if t.prompt not in relations]
    if missing:
        raise ValueError(f"{len(missing)} traced facts have no relation, e.g. {missing[0]!r}.")
    return [relations[t.prompt] for t in aie.traces]


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
    relations: Mapping[str, str] | None = None,
    layers: Sequence[int] | None = None,
) -> Verdict:
    """ "The ``kind`` effect peaks at ``role`` in ``band``", judged with a bootstrap over relations
    (``relations``: each traced prompt's relation; None resamples facts).

    Two parts: the peak's role (``compete``: the ``role`` curve's peak above every other role's,
    its 95% interval of the margin > 0) and its depth (95% interval of the peak depth on the
    ``band`` side of :data:`BAND_EDGE`), each by :func:`analysis.studies.verdicts.interval_verdict`
    over the resampled units, joined by :func:`analysis.studies.verdicts.combine`. ``layers``
    restricts every peak to those layers (None: all; empty: inconclusive, nothing to judge). The row
    carries the peak depth and its interval.
    """
    if band not in BANDS:
        raise ValueError(f"Unknown band {band!r}; use one of {list(BANDS)}.")
    scope = "" if layers is None else f" among layers {_span(layers)}"
    criterion = (
        ("the 95% bootstrap interval of the margin by which its peak exceeds other roles' > 0, and " if compete else "")
        + f"that of the peak depth {BANDS[band]} {BAND_EDGE} ({band}){scope}, resampling "
        + (f"{UNIT} (at least {shared.MIN_UNITS})" if relations is not None else "facts")
        + f"; {shared.COMBINE_RULE}"
    )
    if layers is not None and not list(layers):
        why = "no restoration window leaves out layer 0's MLP at this window and depth; nothing to judge"
        return Verdict(claim, "inconclusive", criterion, why, seed_words)
    clusters = _clusters(aie, relations)
    unit = UNIT if clusters is not None else "facts"
    kw = dict(n_boot=n_boot, seed=seed, clusters=clusters, layers=layers)
    where = peak_depths(aie, kind, role, **kw)
    parts = [
        shared.interval_verdict(
            f"peak depth {band}",
            where.depth,
            where.lo,
            where.hi,
            BAND_EDGE,
            BANDS[band],
            where.n,
            what="depth",
            unit=unit,
        )
    ]
    if compete:
        m = role_margin(aie, kind, role, **kw)
        parts.insert(
            0,
            shared.interval_verdict(
                f"peak at the {role} token",
                m.margin,
                m.lo,
                m.hi,
                0.0,
                ">",
                m.n,
                what="AIE margin over other roles",
                unit=unit,
            ),
        )
    whole = shared.combine(claim, parts, seed=seed_words)
    evidence = "; ".join(f"{p.claim}: {p.verdict} ({p.evidence})" for p in parts)
    evidence += f"; {aie.n_facts} facts in {where.n} {unit}" if clusters is not None else ""
    return dataclasses.replace(
        whole, criterion=criterion, evidence=evidence, ours=where.depth, ci_low=where.lo, ci_high=where.hi
    )


def _span(layers: Sequence[int]) -> str:
    layers = list(layers)
    if not layers:
        return "none"
    return f"{layers[0]}-{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) else str(layers)


def mlp_over_attention(
    aie: tracing.AIEResult,
    role: str = "last subject",
    n_boot: int = 1000,
    seed: int = 0,
    relations: Mapping[str, str] | None = None,
    layers: Sequence[int] | None = None,
) -> Verdict:
    """ROME's early site is the MLPs': at ``role``, the MLP curve's peak AIE (among ``layers``)
    exceeds attention's (paired bootstrap over relations, or facts without ``relations``; 95%
    interval of the difference > 0)."""
    claim = f"At the {role} token the MLP effect exceeds attention's"
    if layers is not None and not list(layers):
        return Verdict(
            claim,
            "inconclusive",
            "the MLP's peak beyond layer 0's windows against attention's",
            "no restoration window leaves out layer 0's MLP at this window and depth; nothing to judge",
            SEED_RESULTS["rome_mlp_vs_attn"],
        )
    clusters = _clusters(aie, relations)
    est, lo, hi, n = peak_difference(aie, "mlp", "attn", role, n_boot, seed, clusters, layers)
    scope = "" if layers is None else f" (layers {_span(layers)})"
    return shared.interval_verdict(
        claim,
        est,
        lo,
        hi,
        0.0,
        ">",
        n,
        seed=SEED_RESULTS["rome_mlp_vs_attn"],
        what=f"peak MLP AIE - peak attention AIE{scope}",
        unit=UNIT if clusters is not None else "facts",
    )


def verdicts(
    aie: tracing.AIEResult, n_boot: int = 1000, seed: int = 0, relations: Mapping[str, str] | None = None
) -> list[Verdict]:
    """ROME's findings judged on an exact AIE (residual, MLP and attention traced), one
    :class:`~analysis.studies.verdicts.Verdict` per finding, intervals by a bootstrap over
    ``relations`` (each traced prompt's relation; None resamples facts). The two MLP claims are
    judged on the layers whose windows leave out layer 0's MLP (:func:`beyond_layer0`)."""
    missing = [k for k in ("hook_mlp_out", "hook_attn_out") if k not in aie.kinds]
    resid = resid_hook(aie)
    if missing or resid is None:
        raise ValueError(
            "ROME's findings need exact traces of the residual stream, MLP and attention "
            f"(traced: {list(aie.kinds)}); trace kinds ('resid_post', 'mlp', 'attn')."
        )
    kw = dict(n_boot=n_boot, seed=seed, relations=relations)
    beyond = beyond_layer0(aie)
    resid_parts = [
        location_verdict(
            "last subject token peak", aie, resid, "last subject", "early-to-middle", "", compete=False, **kw
        ),
        location_verdict("last token peak", aie, resid, "last", "late", "", compete=False, **kw),
    ]
    resid_whole = shared.combine(
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
            "MLP effect peaks at the last subject token in early-to-middle layers (windows without layer 0's MLP)",
            aie,
            "mlp",
            "last subject",
            "early-to-middle",
            SEED_RESULTS["rome_mlp"],
            layers=beyond,
            **kw,
        ),
        mlp_over_attention(aie, layers=beyond, **kw),
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
