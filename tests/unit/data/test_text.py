"""Tests for analysis.data.text: sizes, splits, languages and tokens of the LM text."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from analysis.data import sources, text


def test_lm_text_has_a_million_words():
    words = {s: sum(len(t.split()) for t in text.lm_text(s)["text"]) for s in text.LM_SPLITS}
    assert sum(words.values()) >= 1_000_000
    assert words["eval"] >= 200_000 and words["calib"] >= 100_000


def test_lm_splits_are_disjoint_and_cover_the_english_block():
    ids = {s: set(text.lm_text(s)["id"]) for s in text.LM_SPLITS}
    texts = {s: set(text.lm_text(s)["text"]) for s in text.LM_SPLITS}
    for a, b in [("eval", "calib"), ("eval", "train"), ("calib", "train")]:
        assert not ids[a] & ids[b]
        assert not texts[a] & texts[b]
    assert sum(map(len, ids.values())) == 1000  # the English block, all kept


def test_lm_splits_are_deterministic():
    docs, ids = text.ps_documents(), text.lm_text("eval")["id"]
    sources.clear_parsed()
    fresh = text.ps_documents()
    assert fresh is not docs and fresh == docs  # a fresh parse, same result
    assert text.lm_text("eval")["id"] == ids
    # pinned: the split of an id is a SHA-256 bucket, the same on every machine
    assert [text.lm_split_of(f"ps-{i}") for i in (1000, 1001, 1002)] == ["train", "train", "calib"]


def test_lm_text_schema_and_language():
    ds = text.lm_text("calib")
    assert set(ds.column_names) == {"text", "source", "id"}
    assert all(text.guess_language(t) == "en" for t in ds["text"])
    assert all(t.strip() for t in ds["text"])


def test_stopword_guess_agrees_with_block_languages():
    check = text.language_agreement()
    assert check["n_documents"] == 9000
    assert check["n_agree"] >= 0.99 * 9000
    assert check["n_english_kept"] == 1000


def test_guess_language_on_known_sentences():
    assert text.guess_language("The cat sat on the mat and it was happy with the rest of it.") == "en"
    assert text.guess_language("Der Hund und die Katze sind nicht in dem Haus.") == "de"
    assert text.guess_language("Кошка сидит на окне и смотрит на улицу.") == "ru"
    assert text.guess_language("") == "unknown"


def test_lm_text_rejects_unknown_split_and_source():
    with pytest.raises(ValueError):
        text.lm_text("test")
    with pytest.raises(ValueError):
        text.lm_text("eval", source="pile")


def test_wikitext_offline_error_is_clear(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(text.datasets, "load_dataset", unreachable)
    sources.clear_parsed()
    with pytest.raises(ConnectionError, match="wikitext-2-raw-v1"):
        text.lm_text("eval", source="wikitext")


def test_wikitext_lines_group_into_articles():
    lines = [" = A = \n", " text a \n", " = = Sub = = \n", " more a \n", " = B = \n", " text b \n"]
    articles = text.wikitext_articles(lines)
    assert len(articles) == 2
    assert articles[0].startswith("= A =") and "Sub" in articles[0] and "text b" in articles[1]


def test_lm_tokens_concatenates_documents_with_bos_eos(word_tokenizer):
    docs = text.lm_text("calib")["text"][:2]
    tok = word_tokenizer(" ".join(docs).split())
    n_first = len(docs[0].split())
    ids = text.lm_tokens(tok, "calib", n_first + 5)
    assert ids.dtype == torch.long and ids.shape == (n_first + 5,)
    assert ids[0] == tok.bos_token_id
    assert ids[n_first + 1] == tok.eos_token_id and ids[n_first + 2] == tok.bos_token_id
    assert torch.equal(ids, text.lm_tokens(tok, "calib", n_first + 5))
    assert ids[: n_first + 2].tolist() == text.document_token_ids(tok, docs[0])


def test_lm_tokens_rejects_bad_sizes(monkeypatch, word_tokenizer):
    tok = word_tokenizer(["the"])
    with pytest.raises(ValueError):
        text.lm_tokens(tok, "calib", 0)
    with pytest.raises(ValueError, match="only"):
        text.lm_tokens(tok, "calib", 10**9)
    empty = Dataset.from_dict({"text": [], "source": [], "id": []})
    monkeypatch.setattr(text, "lm_text", lambda split, source="bigbench": empty)
    with pytest.raises(ValueError, match="no documents"):
        text.lm_tokens(tok, "calib", 10)
