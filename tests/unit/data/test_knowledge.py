"""Tests for analysis.data.knowledge: the facts, ``filter_known`` and the known-fact screen."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import analysis.cache
from analysis.data import knowledge, sources


def test_facts_size_and_relations():
    fs = knowledge.facts()
    counts = Counter(fs["relation"])
    assert len(fs) >= 500 and len(counts) >= 4
    assert set(counts) == set(knowledge.FACT_RELATIONS)
    assert len(set(fs["id"])) == len(fs) == len(set(fs["prompt"]))


def test_facts_are_well_formed():
    for row in knowledge.facts():
        assert row["subject"] and row["subject"] in row["prompt"]
        assert row["prompt"] == f"The {row['relation']} of {row['subject']} is"
        assert row["target"].startswith(" ") and not row["target"].startswith("  ")
        assert row["target"][1:] == row["answers"][0]


def test_facts_order_is_fixed_and_balanced():
    first = knowledge.facts(40)
    assert Counter(first["relation"]) == {r: 4 for r in knowledge.FACT_RELATIONS}
    sources.clear_parsed()
    assert knowledge.facts()["id"][:40] == first["id"]  # a fresh parse
    with pytest.raises(ValueError):
        knowledge.facts(0)
    with pytest.raises(ValueError):
        knowledge.facts(10**6)


def test_parse_fact_prompt():
    assert knowledge.parse_fact_prompt("The country of citizenship of A. D. Hope is") == (
        "country of citizenship",
        "A. D. Hope",
    )
    assert knowledge.parse_fact_prompt("The capital of Republic of Ireland is") == (
        "capital",
        "Republic of Ireland",
    )
    assert knowledge.parse_fact_prompt("Aargau is located in") is None
    assert knowledge.parse_fact_prompt("The genre of Nirvana is") is None


def _fact_model(word_tokenizer, fs, answer: str | None = None):
    """A 1-layer random HookedTransformer over the facts' words; with ``answer``, a model whose
    every next-token prediction is that word (a large unembedding bias), so it "knows" exactly
    the facts whose target starts with it."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    words = " ".join(list(fs["prompt"]) + list(fs["target"])).split()
    tok = word_tokenizer(words)
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=16, n_ctx=64, d_head=4, n_heads=4, d_vocab=len(tok.get_vocab()),
        act_fn="gelu", seed=0,
    )  # fmt: skip
    model = HookedTransformer(cfg, tokenizer=tok).eval()
    if answer is not None:
        with torch.no_grad():
            model.b_U[tok.convert_tokens_to_ids(answer)] = 1e4
    return model


@pytest.fixture(scope="module")
def fact_model(word_tokenizer):
    """A 1-layer random HookedTransformer over the words of the first 30 facts."""
    fs = knowledge.facts(30)
    return _fact_model(word_tokenizer, fs), fs


@pytest.mark.parametrize("tokenizer_side", ["right", "left"])
def test_greedy_prediction_ignores_padding(fact_model, monkeypatch, tokenizer_side):
    """Batched predictions equal one-prompt-at-a-time ones, whatever the tokenizer's side."""
    model, fs = fact_model
    monkeypatch.setattr(model.tokenizer, "padding_side", tokenizer_side)
    prompts = fs["prompt"][:9]
    assert len({len(p.split()) for p in prompts}) > 1  # lengths differ, so padding happens
    from analysis.evaluate import next_token_predictions

    batched = next_token_predictions(model, prompts, batch_size=9).argmax(-1)
    one_by_one = torch.cat([next_token_predictions(model, [p]).argmax(-1) for p in prompts])
    assert torch.equal(batched, one_by_one)
    logits = model(model.to_tokens(prompts[0], prepend_bos=True))[0, -1]
    assert batched[0] == logits.argmax()


def test_filter_known_keeps_exactly_the_correct_facts(fact_model, monkeypatch):
    model, fs = fact_model
    import analysis.evaluate as E

    fake = torch.tensor([i % 3 == 0 for i in range(len(fs))])
    monkeypatch.setattr(E, "fact_recall", lambda model, prompts, targets, batch_size: fake)
    known, stats = knowledge.filter_known(model, fs, batch_size=4)
    assert known["id"] == fs["id"][::3]
    assert stats["n_total"] == 30 and stats["n_known"] == 10
    assert sum(k for _, k in stats["by_relation"].values()) == 10


