"""analysis.studies.factorization: verdicts on constructed grids, and the scoring helpers on a tiny model."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import Dataset

from analysis import compress, probing, stats
from analysis.cache import cache_key
from analysis.probing import ProbeResult
from analysis.studies import factorization
from analysis.studies import verdicts as vd
from analysis.studies.factorization import CellScores, DecoderGrid, ProbeGrid


def _probe(acc: float | tuple[float, float], layers: int = 4) -> ProbeResult:
    """A probe result whose MLP-probe accuracy is ``acc`` on every layer (one value per seed)."""
    seeds = torch.tensor(acc if isinstance(acc, tuple) else (acc, acc))
    task = seeds.expand(layers, -1).clone()
    return ProbeResult("t", {"mlp": {"task": task, "control": torch.full_like(task, 0.5)}}, [8], [2], 0.5)


def _hits(n: int, p: float, seed: int) -> list[bool]:
    return (torch.rand(n, generator=torch.Generator().manual_seed(seed)) < p).tolist()


def _frame(cells: dict, n_windows: int = 16, seed: int = 0, mmlu: bool = False) -> DecoderGrid:
    """A decoder grid from ``{(label, ratio): (fact-mc hits, loss per token)}`` with per-window scores
    (``mmlu``: the same hits stand for MMLU too)."""
    g = torch.Generator().manual_seed(seed)
    rows, units = [], {}
    for (m, r), (hits, loss) in cells.items():
        nll = (loss + 0.05 * torch.randn(n_windows, generator=g)) * 100
        units[(m, r)] = CellScores(nll.tolist(), [100] * n_windows, list(hits), list(hits) if mmlu else [], [])
        rows.append({"method": m, "ratio": r, "perplexity": math.exp(float(nll.sum()) / (100 * n_windows))})
    return DecoderGrid(pd.DataFrame(rows), units)


def _nested(n: int, accs: dict[str, float], seed: int = 0) -> dict[str, list[bool]]:
    """Correct sets nested by accuracy: whoever is more accurate is right wherever the other is."""
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed))
    return {m: (u < a).tolist() for m, a in accs.items()}


def test_ordering_verdict_reproduced_not_reproduced_inconclusive():
    h = _nested(300, {"none": 0.95, "ASVD": 0.9, "FWSVD": 0.7, "SVD": 0.5})
    cells = {("none", 0.0): (h["none"], 3.0)}
    for r in (0.05, 0.1):
        cells |= {(m, r): (h[m], 3.5) for m in ("ASVD", "FWSVD", "SVD")}
    v = factorization.ordering_verdict(_frame(cells), metric="fact mc")
    assert v.verdict == "reproduced" and v.ours == pytest.approx(0.2, abs=0.05)
    assert v.claim == "ASVD > FWSVD > SVD at every ratio"
    # must fail: SVD beats FWSVD at 10 %
    cells[("SVD", 0.1)], cells[("FWSVD", 0.1)] = (h["ASVD"], 3.5), (h["SVD"], 3.5)
    assert factorization.ordering_verdict(_frame(cells), metric="fact mc").verdict == "not reproduced"
    # inconclusive: 20 questions, one apart
    small = _nested(20, {"none": 0.9, "ASVD": 0.65, "FWSVD": 0.6, "SVD": 0.55})
    cells = {("none", 0.0): (small["none"], 3.0)} | {(m, 0.1): (small[m], 3.5) for m in ("ASVD", "FWSVD", "SVD")}
    v = factorization.ordering_verdict(_frame(cells), metric="fact mc")
    assert v.verdict == "inconclusive" and "would settle" in v.evidence


def test_ordering_verdict_on_perplexity_paired_over_windows():
    hits = [True] * 10
    loss = {"ASVD": 3.3, "FWSVD": 3.5, "SVD": 3.8}
    cells = {("none", 0.0): (hits, 3.0)} | {(m, r): (hits, v + r) for m, v in loss.items() for r in (0.05, 0.1)}
    v = factorization.ordering_verdict(_frame(cells))
    assert v.verdict == "reproduced" and v.ours == pytest.approx(0.2, abs=0.05)
    assert "t-test" in v.criterion and "fact mc accuracy: inconclusive" in v.evidence  # all questions right
    cells[("SVD", 0.1)] = (hits, 3.2)  # must fail: SVD beats FWSVD at 10 %
    assert factorization.ordering_verdict(_frame(cells)).verdict == "not reproduced"
    close = {("none", 0.0): (hits, 3.0)} | {
        (m, 0.1): (hits, 3.5 + 0.005 * i) for i, m in enumerate(("ASVD", "FWSVD", "SVD"))
    }
    v = factorization.ordering_verdict(_frame(close, n_windows=4))
    assert v.verdict == "inconclusive" and "windows (now 4)" in v.evidence


def test_collapse_verdict_on_mmlu_reproduced_not_reproduced_inconclusive_untestable():
    assert factorization.seed_collapse_share() == pytest.approx((0.296 - 0.25) / (0.456 - 0.25))  # 22 %, the seed's
    h = _nested(400, {"none": 0.9, "svd5": 0.3, "svd10": 0.28, "mild": 0.88})
    cells = {("none", 0.0): (h["none"], 3.0), ("SVD", 0.05): (h["svd5"], 4.0), ("SVD", 0.1): (h["svd10"], 5.0)}
    v = factorization.collapse_verdict(_frame(cells, mmlu=True))
    assert v.verdict == "reproduced" and v.claim == "SVD collapses at 5–10%" and "mmlu" in v.criterion
    assert v.ci_high < 0.22 and "5%: reproduced" in v.evidence and "10%: reproduced" in v.evidence
    cells[("SVD", 0.1)] = (h["mild"], 3.1)  # SVD keeps almost everything at 10 %: the claim holds at 5 % only
    assert factorization.collapse_verdict(_frame(cells, mmlu=True)).verdict == "partly"
    cells[("SVD", 0.05)] = (h["mild"], 3.1)  # must fail: no collapse at either ratio
    assert factorization.collapse_verdict(_frame(cells, mmlu=True)).verdict == "not reproduced"
    small = _nested(24, {"none": 0.9, "svd": 0.45})
    cells = {("none", 0.0): (small["none"], 3.0), ("SVD", 0.1): (small["svd"], 4.0)}
    assert factorization.collapse_verdict(_frame(cells, mmlu=True)).verdict == "inconclusive"
    # the base at chance: no share can be bounded at this n, whatever the compressed model does
    chance = _nested(114, {"none": 0.28, "svd": 0.25})
    cells = {("none", 0.0): (chance["none"], 3.0), ("SVD", 0.1): (chance["svd"], 4.0)}
    v = factorization.collapse_verdict(_frame(cells, mmlu=True))
    assert v.verdict == "untestable at this n" and "not above chance" in v.evidence
    v = factorization.collapse_verdict(_frame(cells))  # MMLU never scored at the SVD cells
    assert v.verdict != "reproduced" and "not scored" in v.evidence
    assert factorization.retained_share([True] * 4, [True] * 4)[0] == pytest.approx(1.0)


def test_collapse_false_reproduced_rate_at_the_seed_boundary():
    """SVD keeps exactly the seed's 22 % of a 0.45 MMLU baseline, 114 questions in 57 subjects (the cpu sample)."""
    tau, subjects = factorization.seed_collapse_share(), [f"s{i // 2}" for i in range(114)]

    def judge(rng):
        base = rng.random(114) < 0.45
        comp = rng.random(114) < 0.25 + tau * 0.20
        cells = {("none", 0.0): (base.tolist(), 3.0), ("SVD", 0.1): (comp.tolist(), 4.0)}
        return factorization.collapse_verdict(_frame(cells, mmlu=True), clusters=subjects)

    assert vd.false_reproduced_rate(judge, 300) <= 0.05


