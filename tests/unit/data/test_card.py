"""Tests for analysis.data.card: the size of every set, as a dict and as a table."""

from __future__ import annotations

from analysis import data
from analysis.data import card


def test_summary_table_covers_every_dataset():
    table = card.summary()
    assert set(table["dataset"]) == {"lm_text", "facts", *data.TASKS}
    assert table["source"].notna().all()
    lm_words = table.loc[table["dataset"] == "lm_text", "words"].sum()
    assert lm_words >= 1_000_000
    assert sum(s["documents"] for s in card.sizes()["lm_text"].values()) == len(data.text.lm_documents())
    sizes = card.sizes()
    rows = dict(zip(table["dataset"] + "/" + table["split"], table["rows"]))
    assert rows["facts/"] == sizes["facts"]["rows"] == len(data.facts())
    assert rows["domain/"] == sizes["tasks"]["domain"]["rows"] == len(data.load_task("domain"))
    assert rows["lm_text/eval"] == sizes["lm_text"]["eval"]["documents"] == len(data.lm_text("eval"))


USED_ELSEWHERE = [
    "DATA_VERSION", "FACT_RELATIONS", "SENTIMENT_LABELS", "TASKS", "DOMAIN_LABELS",
    "document_token_ids", "facts", "fetch", "verify", "filter_known", "known_facts",
    "fact_splits", "fact_split", "known_share", "SPLIT_FRACTIONS", "FACT_TEMPLATES",
    "lm_text", "lm_tokens", "load_task", "mmlu", "mmlu_prompt", "sst2", "lambada", "sizes", "summary",
]  # fmt: skip
"""Names chapters, tests and other layers import from ``analysis.data`` itself."""


def test_package_exports_the_public_api():
    assert set(USED_ELSEWHERE) <= set(data.__all__)
    assert all(hasattr(data, name) for name in data.__all__)
    assert data.known_facts.__module__ == "analysis.data.knowledge"
    assert data.lm_tokens.__module__ == "analysis.data.text"