def test_filter_known_runs_on_a_real_model(fact_model):
    model, fs = fact_model
    known, stats = knowledge.filter_known(model, fs, batch_size=7)
    assert stats["n_total"] == len(fs) and 0 <= stats["n_known"] == len(known) <= len(fs)
    assert known.features == fs.features


# ---------------------------------------------------------------------------------------
# known_facts: the one known-fact screen
# ---------------------------------------------------------------------------------------

N_SCREEN = 30


@pytest.fixture()
def cache_dir(monkeypatch, tmp_path):
    """An empty result cache for this test."""
    monkeypatch.setattr(analysis.cache, "CACHE_DIR", tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def answers():
    """The two most frequent first words of the first facts' targets, and the facts."""
    fs = knowledge.facts(N_SCREEN)
    (a, _), (b, _) = Counter(t.split()[0] for t in fs["target"]).most_common(2)
    return fs, a, b


def _starting_with(fs, word: str) -> list[str]:
    """Ids of the facts whose target's first word is ``word`` (the independent reference)."""
    return [fid for fid, t in zip(fs["id"], fs["target"]) if t.split()[0] == word]


def _counting_filter(monkeypatch) -> list:
    """Count the calls known_facts makes to filter_known (the expensive screen)."""
    calls, real = [], knowledge.filter_known

    def counted(model, facts, *args, **kwargs):
        calls.append(len(facts))
        return real(model, facts, *args, **kwargs)

    monkeypatch.setattr(knowledge, "filter_known", counted)
    return calls


def test_known_facts_are_the_facts_filter_known_keeps(word_tokenizer, answers, cache_dir):
    fs, word, _ = answers
    model = _fact_model(word_tokenizer, fs, answer=word)
    known, stats = knowledge.known_facts(model, N_SCREEN)
    reference, ref_stats = knowledge.filter_known(model, knowledge.facts(N_SCREEN))
    assert known["id"] == reference["id"] == _starting_with(fs, word)
    assert len(known) >= 2 and stats == ref_stats and stats["n_total"] == N_SCREEN
    assert known.features == fs.features and known[:] == reference[:]


def test_known_facts_second_call_is_a_cache_hit(word_tokenizer, answers, cache_dir, monkeypatch):
    fs, word, _ = answers
    model = _fact_model(word_tokenizer, fs, answer=word)
    calls = _counting_filter(monkeypatch)
    first = knowledge.known_facts(model, N_SCREEN)
    second = knowledge.known_facts(model, N_SCREEN)
    assert calls == [N_SCREEN]  # screened once
    assert first[0]["id"] == second[0]["id"] and first[1] == second[1]
    assert len(list((cache_dir / knowledge.KNOWN_FACTS_CACHE).glob("*.pt"))) == 1
    knowledge.known_facts(model, N_SCREEN, cache=False)
    assert calls == [N_SCREEN, N_SCREEN]  # cache=False screens again
    knowledge.known_facts(model, N_SCREEN - 10)
    assert calls == [N_SCREEN, N_SCREEN, N_SCREEN - 10]  # another n_screen, another entry


def test_known_facts_are_cached_by_weights_not_by_name(word_tokenizer, answers, cache_dir):
    fs, a, b = answers
    model_a = _fact_model(word_tokenizer, fs, answer=a)
    model_b = _fact_model(word_tokenizer, fs, answer=b)
    assert model_a.cfg.model_name == model_b.cfg.model_name
    known_a, _ = knowledge.known_facts(model_a, N_SCREEN)
    known_b, _ = knowledge.known_facts(model_b, N_SCREEN)
    assert known_a["id"] == _starting_with(fs, a)
    assert known_b["id"] == _starting_with(fs, b)
    assert set(known_a["id"]).isdisjoint(known_b["id"])
    assert len(list((cache_dir / knowledge.KNOWN_FACTS_CACHE).glob("*.pt"))) == 2
