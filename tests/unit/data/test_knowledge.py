"""Tests for analysis.data.knowledge: the facts, ``filter_known``, the known-fact screen and its
split by purpose."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import analysis.cache
from analysis.data import fact_tables, knowledge, sources


def test_facts_size_and_relations():
    fs = knowledge.facts()
    counts = Counter(fs["relation"])
    assert set(counts) == set(knowledge.FACT_RELATIONS) and len(counts) >= 8
    assert all(200 <= n <= knowledge.RELATION_CAP for n in counts.values()), counts
    assert len(set(fs["id"])) == len(fs) == len(set(zip(fs["relation"], fs["subject"])))


def test_facts_are_well_formed():
    for row in knowledge.facts():
        assert row["subject"].strip() and row["prompt"].startswith(row["subject"])
        assert row["prompt"] == knowledge.FACT_TEMPLATES[row["relation"]].replace("{}", row["subject"])
        assert row["target"].startswith(" ") and not row["target"].startswith("  ")
        assert row["answers"] and all(a == a.strip() and a for a in row["answers"])
        assert row["target"][1:] == row["answers"][0] and len(set(row["answers"])) == len(row["answers"])
        source, _, _ = row["id"].partition("-")
        assert source == knowledge.FACT_SOURCES[row["relation"]] and " " not in row["id"]


def test_no_answer_dominates_a_relation():
    """No first answer takes over a quarter of a relation ("always say English" is no knowledge)."""
    fs = knowledge.facts()
    counts = Counter(fs["relation"])
    for (relation, _), n in Counter(zip(fs["relation"], fs["target"])).items():
        assert n <= max(1, int(knowledge.MAX_ANSWER_SHARE * counts[relation])), relation


def _fact(relation: str, subject: str) -> dict:
    """The one fact of ``relation`` about ``subject``."""
    fs = knowledge.facts()
    (row,) = [r for r, s, rel in zip(fs, fs["subject"], fs["relation"]) if s == subject and rel == relation]
    return row


@pytest.mark.parametrize(
    ("relation", "subject", "answer"),
    [
        ("capital", "France", "Paris"),
        ("capital", "Japan", "Tokyo"),
        ("continent", "Japan", "Asia"),
        ("continent", "Brazil", "South America"),
        ("currency", "Japan", "yen"),
        ("official language", "France", "French"),
        ("official language", "Switzerland", "Italian"),
        ("film director", "Jaws", "Steven Spielberg"),
        ("headquarters", "Microsoft", "Redmond"),
    ],
)
def test_facts_agree_with_independent_knowledge(relation, subject, answer):
    assert answer in _fact(relation, subject)["answers"]


def test_spot_checks_of_the_larger_relations():
    """Facts any encyclopedia confirms, where the capped relations keep the subject."""
    fs = knowledge.facts()
    pairs = {(rel, s): answers for rel, s, answers in zip(fs["relation"], fs["subject"], fs["answers"])}
    checks = [
        ("city country", "Tokyo", "Japan"), ("city country", "Kyiv", "Ukraine"),
        ("nationality", "Wolfgang Amadeus Mozart", "Austrian"), ("occupation", "Wolfgang Amadeus Mozart", "composer"),
        ("film language", "Amélie", "French"), ("film country", "Amélie", "France"),
    ]  # fmt: skip
    found = [(rel, s, a) for rel, s, a in checks if (rel, s) in pairs]
    assert len(found) >= 3, found
    for rel, s, a in found:
        assert a in pairs[(rel, s)], (rel, s, pairs[(rel, s)])


def test_no_mythological_or_fictional_people():
    fs = knowledge.facts()
    people = {s for s, r in zip(fs["subject"], fs["relation"]) if r in ("nationality", "occupation")}
    assert people and not people & {"Zeus", "Apollo", "Hercules", "Sherlock Holmes", "Odin", "Thor"}


def test_templates_start_with_the_subject_and_have_tokens_after_it():
    """Every relation has one template; the prompt starts with the subject, verbatim, followed by
    at least two words (so ROME's first-subsequent and further-token roles both occur)."""
    assert set(knowledge.FACT_TEMPLATES) == set(knowledge.FACT_RELATIONS) == set(knowledge.FACT_SOURCES)
    subject = "Zq Xw Subject"
    for relation, template in knowledge.FACT_TEMPLATES.items():
        prompt = knowledge.fact_prompt(relation, subject)
        assert template.startswith("{}") and template.count("{}") == 1 and prompt.count(subject) == 1
        assert len(prompt[len(subject) :].replace("'s", " 's").split()) >= 3, relation
        assert not prompt.endswith(" ")  # the target carries the space
    with pytest.raises(ValueError, match="Unknown relation"):
        knowledge.fact_prompt("genre", subject)
    for empty in ("", "  "):
        with pytest.raises(ValueError, match="subject is empty"):
            knowledge.fact_prompt("capital", empty)


def test_templates_put_several_tokens_after_the_subject_for_byte_level_bpe():
    """Byte-level BPE (GPT-2's, and SmolLM2's) never merges across its pre-tokenizer's pieces, so
    these pieces bound the tokens: for every fact at least two pieces follow the subject (the
    first subsequent and a further token), and for nearly all a piece ends where the subject does."""
    from tokenizers import pre_tokenizers

    pieces = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    split = 0
    fs = knowledge.facts()
    for prompt, subject in zip(fs["prompt"], fs["subject"]):
        end = len(subject)
        spans = [span for _, span in pieces.pre_tokenize_str(prompt)]
        assert sum(a >= end for a, _ in spans) >= 2, prompt
        split += any(b == end for _, b in spans)
    assert split >= 0.99 * len(fs)


def test_facts_order_is_fixed_and_balanced():
    n_relations = len(knowledge.FACT_RELATIONS)
    first = knowledge.facts(4 * n_relations)
    assert Counter(first["relation"]) == {r: 4 for r in knowledge.FACT_RELATIONS}
    smallest = min(Counter(knowledge.facts()["relation"]).values())
    prefix = Counter(knowledge.facts(smallest * n_relations)["relation"])
    assert set(prefix.values()) == {smallest}  # balanced until the smallest relation runs out
    sources.clear_parsed()
    assert knowledge.facts()["id"][: 4 * n_relations] == first["id"]  # a fresh parse
    with pytest.raises(ValueError):
        knowledge.facts(0)
    with pytest.raises(ValueError):
        knowledge.facts(10**6)


def test_cldr_pickles_load_without_running_code(tmp_path):
    """Babel's classes become inert stand-ins; anything else in a pickle is refused."""
    import pickle

    assert "FR" in fact_tables._cldr("global.dat")["territory_languages"]
    assert fact_tables._cldr("en.dat")["territories"]["FR"] == "France"
    evil = pickle.dumps(print)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        fact_tables._CldrUnpickler(__import__("io").BytesIO(evil)).load()


@pytest.fixture(scope="module")
def fact_model_for(tiny_cfg, word_tokenizer):
    """``fact_model_for(fs, answer=None)``: a 1-layer random HookedTransformer over the facts' words;
    with ``answer``, a model whose every next-token prediction is that word (a large unembedding
    bias), so it "knows" exactly the facts whose target starts with it."""
    from transformer_lens import HookedTransformer

    def make(fs, answer: str | None = None) -> HookedTransformer:
        words = " ".join(list(fs["prompt"]) + list(fs["target"])).split()
        tok = word_tokenizer(words)
        cfg = tiny_cfg(n_layers=1, d_model=16, d_head=4, d_vocab=len(tok.get_vocab()))
        model = HookedTransformer(cfg, tokenizer=tok).eval()
        if answer is not None:
            with torch.no_grad():
                model.b_U[tok.convert_tokens_to_ids(answer)] = 1e4
        return model

    return make


@pytest.fixture(scope="module")
def fact_model(fact_model_for):
    """A 1-layer random HookedTransformer over the words of the first 30 facts."""
    fs = knowledge.facts(30)
    return fact_model_for(fs), fs


@pytest.mark.parametrize("tokenizer_side", ["right", "left"])
def test_greedy_prediction_ignores_padding(fact_model, monkeypatch, tokenizer_side):
    """Batched predictions equal one-prompt-at-a-time ones, whatever the tokenizer's side."""
    model, fs = fact_model
    monkeypatch.setattr(model.tokenizer, "padding_side", tokenizer_side)
    prompts = fs["prompt"][:9]
    assert len({len(p.split()) for p in prompts}) > 1  # lengths differ, so padding happens
    from analysis.forward import next_token_predictions

    batched = next_token_predictions(model, prompts, batch_size=9).argmax(-1)
    one_by_one = torch.cat([next_token_predictions(model, [p]).argmax(-1) for p in prompts])
    assert torch.equal(batched, one_by_one)
    logits = model(model.to_tokens(prompts[0], prepend_bos=True))[0, -1]
    assert batched[0] == logits.argmax()


def test_filter_known_keeps_exactly_the_correct_facts(fact_model, monkeypatch):
    model, fs = fact_model
    fake = torch.tensor([i % 3 == 0 for i in range(len(fs))])
    monkeypatch.setattr(knowledge, "fact_recall", lambda model, prompts, targets, batch_size: fake)
    known, stats = knowledge.filter_known(model, fs, batch_size=4)
    assert known["id"] == fs["id"][::3]
    assert stats["n_total"] == 30 and stats["n_known"] == 10
    assert sum(k for _, k in stats["by_relation"].values()) == 10


def test_filter_known_runs_on_a_real_model(fact_model):
    model, fs = fact_model
    known, stats = knowledge.filter_known(model, fs, batch_size=7)
    assert stats["n_total"] == len(fs) and 0 <= stats["n_known"] == len(known) <= len(fs)
    assert known.features == fs.features


def test_filter_known_rejects_an_empty_prompt(fact_model):
    model, fs = fact_model
    blank = fs.select(range(3)).map(lambda row, i: {"prompt": "" if i == 1 else row["prompt"]}, with_indices=True)
    with pytest.raises(ValueError, match="empty prompt"):
        knowledge.filter_known(model, blank)
    with pytest.raises(ValueError, match="no facts"):
        knowledge.filter_known(model, fs.select([]))


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


def test_known_facts_are_the_facts_filter_known_keeps(fact_model_for, answers, cache_dir):
    fs, word, _ = answers
    model = fact_model_for(fs, answer=word)
    known, stats = knowledge.known_facts(model, N_SCREEN)
    reference, ref_stats = knowledge.filter_known(model, knowledge.facts(N_SCREEN))
    assert known["id"] == reference["id"] == _starting_with(fs, word)
    assert len(known) >= 2 and stats == ref_stats and stats["n_total"] == N_SCREEN
    assert known.features == fs.features and known[:] == reference[:]


def test_known_facts_second_call_is_a_cache_hit(fact_model_for, answers, cache_dir, monkeypatch):
    fs, word, _ = answers
    model = fact_model_for(fs, answer=word)
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


def test_known_facts_cache_key_sees_the_screened_facts(fact_model_for, answers, cache_dir, monkeypatch):
    """Facts read from other data, with the cache kept, are screened again, never read back stale."""
    fs, word, _ = answers
    model = fact_model_for(fs, answer=word)
    calls = _counting_filter(monkeypatch)
    first, _ = knowledge.known_facts(model, N_SCREEN)
    other = knowledge.facts(2 * N_SCREEN).select(range(N_SCREEN, 2 * N_SCREEN))  # another pool, same size
    assert knowledge.pool_digest(other) != knowledge.pool_digest(fs)
    monkeypatch.setattr(knowledge, "facts", lambda n=None: other)
    second, _ = knowledge.known_facts(model, N_SCREEN)
    assert calls == [N_SCREEN, N_SCREEN]  # the same n_screen, but a new screen
    assert set(second["id"]) <= set(other["id"]) and set(first["id"]) <= set(fs["id"])
    assert len(list((cache_dir / knowledge.KNOWN_FACTS_CACHE).glob("*.pt"))) == 2


def test_pool_digest_covers_ids_prompts_and_answers(answers):
    fs, _, _ = answers
    small = fs.select(range(3))
    digest = knowledge.pool_digest(small)
    assert digest == knowledge.pool_digest(fs.select(range(3))) and len(digest) == 64
    for column, value in (("id", "x"), ("prompt", "x y z"), ("answers", ["x"])):
        changed = small.map(lambda row, i: {column: value if i == 0 else row[column]}, with_indices=True)
        assert knowledge.pool_digest(changed) != digest, column


def test_known_facts_are_cached_by_weights_not_by_name(fact_model_for, answers, cache_dir):
    fs, a, b = answers
    model_a = fact_model_for(fs, answer=a)
    model_b = fact_model_for(fs, answer=b)
    assert model_a.cfg.model_name == model_b.cfg.model_name
    known_a, _ = knowledge.known_facts(model_a, N_SCREEN)
    known_b, _ = knowledge.known_facts(model_b, N_SCREEN)
    assert known_a["id"] == _starting_with(fs, a)
    assert known_b["id"] == _starting_with(fs, b)
    assert set(known_a["id"]).isdisjoint(known_b["id"])
    assert len(list((cache_dir / knowledge.KNOWN_FACTS_CACHE).glob("*.pt"))) == 2


# ---------------------------------------------------------------------------------------
# fact_splits: the known facts split by purpose
# ---------------------------------------------------------------------------------------


def _pool():
    """Facts standing in for a screen's known facts: 600 of them, every third dropped."""
    fs = knowledge.facts(600)
    return fs.select([i for i in range(len(fs)) if i % 3])


@pytest.fixture(scope="module")
def pool():
    return _pool()


def ids(facts) -> list[str]:
    """The facts' ids as a list."""
    return list(facts["id"])


def test_splits_are_disjoint_and_cover_every_fact_in_order(pool):
    split = knowledge.split_by_purpose(pool)
    assert set(split) == set(knowledge.SPLIT_FRACTIONS) == {"score", "eval"}
    score, evals = ids(split["score"]), ids(split["eval"])
    assert set(score).isdisjoint(evals) and sorted(score + evals) == sorted(ids(pool))
    position = {fid: i for i, fid in enumerate(ids(pool))}
    for part in (score, evals):
        assert [position[f] for f in part] == sorted(position[f] for f in part)  # the pool's order
    assert split["eval"].features == pool.features


def test_splits_are_stratified_by_relation(pool):
    split = knowledge.split_by_purpose(pool)
    n = Counter(pool["relation"])
    n_score = Counter(split["score"]["relation"])
    assert set(n) == set(knowledge.FACT_RELATIONS)
    for relation, total in n.items():
        assert abs(n_score[relation] - knowledge.SPLIT_FRACTIONS["score"] * total) <= 0.5, relation
    assert sum(knowledge.SPLIT_FRACTIONS.values()) == pytest.approx(1.0)


def test_splits_are_deterministic_and_seeded(pool):
    first = knowledge.split_by_purpose(pool, seed=0)
    sources.clear_parsed()
    again = knowledge.split_by_purpose(_pool(), seed=0)  # from a fresh parse
    assert ids(again["score"]) == ids(first["score"]) and ids(again["eval"]) == ids(first["eval"])
    other = knowledge.split_by_purpose(pool, seed=1)
    assert ids(other["score"]) != ids(first["score"])
    assert Counter(other["score"]["relation"]) == Counter(first["score"]["relation"])  # same strata


def test_split_of_a_fact_does_not_depend_on_the_others_in_a_relation(pool):
    """Facts ranked by a per-fact hash: dropping the last-ranked eval facts of a relation moves
    no other fact between purposes while the score count of that relation stays the same."""
    split = knowledge.split_by_purpose(pool)
    score, every = set(ids(split["score"])), ids(pool)
    relation = pool["relation"][0]
    rows = [i for i, r in enumerate(pool["relation"]) if r == relation]
    in_score = [i for i in rows if every[i] in score]
    # keep the relation's score facts and the fewest eval facts that keep round(0.4 n) the same
    n_keep = next(n for n in range(len(in_score), len(rows) + 1) if int(0.4 * n + 0.5) == len(in_score))
    evals = [i for i in rows if every[i] not in score][: n_keep - len(in_score)]
    smaller = knowledge.split_by_purpose(pool.select(sorted(in_score + evals)))
    assert set(ids(smaller["score"])) == {every[i] for i in in_score}


def test_split_by_purpose_rejects_bad_input(pool):
    with pytest.raises(ValueError, match="ids repeat"):
        knowledge.split_by_purpose(concatenate([pool.select(range(3)), pool.select(range(3))]))
    with pytest.raises(ValueError, match="'id' and 'relation'"):
        knowledge.split_by_purpose(pool.remove_columns("relation"))


def concatenate(parts):
    from datasets import concatenate_datasets

    return concatenate_datasets(parts)


def test_fact_splits_split_the_one_cached_screen(fact_model_for, answers, cache_dir, monkeypatch):
    fs, word, _ = answers
    model = fact_model_for(fs, answer=word)
    calls = _counting_filter(monkeypatch)
    evals = knowledge.fact_split(model, N_SCREEN, "eval")  # one purpose asked for first
    splits = knowledge.fact_splits(model, N_SCREEN)
    score = knowledge.fact_split(model, N_SCREEN, "score")
    assert calls == [N_SCREEN]  # one screen for every purpose
    assert evals[:] == splits["eval"][:] and score[:] == splits["score"][:]
    known, _ = knowledge.known_facts(model, N_SCREEN)
    assert sorted(ids(score) + ids(evals)) == sorted(ids(known)) == sorted(_starting_with(fs, word))
    assert ids(splits["score"]) == ids(knowledge.split_by_purpose(known)["score"])
    assert ids(knowledge.fact_splits(model, N_SCREEN, seed=3)["eval"]) == ids(
        knowledge.split_by_purpose(known, 3)["eval"]
    )


def test_fact_splits_reject_bad_input(fact_model_for, answers, cache_dir):
    fs, word, _ = answers
    model = fact_model_for(fs, answer=word)
    with pytest.raises(ValueError, match="asked for 0"):
        knowledge.fact_splits(model, 0)
    with pytest.raises(ValueError, match="but only"):
        knowledge.fact_splits(model, 10**6)
    with pytest.raises(ValueError, match="Unknown purpose 'train'"):
        knowledge.fact_split(model, N_SCREEN, "train")
    nobody = fact_model_for(fs, answer="<pad>")  # predicts padding, knows nothing
    with pytest.raises(ValueError, match="knows none"):
        knowledge.fact_splits(nobody, N_SCREEN)


def test_known_share_tabulates_the_screen():
    stats = {"n_total": 9, "n_known": 3, "by_relation": {"religion": [4, 1], "capital": [5, 2]}}
    table = knowledge.known_share(stats)
    assert list(table.index) == ["capital", "religion", "all"]  # FACT_RELATIONS order, then all
    assert table.loc["capital"].tolist() == [5, 2, 0.4] and table.loc["religion", "share"] == 0.25
    assert table.loc["all", "screened"] == 9 and table.loc["all", "known"] == 3
    assert table.loc["all", "share"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="by_relation"):
        knowledge.known_share({"n_total": 9})


def test_every_profile_screens_a_valid_number_of_facts():
    """``Profile.n_facts`` is the one screen's size: it must fit the pool, and grow with scale."""
    from analysis.config import PROFILES

    sizes = {name: p.n_facts for name, p in PROFILES.items()}
    assert all(1 <= n <= len(knowledge.facts()) for n in sizes.values()), sizes
    assert sizes["smoke"] < sizes["cpu"] <= sizes["gpu"]


def test_the_all_rule_keeps_every_fact_under_its_own_cache_key(fact_model_for, answers, cache_dir, monkeypatch):
    fs, word, _ = answers
    model = fact_model_for(fs, answer=word)
    calls = _counting_filter(monkeypatch)
    greedy, _ = knowledge.known_facts(model, N_SCREEN, rule="greedy")
    every, stats = knowledge.known_facts(model, N_SCREEN, rule="all")
    assert len(greedy) < len(every) == N_SCREEN and every["id"] == knowledge.facts(N_SCREEN)["id"]
    assert stats["known_fraction"] == 1.0 and sum(n for n, _ in stats["by_relation"].values()) == N_SCREEN
    assert calls == [N_SCREEN]  # "all" runs no screen, and did not read the greedy entry
    assert knowledge.known_facts(model, N_SCREEN, rule="greedy")[0]["id"] == greedy["id"]
    with pytest.raises(ValueError, match="Unknown fact screen"):
        knowledge.known_facts(model, N_SCREEN, rule="top5")


def test_balanced_puts_every_relation_in_a_short_prefix():
    from datasets import Dataset

    rel = ["a"] * 6 + ["b"] * 3 + ["c"] * 1  # a screen that kept many easy facts and few hard ones
    ds = Dataset.from_dict({"id": list(range(10)), "relation": rel})
    out = knowledge.balanced(ds)
    assert out["relation"][:3] == ["a", "b", "c"] and sorted(out["id"]) == list(range(10))
    assert [i for i, r in zip(out["id"], out["relation"]) if r == "a"] == [0, 1, 2, 3, 4, 5]  # order kept inside
    assert out["relation"] == ["a", "b", "c", "a", "b", "a", "b", "a", "a", "a"]
