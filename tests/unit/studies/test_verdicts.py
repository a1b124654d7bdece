"""analysis.studies.verdicts: each decision rule on inputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import stats
from analysis.studies import verdicts as V


def test_interval_verdict_decides_only_outside_the_threshold():
    assert V.interval_verdict("x > 0", 0.5, 0.2, 0.8).verdict == "reproduced"
    assert V.interval_verdict("x > 0", -0.5, -0.8, -0.2).verdict == "not reproduced"  # the claim must fail
    v = V.interval_verdict("x > 0", 0.1, -0.1, 0.3, n=100)
    assert v.verdict == "inconclusive" and "about 400 units" in v.evidence
    assert V.interval_verdict("x < 0", 0.5, 0.2, 0.8, direction="<").verdict == "not reproduced"
    assert V.interval_verdict("x > 0", float("nan"), 0.0, 1.0).verdict == "inconclusive"
    with pytest.raises(ValueError, match="direction"):
        V.interval_verdict("x", 0, 0, 0, direction=">=")


def test_n_to_settle():
    assert V.n_to_settle(0.1, -0.1, 0.3, 100) == 400
    assert V.n_to_settle(0.5, 0.2, 0.8, 100) is None  # already decided
    assert V.n_to_settle(0.0, -0.1, 0.1, 100) is None  # the estimate sits on the threshold


def test_equivalence_needs_tost_not_a_large_p():
    assert V.equivalence_verdict("independent", 0.01, 3000).verdict == "reproduced"
    assert V.equivalence_verdict("independent", 0.2, 40, margin=0.3).verdict == "inconclusive"  # p large, no claim
    assert V.equivalence_verdict("independent", -0.4, 300, lo=-0.5, hi=-0.3).verdict == "not reproduced"


def test_combine():
    r, n, i = (V.Verdict(c, c, "") for c in ("reproduced", "not reproduced", "inconclusive"))
    assert V.combine("all", [r, r]).verdict == "reproduced"
    assert V.combine("none", [n, n]).verdict == "not reproduced"
    assert V.combine("mixed", [r, n]).verdict == "partly"
    assert V.combine("open", [i, i]).verdict == "inconclusive"
    assert V.combine("against", [n, i]).verdict == "not reproduced"
    p = V.Verdict("p", "partly", "")
    # an open part is not outvoted: with no part against, any inconclusive part leaves the whole open
    assert V.combine("half open", [r, i]).verdict == "inconclusive"
    assert V.combine("mostly open", [r, i, i, i]).verdict == "inconclusive"
    assert V.combine("partly open", [p, i]).verdict == "inconclusive"
    assert V.combine("decided against", [r, n, i]).verdict == "partly"
    assert V.combine("partly", [r, p]).verdict == "partly"
    assert V.combine("open", [r]).criterion == V.COMBINE_RULE
    with pytest.raises(ValueError, match="one of"):
        V.Verdict("c", "maybe", "")


def test_record_and_scoreboard(tmp_path, monkeypatch):
    monkeypatch.setattr(V, "CACHE_DIR", tmp_path)
    V.record("b_study", "smoke", [V.interval_verdict("x > 0", 0.5, 0.2, 0.8, seed=0.4)])
    V.record("a_study", "smoke", [V.Verdict("y", "partly", "rule")])
    board = V.scoreboard("smoke", ["b_study", "a_study"])
    assert list(board["study"]) == ["b_study", "a_study"] and list(board["verdict"]) == ["reproduced", "partly"]
    assert board.loc[0, "seed"] == 0.4 and V.scoreboard("cpu").empty
    shown = V.shown(board)
    assert shown.loc[("b_study", "x > 0"), "interval"] == "[0.2, 0.8]" and shown.loc[("a_study", "y"), "interval"] == ""
    assert list(V.table([V.Verdict("y", "partly", "rule")]).columns)[:5] == [
        "claim",
        "seed",
        "ours",
        "95% interval",
        "verdict",
    ]


def test_unigram_line_scores_train_frequencies_on_disjoint_windows(monkeypatch):
    import types

    import torch

    from analysis import data
    from analysis.evaluate import unigram_score

    train = torch.tensor([0, 1, 1, 2, 2, 2])
    asked = {}

    def lm_tokens(tokenizer, split, n_tokens):
        asked.update(split=split, n=n_tokens)
        return train

    monkeypatch.setattr(data, "lm_tokens", lm_tokens)
    model = types.SimpleNamespace(tokenizer=None, cfg=types.SimpleNamespace(d_vocab=4))
    tokens = torch.tensor([0, 1, 2, 3, 2, 2, 1])  # 7 tokens: two windows of 3, the last token dropped
    line = V.unigram_line(model, tokens, context=3, n_train=6)
    assert asked == {"split": "train", "n": 6}
    same = unigram_score(train, tokens[:6].view(2, 3), 4)
    assert line.window_nll == pytest.approx(same.window_nll) and line.window_tokens == (2, 2)
    with pytest.raises(ValueError, match="at least context=8"):
        V.unigram_line(model, tokens, context=8)


def test_usable_needs_one_perplexity_below_the_line():
    nan = float("nan")
    assert V.usable([3000.0, 90.0], limit=2500.0) and V.usable([3000.0, 90.0], limit=None)
    assert not V.usable([3000.0, 2500.0], limit=2500.0)  # both at or above the line: two broken models
    assert not V.usable([nan, 3000.0], limit=2500.0) and V.usable([nan, 10.0], limit=2500.0)  # NaN never counts


def test_too_few_units_is_inconclusive_whatever_the_interval():
    v = V.interval_verdict("x > 0", 0.5, 0.2, 0.8, n=V.MIN_UNITS - 1, unit="windows")
    assert v.verdict == "inconclusive" and f"fewer than the {V.MIN_UNITS}" in v.evidence
    assert V.interval_verdict("x > 0", 0.5, 0.2, 0.8, n=V.MIN_UNITS).verdict == "reproduced"


def test_an_equivalence_no_data_could_pass_is_untestable_at_this_n():
    need = V.n_for_equivalence(0.1)
    # at n just below the bound even rho = 0 fails TOST; at the bound it passes
    assert (
        not stats.tost_correlation(0.0, need - 1, 0.1).equivalent and stats.tost_correlation(0.0, need, 0.1).equivalent
    )
    v = V.equivalence_verdict("independent", -0.1, 270, lo=-0.2, hi=0.02)
    assert v.verdict == V.UNTESTABLE and str(need) in v.evidence
    assert V.equivalence_verdict("independent", -0.1, 270, lo=-0.3, hi=-0.15).verdict == "not reproduced"
    assert V.combine("two parts", [V.Verdict("a", "reproduced", ""), v]).verdict == "inconclusive"


def test_mean_equivalence_needs_tost():
    rng = np.random.default_rng(0)
    tight = rng.normal(0.0, 0.01, 40)
    assert V.mean_equivalence_verdict("same", stats.paired(tight), tight, 0.05).verdict == "reproduced"
    wide = rng.normal(0.0, 1.0, 16)  # no difference seen, but nothing shown either
    assert V.mean_equivalence_verdict("same", stats.paired(wide), wide, 0.05).verdict == "inconclusive"
    far = rng.normal(1.0, 0.1, 16)
    assert V.mean_equivalence_verdict("same", stats.paired(far), far, 0.05).verdict == "not reproduced"


@pytest.mark.parametrize("n", [4, 6, 8, 12, 16])
def test_the_paired_interval_rule_keeps_false_reproduced_at_or_below_5_percent(n):
    def judge(rng):
        return V.difference_verdict("a > b", stats.paired(rng.standard_t(3, n)))  # heavy tails, true mean 0

    assert V.false_reproduced_rate(judge, 1000) <= 0.05


def test_an_asymmetric_interval_does_not_ask_for_fewer_units_than_it_has():
    v = V.interval_verdict("depth < 0.5", 0.2, 0.07, 0.52, 0.5, "<", n=10, unit="relations")
    assert v.verdict == "inconclusive" and "would settle" not in v.evidence


def test_combine_of_untestable_parts_is_untestable_and_a_zero_estimate_asks_for_no_n():
    u, r = V.Verdict("u", V.UNTESTABLE, ""), V.Verdict("r", "reproduced", "")
    assert V.combine("all untestable", [u, u]).verdict == V.UNTESTABLE
    assert V.combine("one untestable", [r, u]).verdict == "inconclusive"
    v = V.interval_verdict("x > 0", -4e-18, -0.07, 0.07, n=10, unit="relations")
    assert v.verdict == "inconclusive" and "no feasible number of relations" in v.evidence
