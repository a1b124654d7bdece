"""analysis.studies.verdicts: each decision rule on inputs whose answer is known."""

from __future__ import annotations

import pytest

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
    assert V.equivalence_verdict("independent", 0.01, 30).verdict == "inconclusive"  # p is large, yet no claim
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
