"""Tests for analysis.data.tasks: schema, classes, groups, sampling and the checks of every task."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

from analysis.data import benchmarks, tasks

BALANCED = {"sentiment", "domain", "language_id", "code_language"}
ONE_LABEL_PER_GROUP = {"sst2", "domain", "code_language", "profession"}
MARKERS = {  # frequent function words that exist in one of the three languages only
    "en": {"the", "and", "is", "was", "of", "in"},
    "es": {"el", "los", "las", "y", "es", "fue", "del"},
    "fr": {"le", "les", "et", "est", "des", "du", "une"},
}


def test_the_tasks():
    assert list(tasks.TASKS) == ["sentiment", "sst2", "domain", "language_id", "code_language", "profession"]


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_task_schema_and_classes(name):
    ds = tasks.load_task(name)
    names = ds.features["label"].names
    counts = Counter(ds["label"])
    assert set(ds.column_names) == {"text", "label", "task", "group"}
    assert len(names) >= 2 and set(counts) == set(range(len(names)))
    assert set(ds["task"]) == {name}
    assert all(t.strip() for t in ds["text"])
    if name in BALANCED:
        assert len(set(counts.values())) == 1, counts


@pytest.mark.parametrize("name", sorted(ONE_LABEL_PER_GROUP))
def test_groups_never_span_two_labels(name):
    ds = tasks.load_task(name)
    labels_of = defaultdict(set)
    for group, label in zip(ds["group"], ds["label"]):
        labels_of[group].add(label)
    assert all(len(labels) == 1 for labels in labels_of.values())


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_load_task_sampling(name):
    full = tasks.load_task(name)
    ds = tasks.load_task(name, n=40, seed=0)
    assert len(ds) == 40
    assert ds["text"] == tasks.load_task(name, n=40, seed=0)["text"]
    assert ds["text"] != tasks.load_task(name, n=40, seed=1)["text"]
    share = Counter(full["label"])
    for label, k in Counter(ds["label"]).items():  # class proportions kept (+-1)
        assert abs(k - 40 * share[label] / len(full)) <= 1


@pytest.mark.parametrize("gone", ["topic", "agreement", "truthfulqa_mc", "cola"])
def test_unknown_tasks_are_named(gone):
    with pytest.raises(ValueError, match="Unknown task '.*'; known tasks: sentiment, sst2, domain"):
        tasks.load_task(gone)


@pytest.mark.parametrize("n", [0, -1, 10**6])
def test_load_task_rejects_bad_n(n):
    with pytest.raises(ValueError, match=r"load_task\('sst2'\): asked for"):
        tasks.load_task("sst2", n=n)


def test_sst2_task_is_the_benchmark_split():
    ds, bench = tasks.load_task("sst2"), benchmarks.sst2()
    assert ds.features["label"].names == ["negative", "positive"]
    assert Counter(ds["label"]) == {1: 444, 0: 428}
    assert ds["text"] == [s.strip() for s in bench["sentence"]] and ds["label"] == bench["label"]
    assert ds[0]["text"] == "it 's a charming and often affecting journey ." and ds[0]["group"] == "sst2-0"


def test_domain_draws_each_label_from_its_source():
    ds = tasks.load_task("domain")
    names = ds.features["label"].names
    assert names == ["wikipedia", "film_review", "code", "exam_question", "book_passage"]
    assert len(set(ds["text"])) == len(ds) >= 5 * 1_500
    by_label = defaultdict(list)
    for row in ds:
        by_label[names[row["label"]]].append(row)
    questions = {q.strip() for q in benchmarks.mmlu()["question"]}
    assert all(r["text"] in questions and r["group"].startswith("mmlu:test/") for r in by_label["exam_question"])
    passages = {c + t for c, t in zip(benchmarks.lambada()["context"], benchmarks.lambada()["target"])}
    assert all(r["text"] in passages and r["group"].startswith("lambada:") for r in by_label["book_passage"])
    snippets = set(tasks.load_task("code_language")["text"])
    assert all(r["text"] in snippets for r in by_label["code"])
    reviews = set(tasks.load_task("sentiment")["text"])
    assert all(r["text"] in reviews and r["group"].startswith("movie:") for r in by_label["film_review"])
    assert all(r["group"].startswith("wiki:") for r in by_label["wikipedia"])


def _folded_words(text: str) -> set[str]:
    return set(re.findall(r"\w+", tasks._fold(text)))


def test_language_id_labels_match_the_text():
    ds = tasks.load_task("language_id")
    names = ds.features["label"].names
    assert names == ["en", "es", "fr"]
    guesses = [max(MARKERS, key=lambda lang: len(MARKERS[lang] & _folded_words(t))) for t in ds["text"]]
    agree = sum(g == names[k] for g, k in zip(guesses, ds["label"]))
    assert agree >= 0.97 * len(ds)


def test_language_id_groups_one_article_across_languages():
    ds = tasks.load_task("language_id")
    rows_of = defaultdict(list)
    for row in ds:
        rows_of[row["group"]].append(row)
    shared = {g: rows for g, rows in rows_of.items() if len({r["label"] for r in rows}) > 1}
    assert sum(len(rows) == 3 for rows in shared.values()) >= 300 and len(shared) >= 1_500
    repeated = [g for g, rows in rows_of.items() if len({r["label"] for r in rows}) < len(rows)]
    assert len(repeated) <= 0.001 * len(rows_of)  # two leads of one language matched to one title: rare
    # the same article: the title's last word (a name, usually) is in most of its texts
    named = [(g.removeprefix("wiki:").split()[-1], rows) for g, rows in shared.items()]
    hits = [tasks._fold(word) in tasks._fold(r["text"]) for word, rows in named for r in rows]
    assert sum(hits) >= 0.7 * len(hits)


def test_language_id_keeps_the_first_three_sentences():
    text = "J. R. R. Tolkien was a writer. He wrote (c. 1937) The Hobbit! Was it good? Yes. Very."
    assert (
        tasks._first_sentences(text, 3) == "J. R. R. Tolkien was a writer. He wrote (c. 1937) The Hobbit! Was it good?"
    )
    french = "César (100 av. J.-C. – 44 av. J.-C.) est un général. Il naît à Rome. Il meurt en 44. Fin."
    assert tasks._first_sentences(french, 2) == "César (100 av. J.-C. – 44 av. J.-C.) est un général. Il naît à Rome."
    assert tasks._first_sentences("Una frase sola, en 1990. y nada más", 3) == "Una frase sola, en 1990. y nada más"
    lengths = Counter(len(t.split()) for t in tasks.load_task("language_id")["text"])
    assert min(lengths) >= tasks.MIN_LEAD_WORDS


def test_profession_word_is_masked():
    ds = tasks.load_task("profession")
    names = ds.features["label"].names
    for t, label in zip(ds["text"], ds["label"]):
        assert not re.search(rf"\b{names[label]}s?\b", t, flags=re.I), t
    assert sum(tasks.MASK in t for t in ds["text"]) > 0.5 * len(ds)


def test_sentiment_texts_are_unique():
    texts = tasks.load_task("sentiment")["text"]
    assert len(set(texts)) == len(texts)


def test_code_snippets_have_fixed_length():
    ds = tasks.load_task("code_language")
    assert all(len(t.split("\n")) == tasks.SNIPPET_LINES for t in ds["text"])
