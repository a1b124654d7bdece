"""ROME's finding beside ours, and the verdicts with bootstrap intervals over facts.

ROME (Meng et al. 2022, Fig. 2) finds, on GPT-2 XL, the MLP effect at the last subject token in
early-to-middle layers, the attention effect at the last token in late layers, and two residual
peaks (early at the last subject token, late at the last token). :func:`rome_comparison` sets each
finding beside ours by point estimate; :func:`verdicts` judges them with 95% intervals from a
bootstrap over facts (:func:`location_verdict`, :func:`mlp_over_attention`).

Layers are numbered as ROME numbers them: the residual stream is restored at block outputs
(``hook_resid_post``), so layer l here is ROME's layer l.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from analysis import tracing
from analysis.studies import verdicts as shared
from analysis.studies.tracing.seed import SEED_RESULTS
from analysis.studies.verdicts import Verdict
from analysis.tracing.peaks import peak_depths, percentile_interval, role_margin

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
    ``band`` side of :data:`BAND_EDGE`), each by :func:`analysis.studies.verdicts.interval_verdict`, joined by
    :func:`analysis.studies.verdicts.combine`. The row carries the peak depth and its interval.
    """
    if band not in BANDS:
        raise ValueError(f"Unknown band {band!r}; use one of {list(BANDS)}.")
    n = aie.n_facts
    where = peak_depths(aie, kind, role, n_boot, seed)
    parts = [
        shared.interval_verdict(
            f"peak depth {band}", where.depth, where.lo, where.hi, BAND_EDGE, BANDS[band], n, what="depth"
        )
    ]
    if compete:
        m = role_margin(aie, kind, role, n_boot, seed)
        parts.insert(
            0,
            shared.interval_verdict(
                f"peak at the {role} token",
                m.margin,
                m.lo,
                m.hi,
                0.0,
                ">",
                n,
                what="AIE margin over other roles",
            ),
        )
    whole = shared.combine(claim, parts, seed=seed_words)
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
        whole, criterion=criterion, evidence=evidence, ours=where.depth, ci_low=where.lo, ci_high=where.hi
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
    return shared.interval_verdict(
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


def verdicts(aie: tracing.AIEResult, n_boot: int = 1000, seed: int = 0) -> list[Verdict]:
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
