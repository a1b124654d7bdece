"""analysis.data.mmlu_scoring: the stratified MMLU sample (on a fake MMLU) and the letter scoring (on a tiny model)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from datasets import Dataset

from analysis.data import benchmarks
from analysis.data import mmlu_scoring as mmlu


def _fake_mmlu(monkeypatch, per_subject: dict[str, int]):
    """Replace ``analysis.data.benchmarks.mmlu`` by ``per_subject`` questions per subject (answer k % 4)."""
    rows = [
        {"question": f"{s} question {k}?", "subject": s, "choices": [f"c{j}" for j in range(4)], "answer": k % 4,
         "id": f"test/{s}/{k}"}
        for s, n in per_subject.items()
        for k in range(n)
    ]  # fmt: skip
    monkeypatch.setattr(benchmarks, "mmlu", lambda split="test", subjects=None: Dataset.from_list(rows))


def test_mmlu_items_are_a_fixed_subject_stratified_sample(monkeypatch):
    _fake_mmlu(monkeypatch, {"anatomy": 10, "astronomy": 10, "virology": 3})
    items = mmlu.mmlu_items(7)
    counts = pd.Series([it["subject"] for it in items]).value_counts()
    assert (
        len(items) == 7
        and counts.max() - counts.min() <= 1
        and set(counts.index) == {"anatomy", "astronomy", "virology"}
    )
    assert items == mmlu.mmlu_items(7)  # deterministic
    assert [it["id"] for it in items] != [it["id"] for it in mmlu.mmlu_items(7, seed=1)]
    assert all(it["prompt"].endswith("Answer:") and it["answer"] == int(it["id"].split("/")[-1]) % 4 for it in items)
    assert len(mmlu.mmlu_items(None)) == 23
    with pytest.raises(ValueError, match="too few"):
        mmlu.mmlu_items(12)  # virology has 3, but 12 asks for 4 per subject


def test_letter_logits_pick_the_letters_after_the_prompt(tiny_model):
    """Right-padded batches give each prompt's last-position logits of the letters exactly as alone."""

    def to_tokens(text, prepend_bos=True):
        ids = [1 + ord(c) % 40 for c in text]
        return torch.tensor([[0] * prepend_bos + ids])

    tiny_model.to_tokens = to_tokens
    ids = mmlu.letter_ids(tiny_model)  # " A" is two characters here: the bare letter is used
    assert ids == [1 + ord(c) % 40 for c in "ABCD"]
    items = [
        {"prompt": "Q: sky?\nAnswer:", "answer": 1},
        {"prompt": "Q: a longer one here?\nAnswer:", "answer": 3},
        {"prompt": "Q: mid length?\nAnswer:", "answer": 0},
    ]
    assert [t.tolist() for t in mmlu.prompt_tokens(tiny_model, items)] == [
        to_tokens(it["prompt"])[0].tolist() for it in items
    ]
    got = mmlu.letter_logits(tiny_model, items, batch_size=2)
    for i, it in enumerate(items):
        with torch.no_grad():
            ref = tiny_model(to_tokens(it["prompt"]))[0, -1, ids]
        torch.testing.assert_close(got[i], ref, atol=1e-4, rtol=1e-4)
    hits = mmlu.mmlu_correct(tiny_model, items)
    assert hits == [int(got[i].argmax()) == it["answer"] for i, it in enumerate(items)]
    assert mmlu.answer_hits(got, items).tolist() == hits
    assert mmlu.mmlu_correct(tiny_model, []) == []


def test_letter_scores_are_the_unembedded_final_residual(tiny_model):
    """From the residual after the last block, the letters' logits are the model's own."""
    x = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    ids = [4, 9, 2, 30]
    with torch.no_grad():
        resid = tiny_model(x, stop_at_layer=tiny_model.cfg.n_layers)[:, -1]
        got = mmlu.letter_scores(tiny_model, resid, ids)
        ref = tiny_model(x)[:, -1, ids]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
