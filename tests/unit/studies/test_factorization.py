"""analysis.studies.factorization: verdicts on constructed grids, and the scoring helpers on a tiny model."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from analysis import compress
from analysis.probing import PROBE_TASKS, ProbeResult
from analysis.studies import factorization

CODES = {label: code for code, label in factorization.METHOD_LABELS.items()}


def _probe(acc: float | tuple[float, float], layers: int = 4) -> ProbeResult:
    """A probe result whose MLP-probe accuracy is ``acc`` on every layer (one value per seed)."""
    seeds = torch.tensor(acc if isinstance(acc, tuple) else (acc, acc))
    task = seeds.expand(layers, -1).clone()
    return ProbeResult("t", {"mlp": {"task": task, "control": torch.full_like(task, 0.5)}}, [8], [2], 0.5)


def _grids(ppl: dict[str, float], probe: dict[str, float | tuple]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A decoder frame and probe grid at one ratio (0.1) from perplexity and CoLA-probe accuracy per method."""
    rows = [{"method": m, "ratio": 0.0 if m == "none" else 0.1, "perplexity": p} for m, p in ppl.items()]
    grid = {
        ("none" if m == "none" else CODES[m], 0.0 if m == "none" else 0.1): {
            t: _probe(probe.get(m, 0.8) if t == "CoLA" else 0.8) for t in PROBE_TASKS
        }
        for m in ppl
    }
    return pd.DataFrame(rows), factorization.probe_frame(grid), grid


def test_probe_frame_averages_the_top_four_layers():
    res = _probe(0.6, layers=6)
    res.acc["mlp"]["task"][:2] = 0.0  # the bottom two layers are not in the seed's top four
    frame = factorization.probe_frame({("svd", 0.1): {"CoLA": res}})
    assert frame.loc[0, "method"] == "SVD" and frame.loc[0, "CoLA"] == pytest.approx(0.6)
    assert frame.loc[0, "CoLA selectivity"] == pytest.approx(0.1)
    assert factorization.probe_frame({("svd", 0.1): {"CoLA": res}}, layers=[0, 5]).loc[0, "CoLA"] == pytest.approx(0.3)


def test_mean_damage():
    frame = pd.DataFrame(
        {
            "method": ["none", "SVD", "SVD", "ASVD"],
            "ratio": [0, 0.1, 0.2, 0.1],
            "perplexity": [10.0, 20.0, 40.0, 10.0],
            "CoLA": [0.8, 0.7, 0.5, 0.8],
        }
    )
    log = factorization.mean_damage(frame, "perplexity", log=True)
    assert log["SVD"] == pytest.approx((math.log(2) + math.log(4)) / 2) and log["ASVD"] == pytest.approx(0.0)
    assert factorization.mean_damage(frame, "CoLA")["SVD"] == pytest.approx(0.2)
    drop = factorization.probe_damage(frame, ("CoLA",))
    assert drop.loc["SVD", "CoLA"] == pytest.approx(0.2)


def test_discordant_pairs_need_a_gap_beyond_margin_and_seed_spread():
    ppl = {"none": 10.0, "SVD": 40.0, "ASVD": 12.0, "FWSVD": 20.0}
    decoder, probes, grid = _grids(ppl, {"SVD": 0.5, "ASVD": 0.6, "FWSVD": 0.8})
    pairs = factorization.discordant_pairs(decoder, probes, grid)
    assert len(pairs) == 1 and pairs[0].startswith("CoLA: ASVD 10% has lower perplexity")
    # the same gap within twice the seeds' spread does not count
    decoder, probes, grid = _grids(ppl, {"SVD": 0.5, "ASVD": (0.4, 0.8), "FWSVD": 0.8})
    assert factorization.discordant_pairs(decoder, probes, grid) == []
    # nor does a gap under the margin
    decoder, probes, grid = _grids(ppl, {"SVD": 0.5, "ASVD": 0.77, "FWSVD": 0.8})
    assert factorization.discordant_pairs(decoder, probes, grid) == []


def test_verdicts_hold_where_the_grid_shows_the_seeds_claims():
    decoder, probes, grid = _grids(
        {"none": 10.0, "SVD": 40.0, "FWSVD": 20.0, "ASVD": 12.0, "SVD-LLM": 11.0},
        {"SVD": 0.5, "ASVD": 0.6, "FWSVD": 0.8},
    )
    v = factorization.verdicts(decoder, probes, grid)
    assert list(v["holds here"]) == [True, True, True]
    assert "SVD x4" in v.loc[0, "evidence (ours)"]


def test_verdicts_fail_where_the_grid_contradicts_them():
    # FWSVD collapses fastest, ASVD is worse than SVD, and the probes agree with perplexity
    decoder, probes, grid = _grids(
        {"none": 10.0, "SVD": 20.0, "FWSVD": 50.0, "ASVD": 30.0, "SVD-LLM": 11.0},
        {"SVD": 0.7, "FWSVD": 0.5, "ASVD": 0.6, "SVD-LLM": 0.8},
    )
    v = factorization.verdicts(decoder, probes, grid)
    assert list(v["holds here"]) == [False, False, False]
    assert v.loc[2, "evidence (ours)"].startswith("no pair")


def test_first_ratio_changes_and_seed_tables():
    decoder = pd.DataFrame(
        {
            "method": ["none", "SVD", "SVD"],
            "ratio": [0.0, 0.05, 0.1],
            "perplexity": [10.0, 20.0, 40.0],
            "fact mc acc": [0.8, 0.5, 0.3],
            "truthfulqa mc acc": [0.2, 0.25, 0.3],
            "fact recall": [1.0, 0.5, 0.1],
        }
    )
    (line,) = factorization.first_ratio_changes(decoder)
    assert line.startswith("SVD: at 5% removed, perplexity 10 -> 20, fact MC 0.80 -> 0.50")
    side = factorization.decoder_beside_seed(decoder, "tiny")
    assert side.loc[("SVD", 0.05), "seed: Llama-2-7B MMLU"] == 0.296
    assert side.loc[("SVD", 0.05), "ours: tiny fact MC"] == 0.5
    assert side.loc[("SVD", 0.0), "ours: perplexity"] == 10.0  # the uncompressed row at ratio 0
    assert pd.isna(side.loc[("SVD", 0.15), "ours: perplexity"])  # no such cell here
    t3 = factorization.seed_probe_table("bert_probes").set_index(["method", "ratio"])
    assert t3.loc[("SVD", 0.1), "CoLA"] == pytest.approx((0.765 + 0.77 + 0.774 + 0.765) / 4)
    probes = pd.DataFrame(
        {"method": ["none", "SVD"], "ratio": [0.0, 0.1], "CoLA": [0.9, 0.7], "CoLA control": [0.5, 0.55]}
    )
    cola = factorization.cola_beside_seed(probes, ["svd", "asvd"], "enc")
    assert cola.loc[("SVD", 0.1), "seed: BERT-base CoLA (Matthews corr.)"] == 0.384
    assert cola.loc[("SVD", 0.1), "ours: enc acceptability probe"] == 0.7
    assert cola.loc[("ASVD", 0.0), "ours: enc acceptability probe"] == 0.9  # the uncompressed row, per method
    assert pd.isna(cola.loc[("SVD", 0.2), "ours: its control"])  # the seed's ratio only


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
    smoke = factorization.factor_config_for("smoke")
    assert smoke.ratios == (0.35,) and smoke.decoder_layers == (0,)
    with pytest.raises(ValueError, match="profile"):
        factorization.factor_config_for("nonsense")