def _probe_hits(scores: torch.Tensor, layers: int = 4) -> ProbeResult:
    task = scores.float().expand(layers, -1).clone()
    acc = torch.full((layers, 1), float(scores.float().mean()))
    return ProbeResult(
        "t",
        {"mlp": {"task": acc, "control": acc}},
        [0],
        [len(scores)],
        0.5,
        hits={"mlp": {"task": task, "control": task}},
    )


def _probe_case(a_hits, b_hits, n_groups, limit=None):
    """SVD 10 % has clearly higher perplexity than FWSVD 10 % (about 55 and 25); the probe scores each as given."""
    frame = _frame({("none", 0.0): ([True], 3.0), ("SVD", 0.1): ([True], 4.0), ("FWSVD", 0.1): ([True], 3.2)})
    cells = {
        ("none", 0.0): {},
        ("svd", 0.1): {"SST-2": _probe_hits(a_hits)},
        ("fwsvd", 0.1): {"SST-2": _probe_hits(b_hits)},
    }
    tasks = {"SST-2": {"group": [f"g{i % n_groups}" for i in range(len(a_hits))]}}
    return factorization.probes_hide_verdict(frame, ProbeGrid(cells, tasks), limit=limit)


def test_probes_hide_verdict_reproduced_not_reproduced_inconclusive():
    g = torch.Generator().manual_seed(0)
    # FWSVD has the lower perplexity but its probe is far worse: damage perplexity hides
    v = _probe_case(torch.rand(600, generator=g) < 0.9, torch.rand(600, generator=g) < 0.6, 300)
    assert v.verdict == "reproduced" and v.ours > 0.2 and v.claim.endswith("(ours, not the seed's)")
    # must fail: the probes agree (same accuracy), with enough items to see a 10-point drop
    v = _probe_case(torch.rand(800, generator=g) < 0.8, torch.rand(800, generator=g) < 0.8, 400)
    assert v.verdict == "not reproduced" and "power" in v.evidence
    # inconclusive: too few items to see a 10-point drop
    v = _probe_case(torch.rand(12, generator=g) < 0.8, torch.rand(12, generator=g) < 0.8, 6)
    assert v.verdict == "inconclusive"


