"""Tests for analysis.data.tasks: schema, classes, sampling and the checks of every task."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from analysis.data import tasks, text

BALANCED = {"sentiment", "topic", "language_id", "code_language", "agreement", "truthfulqa_mc"}


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


def test_load_task_rejects_bad_requests():
    with pytest.raises(ValueError, match="Unknown task"):
        tasks.load_task("cola")
    with pytest.raises(ValueError):
        tasks.load_task("agreement", n=0)
    with pytest.raises(ValueError):
        tasks.load_task("agreement", n=10**6)


def test_agreement_rows_are_minimal_pairs():
    ds = tasks.load_task("agreement")
    pairs: dict[str, list] = {}
    for row in ds:
        pairs.setdefault(row["group"], []).append(row)
    assert len(pairs) == 499
    for a, b in pairs.values():
        assert {a["label"], b["label"]} == {0, 1} and a["text"] != b["text"]


def test_profession_word_is_masked():
    ds = tasks.load_task("profession")
    names = ds.features["label"].names
    for t, label in zip(ds["text"], ds["label"]):
        assert not re.search(rf"\b{names[label]}s?\b", t, flags=re.I), t
    assert sum(tasks.MASK in t for t in ds["text"]) > 0.5 * len(ds)


def test_language_id_labels_match_the_text():
    ds = tasks.load_task("language_id")
    names = ds.features["label"].names
    agree = sum(text.guess_language(t) == names[k] for t, k in zip(ds["text"], ds["label"]))
    assert agree >= 0.98 * len(ds)


def test_sentiment_and_topic_texts_are_unique():
    for name in ("sentiment", "topic"):
        texts = tasks.load_task(name)["text"]
        assert len(set(texts)) == len(texts)


def test_code_snippets_have_fixed_length():
    ds = tasks.load_task("code_language")
    assert all(len(t.split("\n")) == tasks.SNIPPET_LINES for t in ds["text"])


def test_truthfulqa_has_one_true_and_one_false_answer_per_question():
    ds = tasks.load_task("truthfulqa_mc")
    by_question = Counter((g, k) for g, k in zip(ds["group"], ds["label"]))
    assert len(ds) == 2 * 299 and set(by_question.values()) == {1}
