"""Seed 003's verdict functions on constructed inputs whose answer is known, the typed results, and
the study's configs."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from analysis import stats
from analysis.studies import variance
from analysis.studies.variance import plots as figures
from analysis.studies.variance.blocks import (
    R2_LEVEL,
    SEED_DPPL,
    SEED_RISE,
    delta_ppl,
    last_block,
    multi_block,
    p_above,
    r2_conditional,
    r2_depth,
    r2_level,
)
from analysis.studies.variance.results import Directions, Exits, LensExit, Linearity, Quantization
from analysis.studies.variance.verdicts import paired_gap
from analysis.studies.verdicts import false_reproduced_rate


def noisy(center, n=40, spread=0.01, seed=0):
    return center + spread * np.random.default_rng(seed).standard_normal(n)


def windows_at(r2, n=16, seed=0, spread=0.3, rng=None):
    """Per-window ``(sse, sst)`` whose pooled R² is ``r2`` in expectation, windows varying in size and error."""
    rng = rng or np.random.default_rng(seed)
    sst = rng.uniform(50, 150, n)
    sse = (1 - r2) * sst * np.exp(spread * rng.standard_normal(n) - spread**2 / 2)
    return sse, sst


def linearity_windows(cfg):
    """Held-out windows per block the linearity verdicts stand on under ``cfg``."""
    return cfg.linearity_tokens // cfg.context


def test_r2_level():
    assert r2_level(*windows_at(0.97), 29).verdict == "reproduced"
    assert r2_level(*windows_at(0.6), 29).verdict == "not reproduced"
    assert r2_level(*windows_at(0.93, spread=1.0), 29).verdict == "inconclusive"
    assert r2_level(*windows_at(0.99, n=4), 29).verdict == "inconclusive"  # too few windows


def test_r2_level_null_at_the_studys_windows():
    n = linearity_windows(variance.config_for("cpu"))
    assert n >= 8

    def judge(rng):
        return r2_level(*windows_at(R2_LEVEL, n=n, spread=0.5, rng=rng), 29)

    assert false_reproduced_rate(judge, 400) <= 0.05


def test_r2_conditional():
    assert r2_conditional(noisy(0.5, 16, 0.05), noisy(0.2, 16, 0.05, seed=1), 29).verdict == "reproduced"
    assert r2_conditional(noisy(0.2, 16, 0.05), noisy(0.5, 16, 0.05, seed=1), 29).verdict == "not reproduced"
    assert r2_conditional(noisy(0.3, 16, 0.3), noisy(0.3, 16, 0.3, seed=1), 29).verdict == "inconclusive"
    n = linearity_windows(variance.config_for("cpu"))

    def judge(rng):
        same = rng.uniform(0.2, 0.6, n)  # windows differ; the replaced upstream changes nothing on average
        return r2_conditional(same + 0.05 * rng.standard_normal(n), same + 0.05 * rng.standard_normal(n), 29)

    assert false_reproduced_rate(judge, 400) <= 0.05


def test_r2_depth():
    first = noisy(0.1, 16, 0.05)
    assert r2_depth(first, noisy(0.95, 16, 0.05, seed=1)).verdict == "reproduced"
    assert r2_depth(first, noisy(0.4, 16, 0.05, seed=1)).verdict == "partly"  # rises, by less than the seed's
    assert r2_depth(first, noisy(0.0, 16, 0.05, seed=1)).verdict == "not reproduced"
    assert r2_depth(first, noisy(0.85, 16, 0.3, seed=1)).verdict == "inconclusive"
    n = linearity_windows(variance.config_for("cpu"))
    for rise in (SEED_RISE, 0.0):  # the boundary of each part

        def judge(rng, rise=rise):
            a = rng.uniform(0.0, 0.2, n)
            return r2_depth(a, a + rise + 0.1 * rng.standard_normal(n))

        assert false_reproduced_rate(judge, 400) <= 0.05


def rel(est, lo, hi, n=16):
    return stats.Difference(est, lo, hi, float("nan"), n, "windows")


def replaced_windows(dppl, n=16, noise=0.02, rng=None, tokens=255.0):
    """Per-window base and replaced NLL sums whose perplexity differs by ``dppl`` in expectation."""
    rng = rng or np.random.default_rng(0)
    base = tokens * (3.0 + 0.2 * rng.standard_normal(n))
    r0 = np.log1p(dppl / np.exp(base.sum() / (tokens * n)))
    return base, base + tokens * (r0 + noise * rng.standard_normal(n)), np.full(n, tokens)


def test_last_block():
    assert last_block(rel(0.5, 0.2, 0.8), 34).verdict == "reproduced"
    assert last_block(rel(5.0, 4.0, 6.0), 34).verdict == "not reproduced"
    assert last_block(rel(1.7, 1.0, 2.4), 34).verdict == "inconclusive"
    assert last_block(rel(0.5, 0.2, 0.8, n=4), 34).verdict == "inconclusive"
    n = variance.config_for("cpu").replace_tokens // variance.config_for("cpu").context

    def judge(rng):
        return last_block(delta_ppl(*replaced_windows(SEED_DPPL, n, rng=rng)), 34)

    assert false_reproduced_rate(judge, 400) <= 0.05


def test_multi_block():
    def judge(dppls, n=16, rng=None):
        rng = rng or np.random.default_rng(1)
        deltas, p = {}, {}
        for k, d in dppls.items():
            base, new, tok = replaced_windows(d, n, rng=rng)
            deltas[k], p[k] = delta_ppl(base, new, tok), p_above(base, new, tok, SEED_DPPL)
        return multi_block(deltas, p)

    assert judge({2: 20.0, 4: 50.0, 8: 200.0}).verdict == "reproduced"
    assert judge({2: 0.2, 4: 50.0, 8: 200.0}).verdict == "not reproduced"  # two blocks replaced cheaply
    assert judge({2: SEED_DPPL, 4: 50.0, 8: 200.0}).verdict == "inconclusive"
    assert judge({2: 20.0, 4: 50.0}, n=4).verdict == "inconclusive"
    cpu = variance.config_for("cpu")
    n, ks = cpu.replace_tokens // cpu.context, [k for k in cpu.multi_blocks if k >= 2]
    # the least favourable null: one k exactly at the line, the others far above it
    null = {k: (SEED_DPPL if k == ks[0] else 100.0) for k in ks}
    assert false_reproduced_rate(lambda rng: judge(null, n, rng), 400) <= 0.05


def test_delta_ppl_and_p_above():
    base, new, tok = replaced_windows(2.0, 40, noise=0.0)
    d = delta_ppl(base, new, tok)
    assert d.estimate == pytest.approx(2.0, rel=1e-9) and d.low == pytest.approx(2.0, rel=1e-9)
    base, new, tok = replaced_windows(2.0, 40)
    d = delta_ppl(base, new, tok)
    assert p_above(base, new, tok, 1.0) < 0.01 and p_above(base, new, tok, 3.0) > 0.99


def test_configs():
    for name in ("smoke", "cpu", "gpu"):
        cfg = variance.config_for(name)
        assert all(0 <= f <= 1 for f in cfg.ablation_layers)
    assert variance.config_for("cpu").fit_tokens >= 35 * 577  # 35 tokens per unknown of SmolLM2's map
    with pytest.raises(ValueError, match="No variance sizes"):
        variance.config_for("nope")


def test_sizes_grow_with_the_profile():
    """Every field marked a size is no larger under ``smoke`` than ``cpu``, nor under ``cpu`` than ``gpu``
    (a tuple of sizes by its length and its largest entry); the layer choices are not sizes."""
    sizes = [f.name for f in dataclasses.fields(variance.VarianceConfig) if f.metadata.get("size")]
    assert {"fit_tokens", "context", "ks", "multi_blocks"} <= set(sizes)
    assert not {"ablation_layers", "quant_layers", "amp_layers", "models", "seed"} & set(sizes)

    def measure(value):
        return (len(value), max(value)) if isinstance(value, tuple) else (value, value)

    smoke, cpu, gpu = (variance.CONFIGS[p] for p in ("smoke", "cpu", "gpu"))
    for name in sizes:
        small, mid, large = (measure(getattr(c, name)) for c in (smoke, cpu, gpu))
        assert all(a <= b <= c for a, b, c in zip(small, mid, large)), name


def test_paired_gap():
    a = pd.Series({"window nll": (30.0, 12.0), "window tokens": (10, 4)})
    b = pd.Series({"window nll": (20.0, 16.0), "window tokens": (10, 4)})
    assert paired_gap(a, b) == pytest.approx([1.0, -1.0])


def lens(share, lo, hi, n=1000, windows=16):
    return {
        "kl": np.ones(3),
        "exit layers": np.zeros(n, int),
        "easy layers": np.ones(n, int),
        "easy": (share, lo, hi),
        "n": n,
        "windows": windows,
    }


def test_exits_from_the_cached_dict():
    ex = Exits.from_dict({"logit lens": lens(0.3, 0.2, 0.4), "tuned lens": lens(0.5, 0.45, 0.55), "curve": None})
    assert (ex.logit.easy_share, ex.logit.easy_low, ex.logit.easy_high, ex.logit.n) == (0.3, 0.2, 0.4, 1000)
    assert ex.tuned.easy_share == 0.5 and (ex.tuned.easy_layers == 1).all()
    assert list(ex.lenses) == ["logit lens", "tuned lens"] and ex.lenses["tuned lens"] is ex.tuned


def linearity_result(clean, replaced, seed=0, n_windows=16, blocks=30):
    """A :class:`Linearity` whose held-out R² of the update is ``clean(block)`` under the clean upstream
    and ``replaced`` under the replaced one, in both position conventions."""
    rng = np.random.default_rng(seed)
    rows, frames = [], {}
    for conv in ("all positions", "position 0 left out"):
        for upstream in ("clean", "replaced"):
            for b in range(blocks):
                sse, sst = windows_at(clean(b) if upstream == "clean" else replaced, n_windows, spread=0.05, rng=rng)
                row = {"convention": conv, "upstream": upstream, "block": b}
                rows.append({**row, "window sse": tuple(sse), "window sst output": tuple(10 * sst)})
                rows[-1]["window sst update"] = tuple(sst)
        frames[conv] = pd.DataFrame({"R² update, clean": [clean(b) for b in range(blocks)]})
    return Linearity(frames, pd.DataFrame(rows))


def study_results(seed: int = 0):
    """Runner results built so that every one of the seven claims is reproduced, with decoys (other
    k, other bits, full maps) that would flip a verdict if :func:`verdicts` read the wrong rows."""
    rng = np.random.default_rng(seed)
    n, t = 40, 100.0
    base = 300 + rng.standard_normal(n)
    tokens = np.full(n, t)

    def nll(per_token):  # window NLLs ``per_token`` nats per token above the base
        return tuple(base + t * per_token + 0.01 * rng.standard_normal(n))

    def row(nlls, **cols):
        return {**cols, "window nll": nlls, "window tokens": tuple(tokens)}

    abl = pd.DataFrame(  # the chapter's grid: not what the verdict reads (a decoy that says the opposite)
        [row(tuple(base), layer=-1, kind="none", k=0)]
        + [row(nll(-0.5), layer=5, kind="gradient", k=8), row(nll(0.0), layer=5, kind="variance", k=8)]
    )
    removal = pd.DataFrame(
        [row(tuple(base), layer=-1, kind="none", k=0)]
        + [row(nll(0.5), layer=l, kind="gradient", k=8) for l in (3, 14, 26)]
        + [row(nll(0.0), layer=l, kind="variance", k=8) for l in (3, 14, 26)]
    )
    units = pd.DataFrame(
        [
            {"layer": l, "window": w, "CCA gradient": 0.3 + 0.01 * rng.standard_normal(), "CCA random": 0.5}
            for l in range(30)
            for w in range(16)
        ]
    )
    lin = linearity_result(lambda b: 0.1 + 0.88 * b / 29, replaced=0.5, seed=seed)
    dirs = Directions(
        pd.DataFrame({"CCA uncorrelated share": noisy(0.1, 30, seed=seed)}), {}, torch.zeros(4, 2), units, removal
    )
    ppl = pd.DataFrame(
        [row(tuple(base), scheme="none", bits=32)]
        + [row(nll(0.0), scheme="direct", bits=b) for b in (4, 8)]
        + [row(nll(0.2 if b == 4 else 0.3), scheme="factor", bits=b) for b in (4, 8)]
        + [row(nll(-0.5), scheme="rotated", bits=b) for b in (4, 8)]  # a decoy: not the factored scheme
    )
    amp = pd.DataFrame(
        [
            {
                "weight": f"blocks.{l}.mlp.{w}",
                "bits": b,
                "direct": 0.1 + 0.01 * rng.random(),
                "product": 0.2 + 0.01 * rng.random(),
                "product vs W": 0.3 + 0.01 * rng.random(),
                "amplification": 0.5,  # a decoy: the ratio is never judged
            }
            for l in range(30)
            for w in ("W_in", "W_out")
            for b in (4, 8)
        ]
    )
    ex = Exits(LensExit.from_dict(lens(0.3, 0.27, 0.33)), LensExit.from_dict(lens(0.9, 0.88, 0.92)), pd.DataFrame())
    rep = pd.DataFrame(
        [row(tuple(base), blocks=0, map="none", compression=1.0)]
        + [row(nll(np.log(1.01)), blocks=1, map="rank 12", compression=34.0)]
        + [row(nll(np.log(2.0)), blocks=k, map="rank 12", compression=34.0) for k in (2, 4)]
        + [row(nll(np.log(2.0)), blocks=1, map="full d×d", compression=0.9)]
        + [row(nll(0.0), blocks=k, map="full d×d", compression=0.9) for k in (2, 4)]
    )
    cfg = variance.VarianceConfig(k_overlap=8, multi_blocks=(1, 2, 4), exit_threshold=0.9)
    return cfg, lin, dirs, abl, rep, Quantization(ppl, amp), ex


def by_key(found):
    """Verdicts by their :data:`SEED_RESULTS` key."""
    keys = {c["claim"]: k for k, c in variance.SEED_RESULTS.items()}
    return {keys[v.claim]: v for v in found}


def test_verdicts_are_the_seed_claims_in_the_seeds_order():
    found = variance.verdicts(*study_results())
    assert [v.claim for v in found] == [c["claim"] for c in variance.SEED_RESULTS.values()]
    assert [v.verdict for v in found] == ["reproduced"] * len(variance.SEED_RESULTS)
    v = by_key(found)
    assert v["uncorrelated"].ours == pytest.approx(0.2, abs=0.01)  # random minus gradient mean canonical correlation
    assert v["direct_beats_factor"].ours == pytest.approx(0.2, abs=1e-3)  # factor minus direct NLL, least favourable
    assert v["easy_tokens"].ours == 0.3  # the logit lens's easy share
    assert v["last_block"].ours == pytest.approx(0.2, rel=0.05)  # the rank map's ΔPPL, one block (PPL 20 x 1%)
    assert v["r2_gpt2"].ours == pytest.approx(0.98, abs=0.01)  # the last block's R² of the update
    assert v["r2_conditional"].ours == pytest.approx(0.48, abs=0.02)  # clean minus replaced upstream
    assert "With position 0 left out: reproduced" in v["r2_gpt2"].evidence


def test_verdicts_follow_the_measurements():
    cfg, lin, dirs, abl, rep, quant, ex = study_results()
    worse = Exits(LensExit.from_dict(lens(0.05, 0.03, 0.07)), ex.tuned, ex.curve)
    found = by_key(variance.verdicts(cfg, lin, dirs, abl, rep, quant, worse))
    assert found["easy_tokens"].verdict == "not reproduced"
    assert {v.verdict for k, v in found.items() if k != "easy_tokens"} == {"reproduced"}
    flat = linearity_result(lambda b: 0.5, replaced=0.7)  # no rise; better under the replaced upstream
    found = by_key(variance.verdicts(cfg, flat, dirs, abl, rep, quant, ex))
    assert [found[k].verdict for k in ("r2_gpt2", "r2_conditional", "r2_depth")] == ["not reproduced"] * 3
    cheap = rep.copy()
    one = cheap.index[(cheap["blocks"] == 1) & cheap["map"].str.startswith("rank")][0]
    two = cheap.index[(cheap["blocks"] == 2) & cheap["map"].str.startswith("rank")][0]
    cheap.at[two, "window nll"] = cheap.at[one, "window nll"]  # two blocks replaced as cheaply as one
    found = by_key(variance.verdicts(cfg, lin, dirs, abl, cheap, quant, ex))
    assert found["multi_block"].verdict == "not reproduced"

    few = Exits(LensExit.from_dict(lens(0.3, 0.27, 0.33, windows=4)), ex.tuned, ex.curve)
    assert by_key(variance.verdicts(cfg, lin, dirs, abl, rep, quant, few))["easy_tokens"].verdict == "inconclusive"
    chance = dirs.windows.assign(**{"CCA gradient": dirs.windows["CCA gradient"] + 0.4})  # above the baseline
    found = by_key(variance.verdicts(cfg, lin, dataclasses.replace(dirs, windows=chance), abl, rep, quant, ex))
    assert found["uncorrelated"].verdict == "partly"  # (a) not reproduced, (b) reproduced
    amp = quant.amplification.assign(direct=1.5 * quant.amplification["product vs W"] + 0.1)
    found = by_key(variance.verdicts(cfg, lin, dirs, abl, rep, Quantization(quant.ppl, amp), ex))
    assert found["direct_beats_factor"].verdict == "partly"  # direct's error above the product's: (b), (c) fail


def test_verdicts_before_the_new_measurements_are_inconclusive():
    """Results cached before the per-window units existed judge nothing."""
    cfg, lin, dirs, abl, rep, quant, ex = study_results()
    old = Directions(dirs.frame, dirs.gradient, dirs.readout)
    assert by_key(variance.verdicts(cfg, lin, old, abl, rep, quant, ex))["uncorrelated"].verdict == "inconclusive"


def test_choosing_and_judging_data_are_disjoint(monkeypatch):
    """Under ``cpu`` and ``smoke``, the block maps are fitted on training-split text, and the text that
    scores them (held-out R², replacement perplexity) comes from the evaluation split: no token that
    fitted a map judges it."""
    from analysis.studies.variance import run

    drawn = []

    def lm_tokens(tokenizer, split, n_tokens):
        drawn.append((split, n_tokens))
        offset = {"train": 0, "eval": 10**7}[split]
        return torch.arange(offset, offset + n_tokens)

    monkeypatch.setattr(run, "lm_tokens", lm_tokens)
    model = type("M", (), {"tokenizer": None})()
    for profile in ("cpu", "smoke"):
        cfg = variance.config_for(profile)
        drawn.clear()
        tok = run.tokens(model, cfg)
        fit = set(tok["fit"].tolist())
        assert drawn[0] == ("train", cfg.fit_tokens)
        judged = [run.lm_tokens(None, "eval", n) for n in (cfg.linearity_tokens, cfg.replace_tokens, cfg.eval_tokens)]
        assert all(not fit & set(t.tolist()) for t in judged)
        assert [s for s, _ in drawn[-3:]] == ["eval"] * 3
    # and the steps draw their judging text from the evaluation split (read from their source)
    import inspect

    for step in (run.linearity, run.replacement):
        src = inspect.getsource(step)
        assert '"eval"' in src and '"train"' not in src


def test_exit_panels_draw_each_lens():
    curve = pd.DataFrame(
        [
            {"lens": name, "threshold": t, "easy share": 0.1, "compute saved": 0.2}
            for name in ("logit lens", "tuned lens")
            for t in (0.5, 0.9)
        ]
    )
    ex = Exits(LensExit.from_dict(lens(0.3, 0.2, 0.4)), LensExit.from_dict(lens(0.5, 0.4, 0.6)), curve)
    fig = figures.exit_panels(ex, 0.9)
    hist, shares, kl = fig.axes
    assert len(hist.containers) == 2 and len(shares.lines) == 4
    assert [line.get_label() for line in kl.lines] == ["logit lens", "tuned lens"]
    plt.close(fig)