def test_a_pair_of_broken_decoders_is_not_ordered_by_perplexity():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(600, generator=g) < 0.9, torch.rand(600, generator=g) < 0.6
    assert _probe_case(a, b, 300, limit=30.0).verdict == "reproduced"  # FWSVD (25) usable: the pair counts
    v = _probe_case(a, b, 300, limit=20.0)  # both above the line
    assert v.verdict == "inconclusive" and "no pair" in v.evidence


def test_ordering_between_broken_models_is_left_out():
    hits = [True] * 10
    loss = {"ASVD": 3.3, "FWSVD": 3.5, "SVD": 3.8}  # perplexity 27-30, 35-37, 47-49 at 5 and 10 %
    cells = {("none", 0.0): (hits, 3.0)} | {(m, r): (hits, v + r) for m, v in loss.items() for r in (0.05, 0.1)}
    v = factorization.ordering_verdict(_frame(cells), limit=32.0)  # FWSVD and SVD broken at both ratios
    assert v.verdict == "partly" and "Left out, both models broken" in v.evidence
    tested = v.evidence.split(". Left out")[0]
    assert tested.count("ASVD > FWSVD:") == 2 and "FWSVD > SVD:" not in tested
    cells[("SVD", 0.1)] = (hits, 3.55)  # SVD beats FWSVD (3.6) at 10 %: a reversal, but between broken models
    assert factorization.ordering_verdict(_frame(cells)).verdict == "not reproduced"
    assert factorization.ordering_verdict(_frame(cells), limit=32.0).verdict == "partly"
    v = factorization.ordering_verdict(_frame(cells), limit=20.0)  # every model broken
    assert v.verdict == "inconclusive" and "every compared pair is broken" in v.evidence


def test_probes_hide_verdict_needs_an_ordered_pair():
    frame = _frame({("none", 0.0): ([True], 3.0), ("SVD", 0.1): ([True], 3.5), ("FWSVD", 0.1): ([True], 3.5)})
    s = torch.ones(10, dtype=torch.bool)
    cells = {("svd", 0.1): {"SST-2": _probe_hits(s)}, ("fwsvd", 0.1): {"SST-2": _probe_hits(s)}}
    grid = ProbeGrid(cells, {"SST-2": Dataset.from_dict({"group": ["g"] * 10})})
    v = factorization.probes_hide_verdict(frame, grid)
    assert v.verdict == "inconclusive" and "no pair" in v.evidence


def test_mcnemar_is_one_sided_and_exact():
    a = [True] * 8 + [False] * 2
    b = [False] * 8 + [True] * 2
    assert stats.mcnemar_greater(a, b) == pytest.approx(sum(math.comb(10, k) for k in range(8, 11)) / 2**10)
    assert stats.mcnemar_greater(b, a) > 0.9
    assert stats.mcnemar_greater(a, a) == 1.0


def test_probe_frame_averages_the_top_four_layers():
    res = _probe(0.6, layers=6)
    res.acc["mlp"]["task"][:2] = 0.0  # the bottom two layers are not in the seed's top four
    grid = ProbeGrid({("svd", 0.1): {"SST-2": res}}, {})
    frame = factorization.probe_frame(grid)
    assert frame.loc[0, "method"] == "SVD" and frame.loc[0, "SST-2"] == pytest.approx(0.6)
    assert frame.loc[0, "SST-2 selectivity"] == pytest.approx(0.1)
    assert factorization.probe_frame(grid, layers=[0, 5]).loc[0, "SST-2"] == pytest.approx(0.3)


def test_mean_damage():
    frame = pd.DataFrame(
        {
            "method": ["none", "SVD", "SVD", "ASVD"],
            "ratio": [0, 0.1, 0.2, 0.1],
            "perplexity": [10.0, 20.0, 40.0, 10.0],
            "SST-2": [0.8, 0.7, 0.5, 0.8],
        }
    )
    log = factorization.mean_damage(frame, "perplexity", log=True)
    assert log["SVD"] == pytest.approx((math.log(2) + math.log(4)) / 2) and log["ASVD"] == pytest.approx(0.0)
    assert factorization.mean_damage(frame, "SST-2")["SVD"] == pytest.approx(0.2)
    drop = factorization.probe_damage(frame, ("SST-2",))
    assert drop.loc["SVD", "SST-2"] == pytest.approx(0.2)


