"""Probing tasks and control tasks: the seed's tasks as ours, Hewitt & Liang's control labels, and
splits that keep a group (a minimal pair, one question's answers) on one side.

The idea of probing and of controls is in :mod:`analysis.probing`."""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Sequence

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Value
from torch import Tensor

from analysis.data import benchmarks, load_task

PROBE_TASKS: dict[str, tuple[str, str]] = {
    "SST-2": ("sst2", "sentiment: the SST-2 validation sentences (Socher et al. 2013), negative or positive"),
    "TruthfulQA": (
        "mmlu_answer",
        "truth of an answer: an MMLU test question with its correct or one wrong choice "
        "(TruthfulQA itself ships nowhere here)",
    ),
}
"""The seed's probing tasks -> (our task for :func:`load_probe_task`, what it really is). The seed's third
task, CoLA (acceptability), has no row: neither CoLA nor its former stand-in (Linzen et al.'s
agreement pairs) ships anywhere these machines can reach."""

MMLU_ANSWER_LABELS = ["false", "true"]
MMLU_ANSWER_MAX_CHARS = 400
"""Longest question-plus-choice text kept in ``mmlu_answer``: a decoder's probe reads the last token,
which must be the answer's, not one cut off at :func:`hidden_states`' ``max_len``."""


def mmlu_answer_task(split: str = "test", seed: int = 0):
    """``mmlu_answer``: each MMLU question of ``split`` as two rows, ``"Q: <question>\nA: <choice>"`` with its
    correct choice (label ``true``) and one wrong choice drawn with ``seed`` (``false``); grouped by question.

    Questions whose question-plus-choice text exceeds :data:`MMLU_ANSWER_MAX_CHARS` characters are left out.
    Schema as :func:`analysis.data.load_task`'s (``text``, ``label``, ``task``, ``group``)."""

    rows = []
    for q in benchmarks.mmlu(split):
        texts = [f"Q: {q['question'].strip()}\nA: {str(c).strip()}" for c in q["choices"]]
        if max(len(t) for t in texts) > MMLU_ANSWER_MAX_CHARS:
            continue
        wrong = random.Random(f"{seed}-{q['id']}").choice([i for i in range(len(texts)) if i != q["answer"]])
        rows += [
            {"text": texts[q["answer"]], "label": 1, "group": str(q["id"])},
            {"text": texts[wrong], "label": 0, "group": str(q["id"])},
        ]
    features = Features(
        {"text": Value("string"), "label": ClassLabel(names=MMLU_ANSWER_LABELS), "task": Value("string"),
         "group": Value("string")}
    )  # fmt: skip
    cols = {k: [r[k] for r in rows] for k in ("text", "label", "group")}
    return Dataset.from_dict({**cols, "task": ["mmlu_answer"] * len(rows)}, features=features)


def load_probe_task(name: str, n: int | None = None, seed: int = 0):
    """A probing task by name: ``"mmlu_answer"`` (:func:`mmlu_answer_task`; ``n`` rows = ``n // 2`` whole
    questions drawn with ``seed``), else :func:`analysis.data.load_task`."""

    if name != "mmlu_answer":
        return load_task(name, n=n, seed=seed)
    ds = mmlu_answer_task()
    if n is None:
        return ds
    if not 2 <= n <= len(ds):
        raise ValueError(f"load_probe_task('mmlu_answer'): n must be in [2, {len(ds)}], got {n}.")
    groups = sorted(set(ds["group"][:]))
    keep = set(np.random.default_rng(seed).permutation(groups)[: n // 2].tolist())
    return ds.select([i for i, g in enumerate(ds["group"][:]) if g in keep])


# --------------------------------------------------------------------------------------
# Control tasks and splits
# --------------------------------------------------------------------------------------

_WORD = re.compile(r"[\w']+")


def frequent_words(texts: Sequence[str], k: int = 20) -> set[str]:
    """The ``k`` most frequent lowercased word types over ``texts`` (ties broken alphabetically)."""
    counts = Counter(w for t in texts for w in _WORD.findall(t.lower()))
    return {w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]}


def word_type(text: str, by: str = "last_word", vocab: set[str] | None = None) -> str:
    """The *type* a control label is assigned to: the text's last or first word, lowercased, or with
    ``by="frequent_word"`` its last word that is in ``vocab`` ("" when none is)."""
    words = _WORD.findall(text.lower())
    if by == "frequent_word":
        if vocab is None:
            raise ValueError("word_type(by='frequent_word') needs vocab (see frequent_words).")
        words = [w for w in words if w in vocab]
    elif by not in ("last_word", "first_word"):
        raise ValueError(f"Unknown control type {by!r}; use 'frequent_word', 'last_word' or 'first_word'.")
    if not words:
        return ""
    return words[0] if by == "first_word" else words[-1]


def text_types(texts: Sequence[str], by: str = "frequent_word", vocab_size: int = 20) -> list[str]:
    """:func:`word_type` of every text (for ``"frequent_word"``, against the texts' own frequent words)."""
    vocab = frequent_words(texts, vocab_size) if by == "frequent_word" else None
    return [word_type(t, by, vocab) for t in texts]


def control_labels(
    texts: Sequence[str], labels: Sequence[int], by: str = "frequent_word", seed: int = 0, vocab_size: int = 20
) -> Tensor:
    """Hewitt & Liang's control task: each type gets one random label, drawn from the label distribution."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    kinds = text_types(texts, by, vocab_size)
    types = sorted(set(kinds))
    draw = dict(zip(types, rng.choice(classes, size=len(types), p=counts / counts.sum())))
    return torch.tensor([int(draw[k]) for k in kinds])


def type_coverage(types: Sequence[str], train_idx: Sequence[int], test_idx: Sequence[int]) -> float:
    """Share of test rows whose control type also occurs among the training rows."""
    seen = {types[int(i)] for i in train_idx}
    test = [types[int(i)] for i in test_idx]
    return float(np.mean([t in seen for t in test])) if test else float("nan")


def group_split(groups: Sequence[str], train_frac: float = 0.8, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Row indices ``(train, test)``: whole groups in shuffled order until ``train_frac`` of the rows."""
    if not 0 < train_frac < 1:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}.")
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    train, target = [], train_frac * len(groups)
    k = 0
    while k < len(uniq) and len(train) + len(members[uniq[k]]) <= target:
        train.extend(members[uniq[k]])
        k += 1
    test = [i for g in uniq[k:] for i in members[g]]
    if not train or not test:
        raise ValueError(f"Cannot split {len(groups)} rows in {len(uniq)} groups {train_frac:.0%}/rest.")
    return torch.tensor(sorted(train)), torch.tensor(sorted(test))


def group_folds(groups: Sequence[str], k: int, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """``k`` ``(train, test)`` splits whose test parts partition the rows, whole groups per fold.

    Groups are shuffled with ``seed`` and dealt, largest first, to the fold with the fewest rows.
    """
    if k < 2:
        raise ValueError(f"group_folds needs k >= 2 folds, got {k}.")
    uniq = sorted(set(groups))
    if len(uniq) < k:
        raise ValueError(f"Cannot make {k} folds from {len(uniq)} groups.")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    uniq.sort(key=lambda g: -len(members[g]))  # stable: shuffled order within equal sizes
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in uniq:
        min(folds, key=len).extend(members[g])
    every = set(range(len(groups)))
    return [(torch.tensor(sorted(every - set(f))), torch.tensor(sorted(f))) for f in folds]
