"""Each sweep verdict rule, simulated under its null at the ``cpu`` profile's 12 evaluation windows:
the share of simulated studies called "reproduced" stays at or below 5%.

A cell's per-token NLL in window ``w`` is a shared difficulty plus the cell's shift plus its own
noise (sd 0.05 per window), so two cells with equal shifts differ by noise alone; each null puts
the claim exactly at its boundary, and every other part of the claim plainly true.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.config import get_profile
from analysis.studies import sweep
from analysis.studies.verdicts import false_reproduced_rate

MILD, MODERATE, AGG, LOOSE = (0.3, 0.2, 0.1), (0.5, 0.3, 0.1), (2, 3, 4), (3, 4, 5)
N_SIMS, N_BOOT, SD = 200, 200, 0.05


def windows() -> int:
    """The evaluation windows of the ``cpu`` profile: its eval tokens in disjoint context windows."""
    return sweep.config_for("cpu").eval_tokens // get_profile("cpu").context


W = windows()
DIFFICULTY = np.linspace(3.0, 4.0, W)


def _cell(rng, alloc, prune, bits, mb, shift):
    per_token = DIFFICULTY + shift + SD * rng.standard_normal(W)
    nll = tuple(float(x) * 100 for x in per_token)
    ppl = math.exp(sum(nll) / (100 * W))
    return sweep.CellResult(
        sweep.Cell(alloc, tuple(prune), tuple(bits)), ppl, 0.0, 1.0, 0.5, 4.0, mb, 0.0, 0.0, {}, nll, (100,) * W
    )


def _uniform(rng):
    pts = [((0.0, 2), 4.0, 1.0), ((0.0, 3), 6.0, 0.6), ((0.0, 4), 8.0, 0.3), ((0.0, 5), 10.0, 0.1)]
    return [_cell(rng, sweep.UNIFORM, (p,) * 3, (b,) * 3, mb, s) for (p, b), mb, s in pts]


def _scores(rng, shifts, random_shifts, settings=((MILD, AGG),)):
    """Each score at 5 MB (uniform frontier 0.8) at each setting, with five random controls."""
    out = _uniform(rng)
    for prune, bits in settings:
        for name, shift in shifts.items():
            out.append(_cell(rng, name, prune, bits, 5.0, shift))
            out += [_cell(rng, f"random:{name}:{s}", prune, bits, 5.0, random_shifts[name]) for s in range(5)]
    return out


def _judge(make, rule):
    def judge(rng):
        results = make(rng)
        boot = sweep.Bootstrap.of(results, N_BOOT, seed=int(rng.integers(1 << 30)))
        return rule(results, [r for r in results if r.cell.is_uniform], boot)

    return judge


def test_the_cpu_profile_scores_twelve_windows():
    assert W == 12


def test_claim_pruning_null():
    def make(rng):  # more pruning changes nothing
        return [_cell(rng, a, p, AGG, 7.0, 0.3) for a in ("m", "constant low") for p in (MILD, MODERATE)]

    rule = lambda results, uniform, boot: sweep.claim_pruning(results, boot)  # noqa: E731
    assert false_reproduced_rate(_judge(make, rule), N_SIMS) <= 0.05


def test_claim_comparable_null():
    margin = 0.02  # weight magnitude sits exactly at the margin above the frontier (0.8 at 5 MB, 0.2 at 9 MB)

    def make(rng):
        out = _uniform(rng)
        out.append(_cell(rng, "weight magnitude", MILD, AGG, 5.0, 0.8 + margin))
        out.append(_cell(rng, "weight magnitude", MILD, LOOSE, 9.0, 0.2 + margin))
        return out

    rule = lambda results, uniform, boot: sweep.claim_comparable(results, uniform, boot, margin)  # noqa: E731
    assert false_reproduced_rate(_judge(make, rule), N_SIMS) <= 0.05


def test_claim_perform_well_null():
    # every part plainly true except causal tracing against its random controls, which it ties
    shifts = {"causal tracing": 0.6, "gradient magnitude": 0.6}
    randoms = {"causal tracing": 0.6, "gradient magnitude": 1.0}
    rule = sweep.claim_perform_well
    assert false_reproduced_rate(_judge(lambda rng: _scores(rng, shifts, randoms), rule), N_SIMS) <= 0.05


def test_claim_aggressive_null():
    # causal tracing beats gradient magnitude at both settings, ties weight magnitude at the moderate one
    settings = ((MILD, AGG), (MODERATE, AGG))

    def make(rng):
        out = _uniform(rng)
        for prune, wm in ((MILD, 0.9), (MODERATE, 0.6)):
            for name, shift in (("causal tracing", 0.6), ("gradient magnitude", 0.9), ("weight magnitude", wm)):
                out.append(_cell(rng, name, prune, AGG, 5.0, shift))
        return out

    rule = lambda results, uniform, boot: sweep.claim_aggressive(results, uniform, boot, settings)  # noqa: E731
    assert false_reproduced_rate(_judge(make, rule), N_SIMS) <= 0.05


def test_open_question_null():
    shifts = {name: 0.8 for name in sweep.SCORES}  # every score on the uniform frontier
    randoms = dict(shifts)
    rule = lambda results, uniform, boot: sweep.open_question(results, uniform, boot, 0.02)  # noqa: E731
    assert false_reproduced_rate(_judge(lambda rng: _scores(rng, shifts, randoms), rule), N_SIMS) <= 0.05


@pytest.mark.parametrize("n_windows", [W])
def test_a_delta_interval_is_a_t_interval_over_windows(n_windows):
    """On a plain difference of two cells the interval is the paired t interval over the windows."""
    rng = np.random.default_rng(3)
    a, b = _cell(rng, "a", MILD, AGG, 5.0, 0.1), _cell(rng, "b", MILD, AGG, 5.0, 0.0)
    boot = sweep.Bootstrap.of([a, b], 4000)
    d = boot.between(a, b)
    per = (np.asarray(a.window_nll) - np.asarray(b.window_nll)) / 100
    half = d.ci()[1] - d.estimate
    t_half = 2.200985 * per.std(ddof=1) / math.sqrt(n_windows)  # t_{0.975, 11}
    assert half == pytest.approx(t_half, rel=0.1)