def test_first_ratio_changes_and_seed_tables():
    decoder = pd.DataFrame(
        {
            "method": ["none", "SVD", "SVD"],
            "ratio": [0.0, 0.05, 0.1],
            "perplexity": [10.0, 20.0, 40.0],
            "fact mc acc": [0.8, 0.5, 0.3],
            "mmlu acc": [0.27, 0.25, 0.24],
            "fact recall": [1.0, 0.5, 0.1],
        }
    )
    (line,) = factorization.first_ratio_changes(decoder)
    assert line.startswith("SVD: at 5% removed, perplexity 10 -> 20, fact MC 0.80 -> 0.50")
    side = factorization.decoder_beside_seed(decoder, "tiny")
    assert side.loc[("SVD", 0.05), "seed: Llama-2-7B MMLU"] == 0.296
    assert side.loc[("SVD", 0.05), "ours: tiny MMLU"] == 0.25
    assert side.loc[("SVD", 0.05), "ours: tiny fact MC"] == 0.5
    assert side.loc[("SVD", 0.0), "ours: perplexity"] == 10.0  # the uncompressed row at ratio 0
    assert pd.isna(side.loc[("SVD", 0.15), "ours: perplexity"])  # no such cell here
    t3 = factorization.seed_probe_table("bert_probes").set_index(["method", "ratio"])
    assert t3.loc[("SVD", 0.1), "CoLA"] == pytest.approx((0.765 + 0.77 + 0.774 + 0.765) / 4)  # the seed's, all tasks
    probes = pd.DataFrame(
        {"method": ["none", "SVD"], "ratio": [0.0, 0.1], "SST-2": [0.9, 0.7], "SST-2 control": [0.5, 0.55]}
    )
    both = factorization.probes_beside_seed(probes, "enc")
    assert list(both.columns) == ["SST-2", "SST-2 control"]  # only the tasks both sides probe
    assert both.loc[("ours: enc, accuracy", "SVD", 0.1), "SST-2"] == 0.7
    assert both.loc[("seed: BERT-base, weighted F1", "SVD", 0.1), "SST-2"] == pytest.approx(
        (0.801 + 0.79 + 0.791 + 0.79) / 4
    )


def test_mmlu_scoring_is_the_data_layers():
    """The MMLU helpers moved to analysis.data.mmlu_scoring (tested in tests/unit/data/test_mmlu.py); the
    study's names are the same functions."""
    from analysis.data import mmlu_scoring as mmlu
    from analysis.studies.factorization import evaluation

    for name in ("mmlu_items", "letter_ids", "letter_logits", "mmlu_correct"):
        assert getattr(factorization, name) is getattr(mmlu, name) is getattr(evaluation, name)


def test_rank_table_matches_the_factor_sizes(tiny_model):
    t = factorization.rank_table(tiny_model, [0.25, 0.5])
    k = compress.rank_for_ratio(32, 64, 0.5)
    assert t.loc[1, "rank of [32, 64] (of 32)"] == k
    assert t.loc[1, "removed [32, 64]"] == pytest.approx(1 - k * (32 + 64) / (32 * 64))
    assert t.loc[1, "removed [32, 64]"] >= 0.5 > t.loc[0, "removed [32, 64]"] >= 0.25


def test_choice_logprobs_batched_equal_one_at_a_time(tiny_model):
    """Right-padded batches of choices score each choice exactly as alone (a character tokenizer)."""

    def to_tokens(text, prepend_bos=True):
        ids = [1 + ord(c) % 40 for c in text]
        return torch.tensor([[0] * prepend_bos + ids])

    tiny_model.to_tokens = to_tokens
    items = [
        {"prompt": "Q: sky?", "choices": ["blue", "a green one", "red"], "answer": 0},
        {"prompt": "Q: longer question here?", "choices": ["x", "yy", "zzz"], "answer": 2},
    ]
    lp = factorization.choice_logprobs(tiny_model, items, batch_size=4)
    assert lp.shape == (2, 3)
    for i, it in enumerate(items):
        prefix = to_tokens(it["prompt"])[0]
        for j, c in enumerate(it["choices"]):
            full = torch.cat([prefix, to_tokens(" " + c, prepend_bos=False)[0]])
            with torch.no_grad():
                logp = tiny_model(full[None]).log_softmax(-1)[0]
            ref = sum(float(logp[p - 1, full[p]]) for p in range(len(prefix), len(full)))
            assert float(lp[i, j]) == pytest.approx(ref, abs=1e-4)
    acc = factorization.mc_accuracy(tiny_model, items)
    assert acc == float(sum(int(lp[i].argmax()) == it["answer"] for i, it in enumerate(items))) / 2


def test_config_per_profile():
    smoke = factorization.config_for("smoke")
    assert smoke.decoder_layers == (0,)
    cells = smoke.cells()
    assert cells[0] == ("none", 0.0) and ("asvd", 0.10) not in cells and ("asvd_rank", 0.10) in cells
    cpu = factorization.config_for("cpu")
    assert cpu.calib_tokens >= 10 * 1536  # 10x SmolLM2's widest MLP input
    assert {"svd", "fwsvd", "asvd_rank"} <= {m for m, r in cpu.cells() if r in cpu.ratios and r == 0.05}
    assert (smoke.n_mmlu, cpu.n_mmlu, factorization.config_for("gpu").n_mmlu) == (8, 114, 5700)
    gpu = factorization.config_for("gpu")
    assert cpu.mmlu_ratios == () and set(gpu.mmlu_ratios) >= set(gpu.ratios) | set(gpu.side_ratios)  # gpu: every cell
    with pytest.raises(ValueError, match="profile"):
        factorization.config_for("nonsense")


def test_size_fields_are_marked_and_leave_the_cache_key_alone():
    fields = {f.name: f for f in dataclasses.fields(factorization.FactorConfig)}
    sizes = {n for n, f in fields.items() if f.metadata.get("size")}
    assert {"eval_tokens", "calib_tokens", "calib_sizes", "n_mmlu", "n_probe", "ratios", "batch_size", "probe"} <= sizes
    choices = {"methods", "side_methods", "decoder_layers", "sensitivity_unit", "fisher_task", "decoders", "encoders"}
    assert not sizes & choices and choices <= set(fields)
    twin = dataclasses.make_dataclass("FactorConfig", [(n, f.type) for n, f in fields.items()], frozen=True)
    for profile in ("smoke", "cpu", "gpu"):  # the same values without metadata: the same key
        cfg = factorization.config_for(profile)
        assert cache_key("x", cfg) == cache_key("x", twin(**{n: getattr(cfg, n) for n in fields}))


def test_cell_scores_read_the_cached_units():
    units = {"window_nll": [200.0, 400.0], "window_tokens": [100, 100], "fact mc": [True, False], "mmlu": [],
             "fact recall": [True]}  # fmt: skip
    cell = CellScores.from_units(units)
    assert cell.perplexity == pytest.approx(math.exp(3.0))
    assert cell.hits("fact mc") == [True, False] and cell.hits("fact recall") == [True] and cell.hits("mmlu") == []
    with pytest.raises(KeyError):
        cell.hits("perplexity")


def test_probe_grid_labels_and_groups():
    tasks = {"SST-2": Dataset.from_dict({"group": ["a", "a", "b"], "text": ["x", "y", "z"]})}
    grid = ProbeGrid({("none", 0.0): {}, ("asvd_rank", 0.1): {}, ("svd", 0.2): {}}, tasks)
    assert grid.labels() == {("none", 0.0): "none", ("asvd_rank", 0.1): "ASVD", ("svd", 0.2): "SVD"}
    assert grid.groups() == {"SST-2": ["a", "a", "b"]}


def test_interval_table_gives_each_score_with_its_interval():
    hits = [True, False, True, True]
    grid = _frame({("none", 0.0): (hits, 3.0), ("SVD", 0.1): (hits[:2], 3.5)})
    grid.frame["ppl low"], grid.frame["ppl high"], grid.frame["removed"] = 1.0, 2.0, [0.0, 0.1]
    table = factorization.interval_table(grid)
    est, lo, hi = stats.mean_ci(np.asarray(hits, float))
    assert table.loc[("none", 0.0), "fact MC (n=4)"] == f"{est:.3f} [{lo:.3f}, {hi:.3f}]"
    assert table.loc[("SVD", 0.1), "fact MC (n=2)"].startswith("0.500 [")
    assert table.loc[("SVD", 0.1), "perplexity"].endswith("[1.000, 2.000]")
    assert not any("MMLU" in c for c in table.columns)  # no MMLU scored: no column


def test_verdicts_are_every_claim_in_order():
    g = torch.Generator().manual_seed(0)
    h = _nested(300, {"none": 0.95, "ASVD": 0.9, "FWSVD": 0.7, "SVD": 0.3})
    cells = {("none", 0.0): (h["none"], 3.0)} | {(m, 0.1): (h[m], 3.5) for m in ("ASVD", "FWSVD", "SVD")}
    decoder = _frame(cells)
    a, b = torch.rand(600, generator=g) < 0.9, torch.rand(600, generator=g) < 0.6
    probes = ProbeGrid(
        {("svd", 0.1): {"SST-2": _probe_hits(a)}, ("fwsvd", 0.1): {"SST-2": _probe_hits(b)}},
        {"SST-2": Dataset.from_dict({"group": [f"g{i % 300}" for i in range(600)]})},
    )
    found = factorization.verdicts(decoder, probes, limit=1e6)
    assert [v.claim for v in found] == [
        "ASVD > FWSVD > SVD at every ratio",
        "SVD collapses at 5–10%",
        "SVD at 30–50% produces no usable output",
        "Pruning and quantization at the same compression lose only 10–20%",
        "RQ1: the loss of quality goes with the loss of inner representations (probe accuracy tracks the decline)",
        "RQ3: knowledge goes first (TruthfulQA in the seed; fact multiple choice here), SST-2 stays largely intact",
        "The damage is more pronounced in the decoder than in the encoder",
        "Probes pass the control task: SST-2 selectivity > 0.2 (Table 3)",
        "Probes reveal damage perplexity hides (ours, not the seed's)",
    ]
    assert found[0] == factorization.ordering_verdict(decoder, limit=1e6)
    assert found[1] == factorization.collapse_verdict(decoder)
    assert found[-1] == factorization.probes_hide_verdict(decoder, probes, limit=1e6)
    missing = found[2:4] + found[6:8]  # no unigram line, no comparison arm, no encoder: inconclusive, and why
    assert all(v.verdict == "inconclusive" and v.evidence for v in missing)


# --------------------------------------------------------------------------------------
# The further claims (issue #22, item 10): holds / must fail / inconclusive, and nulls at the cpu n
# --------------------------------------------------------------------------------------


def _bern(rng, n: int, p: float) -> torch.Tensor:
    return torch.from_numpy(rng.random(n) < p)


def _sst2(probes: dict, groups: list[str], control: dict | None = None) -> ProbeGrid:
    """A probe grid of one task, ``SST-2``, from ``{cell: item hits}`` (and control hits per cell)."""
    cells = {}
    for cell, hits in probes.items():
        res = _probe_hits(hits)
        if control is not None:
            res.hits["mlp"]["control"] = control[cell].float().expand(4, -1).clone()
        cells[cell] = {"SST-2": res}
    return ProbeGrid(cells, {"SST-2": {"group": groups}})  # a dict serves as the dataset: only "group" is read


def test_kept_share_fieller_interval():
    rng = np.random.default_rng(0)
    b, c = rng.random(4000) < 0.85, rng.random(4000) < 0.55
    s = factorization.kept_share(b, c, 0.25)
    assert s.estimate == pytest.approx((c.mean() - 0.25) / (b.mean() - 0.25))
    assert s.low < s.estimate < s.high and s.high - s.low == pytest.approx(
        2 * 1.96 * s.se, rel=0.05
    )  # ≈ delta, large n
    at_chance = factorization.kept_share(rng.random(50) < 0.27, rng.random(50) < 0.25, 0.25)
    assert math.isinf(at_chance.low) and math.isinf(at_chance.high)  # no margin above chance: unbounded
    clustered = factorization.kept_share(
        np.repeat(b[:200], 5), np.repeat(c[:200], 5), 0.25, np.repeat(np.arange(200), 5)
    )
    plain = factorization.kept_share(b[:200], c[:200], 0.25)
    assert clustered.high - clustered.low == pytest.approx(plain.high - plain.low, rel=0.02)  # copies add nothing


def test_degradation_verdict_against_the_unigram_line():
    from analysis.evaluate import LMScore

    def uni(loss, n=16, seed=1):
        nll = (loss + 0.05 * torch.randn(n, generator=torch.Generator().manual_seed(seed))) * 100
        return LMScore(loss, 0.0, 100 * n, tuple(nll.tolist()), (100,) * n)

    grid = _frame({("none", 0.0): ([True], 3.0), ("SVD", 0.35): ([True], 9.0), ("SVD", 0.1): ([True], 5.0)})
    v = factorization.degradation_verdict(grid, uni(7.0))
    assert v.verdict == "reproduced" and "SVD 35%" in v.evidence and "SVD 10%" not in v.evidence
    assert factorization.degradation_verdict(grid, uni(11.0)).verdict == "not reproduced"  # still usable
    assert factorization.degradation_verdict(grid, uni(9.0, n=16, seed=0)).verdict == "inconclusive"  # tied
    assert factorization.degradation_verdict(grid, None).verdict == "inconclusive"

    def judge(rng):  # SVD exactly as bad as the unigram model, 16 windows (the cpu eval text)
        g = _frame({("none", 0.0): ([True], 3.0), ("SVD", 0.35): ([True], 8.0)}, seed=int(rng.integers(1 << 30)))
        return factorization.degradation_verdict(g, uni(8.0, seed=int(rng.integers(1 << 30))))

    assert vd.false_reproduced_rate(judge, 200) <= 0.05


def _arms(keep: float, n: int = 150, seed: int = 0) -> DecoderGrid:
    rng = np.random.default_rng(seed)
    return _frame({("magnitude pruning", r): ((rng.random(n) < 0.25 + keep * 0.70).tolist(), 3.2) for r in (0.05, 0.1)})


def test_baselines_verdict():
    rng = np.random.default_rng(1)
    decoder = _frame({("none", 0.0): ((rng.random(150) < 0.95).tolist(), 3.0)})
    assert factorization.baselines_verdict(decoder, _arms(0.98)).verdict == "reproduced"
    assert factorization.baselines_verdict(decoder, _arms(0.3)).verdict == "not reproduced"
    small = _frame({("none", 0.0): ((rng.random(20) < 0.95).tolist(), 3.0)})
    assert factorization.baselines_verdict(small, _arms(0.75, n=20)).verdict == "inconclusive"
    v = factorization.baselines_verdict(decoder, None)
    assert v.verdict == "inconclusive" and "no pruning or quantization arm" in v.evidence
    relations = [f"r{i % 20}" for i in range(150)]

    def judge(rng):  # the arm keeps exactly the seed's 80 %, 150 fact questions in 20 relations
        dec = _frame({("none", 0.0): ((rng.random(150) < 0.95).tolist(), 3.0)})
        return factorization.baselines_verdict(dec, _arms(0.8, seed=int(rng.integers(1 << 30))), relations)

    assert vd.false_reproduced_rate(judge, 300) <= 0.05


def _rq1_case(ppl: list[float], acc: list[float]):
    cells = [("none", 0.0)] + [("svd", 0.05 * (i + 1)) for i in range(len(ppl) - 1)]
    decoder = _frame({("none" if m == "none" else "SVD", r): ([True], math.log(p)) for (m, r), p in zip(cells, ppl)})
    probes = {c: torch.tensor([1.0] * round(100 * a) + [0.0] * (100 - round(100 * a))) for c, a in zip(cells, acc)}
    return factorization.rq1_verdict(decoder, _sst2(probes, [f"g{i}" for i in range(100)]))


def test_rq1_verdict():
    ppl = [20, 30, 50, 80, 130, 200, 400, 900, 2000]
    assert _rq1_case(ppl, [0.9, 0.85, 0.8, 0.78, 0.7, 0.66, 0.6, 0.55, 0.5]).verdict == "reproduced"
    assert _rq1_case(ppl, [0.5, 0.55, 0.6, 0.66, 0.7, 0.78, 0.8, 0.85, 0.9]).verdict == "not reproduced"
    v = _rq1_case(ppl[:4], [0.9, 0.8, 0.7, 0.6])  # perfect, but 4 cells (the cpu grid)
    assert v.verdict == "inconclusive" and "fewer than the 8" in v.evidence
    for n in (4, 13):  # the cpu grid probes 4 cells, the gpu grid 13: no relation at all
        assert factorization.claims.rank_permutation_p(np.arange(n), np.arange(n))[0] > 0.99

        def judge(rng, n=n):
            return _rq1_case(list(np.exp(rng.normal(5, 2, n))), list(rng.uniform(0.5, 0.9, n)))

        assert vd.false_reproduced_rate(judge, 200) <= 0.05


def _rq3_case(facts: tuple[float, float], sst2: tuple[float, float], n_facts=150, n_probe=300, seed=0):
    rng = np.random.default_rng(seed)
    decoder = _frame({("none", 0.0): ((rng.random(n_facts) < facts[0]).tolist(), 3.0),
                      ("SVD", 0.1): ((rng.random(n_facts) < facts[1]).tolist(), 5.0)})  # fmt: skip
    probes = {("none", 0.0): _bern(rng, n_probe, sst2[0]), ("svd", 0.1): _bern(rng, n_probe, sst2[1])}
    return factorization.knowledge_first_verdict(decoder, _sst2(probes, [f"g{i}" for i in range(n_probe)]))


def test_knowledge_first_verdict():
    v = _rq3_case((0.95, 0.35), (0.85, 0.84))  # facts nearly gone, SST-2 intact
    assert v.verdict == "reproduced" and "fact multiple choice" in v.claim and "TruthfulQA" in v.claim
    assert _rq3_case((0.95, 0.93), (0.85, 0.52)).verdict == "not reproduced"  # SST-2 goes, facts stay
    assert _rq3_case((0.95, 0.35), (0.85, 0.80), n_facts=20, n_probe=20).verdict == "inconclusive"

    def judge(rng):  # facts gone, SST-2 keeps exactly the seed's 90 % (cpu: 150 facts, 300 probe items)
        return _rq3_case((0.95, 0.30), (0.80, 0.72), seed=int(rng.integers(1 << 30)))

    assert vd.false_reproduced_rate(judge, 200) <= 0.05


def _two_models(dec_drop: float, enc_drop: float, n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = [f"g{i}" for i in range(n)]
    grids = [
        _sst2({("none", 0.0): _bern(rng, n, 0.8), ("svd", 0.1): _bern(rng, n, 0.8 - d)}, groups)
        for d in (dec_drop, enc_drop)
    ]
    return factorization.decoder_worse_verdict(*grids)


def test_decoder_worse_verdict():
    assert _two_models(0.3, 0.02).verdict == "reproduced"
    assert _two_models(0.02, 0.3).verdict == "not reproduced"
    assert _two_models(0.1, 0.05, n=30).verdict == "inconclusive"
    v = factorization.decoder_worse_verdict(_sst2({("none", 0.0): torch.ones(10)}, ["g"] * 10), ProbeGrid({}, {}))
    assert v.verdict == "inconclusive"

    def judge(rng):  # equal drops, 300 items (the cpu probe set)
        return _two_models(0.1, 0.1, seed=int(rng.integers(1 << 30)))

    assert vd.false_reproduced_rate(judge, 200) <= 0.05


def _selectivity(task: float, control: float, n: int = 140, seed: int = 0):
    rng = np.random.default_rng(seed)
    cells = [("none", 0.0), ("svd", 0.1)]
    probes = {c: _bern(rng, n, task) for c in cells}
    controls = {c: _bern(rng, n, control) for c in cells}
    return factorization.selectivity_verdict(_sst2(probes, [f"g{i}" for i in range(n)], controls))


def test_selectivity_verdict():
    assert _selectivity(0.9, 0.5).verdict == "reproduced"
    assert _selectivity(0.6, 0.55).verdict == "not reproduced"
    assert _selectivity(0.75, 0.55, n=20).verdict == "inconclusive"
    assert factorization.selectivity_verdict(ProbeGrid({}, {})).verdict == "inconclusive"

    def judge(rng):  # selectivity exactly the seed's 0.2, 140 items tested (the cpu encoder's)
        return _selectivity(0.75, 0.55, seed=int(rng.integers(1 << 30)))

    assert vd.false_reproduced_rate(judge, 200) <= 0.05


def test_ordering_false_reproduced_rate_at_16_windows():
    hits = [True] * 10

    def judge(rng):  # ASVD > FWSVD holds clearly; FWSVD and SVD tie, 16 windows (the cpu eval text)
        cells = {("none", 0.0): (hits, 3.0), ("ASVD", 0.1): (hits, 3.2), ("FWSVD", 0.1): (hits, 3.5),
                 ("SVD", 0.1): (hits, 3.5)}  # fmt: skip
        return factorization.ordering_verdict(_frame(cells, seed=int(rng.integers(1 << 30))), secondary=None)

    assert vd.false_reproduced_rate(judge, 300) <= 0.05


def test_probes_hide_false_reproduced_rate():
    def judge(rng):  # FWSVD has the lower perplexity; the probes score both the same (300 items in 150 groups)
        return _probe_case(_bern(rng, 300, 0.7), _bern(rng, 300, 0.7), 150)

    assert vd.false_reproduced_rate(judge, 200) <= 0.05


def test_choosing_and_judging_data_are_disjoint(monkeypatch):
    """What chooses (calibration statistics for FWSVD/ASVD/SVD-LLM, ASVD's rank search, the encoder's
    Fisher rows, a probe's training folds) never scores: under the cpu and smoke configs."""
    from analysis.data import text
    from analysis.studies.factorization import evaluation

    calls = []
    monkeypatch.setattr(evaluation.data, "lm_tokens", lambda tok, split, n: calls.append((split, n)) or torch.arange(n))
    monkeypatch.setattr(
        evaluation, "eval_facts", lambda model, n: (Dataset.from_dict({"prompt": []}), {"split": "eval", "n_total": 0})
    )
    monkeypatch.setattr(evaluation, "mmlu_items", lambda n: [])
    monkeypatch.setattr(evaluation, "fact_mc_items", lambda rows, k: [])
    titles = {s: {text.normalise_title(t) for t in text.lm_text(s)["title"]} for s in ("eval", "calib")}
    assert not titles["eval"] & titles["calib"]
    for profile in ("cpu", "smoke"):
        cfg = factorization.config_for(profile)
        calls.clear()
        data = evaluation.decoder_data(type("M", (), {"tokenizer": None})(), cfg)
        assert calls == [("eval", cfg.eval_tokens), ("calib", max(cfg.calib_tokens, *cfg.calib_sizes))]
        assert len(data.eval_tokens) == cfg.eval_tokens  # judged text: "eval" only; every statistic reads "calib"
        assert cfg.sensitivity_windows * cfg.context <= len(data.calib_tokens)  # ASVD's search: calibration windows
        for folds, n in ((cfg.decoder_probe.folds, cfg.n_decoder_probe), (5, cfg.n_probe)):
            groups = [f"q{i // 2}" for i in range(n)]  # two answers per question, as mmlu_answer
            for train, test in probing.group_folds(groups, folds, 0):
                assert not {groups[i] for i in train.tolist()} & {groups[i] for i in test.tolist()}
