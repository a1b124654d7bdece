"""Tests for analysis.data.text: sources, cleaning, splits and tokens of the LM text."""

from __future__ import annotations

import bz2
import io
from collections import Counter

import pytest
import torch
from datasets import Dataset

from analysis.data import sources, text


def test_lm_text_is_large_enough_for_the_unigram_line():
    words = {s: sum(len(t.split()) for t in text.lm_text(s)["text"]) for s in text.LM_SPLITS}
    assert words["train"] >= 750_000  # about 1.36 SmolLM2 tokens a word: over 1 M train tokens
    assert words["eval"] >= 200_000 and words["calib"] >= 100_000


def test_every_source_contributes_to_every_split():
    for split in text.LM_SPLITS:
        counts = Counter(text.lm_text(split)["source"])
        assert set(counts) == set(text.LM_SOURCES), (split, counts)


def test_lm_splits_are_disjoint_by_title_across_packages():
    """The same article (a lead section and the full article) never straddles two splits."""
    titles = {s: {text.normalise_title(t) for t in text.lm_text(s)["title"]} for s in text.LM_SPLITS}
    for a, b in [("eval", "calib"), ("eval", "train"), ("calib", "train")]:
        assert not titles[a] & titles[b]
    by_title: dict[str, set[str]] = {}
    for doc in text.lm_documents():
        by_title.setdefault(text.normalise_title(doc.title), set()).add(doc.source)
    shared = [t for t, s in by_title.items() if len(s) > 1]
    assert len(shared) >= 20  # the packages do overlap, so splitting by title matters
    total = sum(len(text.lm_text(s)) for s in text.LM_SPLITS)
    assert total == len(text.lm_documents())


def test_split_shares_follow_lm_splits():
    n = {s: len(text.lm_text(s)) for s in text.LM_SPLITS}
    total = sum(n.values())
    for split, (lo, hi) in text.LM_SPLITS.items():
        assert n[split] / total == pytest.approx((hi - lo) / 100, rel=0.1)


def test_lm_splits_are_deterministic():
    docs, ids = text.lm_documents(), text.lm_text("eval")["id"]
    sources.clear_parsed()
    fresh = text.lm_documents()
    assert fresh is not docs and fresh == docs  # a fresh parse, same result
    assert text.lm_text("eval")["id"] == ids
    # pinned: the split of a title is a SHA-256 bucket of the normalised title, the same everywhere
    assert [text.lm_split_of(t) for t in ("Water", "water", "Albedo", "Autism")] == ["eval", "eval", "calib", "train"]


def test_lm_text_schema_and_minimum_length():
    ds = text.lm_text("calib")
    assert set(ds.column_names) == {"text", "source", "id", "title"}
    assert all(len(t.split()) >= text.MIN_WORDS for t in ds["text"])
    assert len(set(ds["id"])) == len(ds)


def test_clean_wikitext_removes_markup_and_keeps_prose():
    raw = (
        "{{Infobox person|name=X {{nested|a}}}}\n'''Ada''' was a [[mathematician]] and [[writer|author]]."
        "<ref>{{cite book|title=T}}</ref> She wrote [http://example.org notes]&nbsp;on it.<!-- hidden -->\n"
        "[[File:Ada.jpg|thumb|A [[portrait]]]]\n{| class=wikitable\n|-\n| cell\n|}\n"
        "== Life ==\n* She lived in [[London]].\n== References ==\n* A book\n[[Category:People]]"
    )
    out = text.clean_wikitext(raw)
    assert out == "Ada was a mathematician and author. She wrote notes on it.\n\nLife\n\nShe lived in London."


def test_dump_pages_keep_articles_only():
    page = "<page><title>{t}</title><ns>{ns}</ns>{redirect}<revision><text>{body}</text></revision></page>"
    xml = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">'
        + page.format(t="A", ns=0, redirect="", body="Body of A")
        + page.format(t="Talk:A", ns=1, redirect="", body="talk")
        + page.format(t="B", ns=0, redirect='<redirect title="A" />', body="#REDIRECT [[A]]")
        + "</mediawiki>"
    )
    stream = io.BytesIO(bz2.decompress(bz2.compress(xml.encode())))
    assert list(text.dump_pages(stream)) == [("A", "Body of A")]


def test_extractor_documents_drop_the_title_line():
    raw = '<doc id="1" url="u" title="A &amp; B">\nA & B\n\nFirst line.\nSecond.\n</doc>\n<doc id="2" title="C">\nC\n</doc>'
    assert list(text.extractor_documents(raw)) == [("A & B", "First line.\n\nSecond."), ("C", "")]


def test_real_sources_parse_as_documented():
    counts = Counter(d.source for d in text.lm_documents())
    assert counts["wiki_summaries"] > 7000 and counts["wiki_articles"] > 550 and counts["wiki_dump"] > 90
    dump = {d.title: d.text for d in text.lm_documents() if d.source == "wiki_dump"}
    assert dump["Autism"].startswith("Autism is a neurodevelopmental disorder")
    assert not any(mark in t for t in dump.values() for mark in ("{{", "[[", "'''", "<ref"))


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


def test_split_token_counts_match_lm_tokens(word_tokenizer):
    docs = text.lm_text("calib")["text"][:]
    tok = word_tokenizer(" ".join(docs).split())
    counts = text.split_token_counts(tok)
    assert counts["calib"] == sum(len(d.split()) + 2 for d in docs)
    assert text.lm_tokens(tok, "calib", counts["calib"]).shape == (counts["calib"],)
    with pytest.raises(ValueError, match="only"):
        text.lm_tokens(tok, "calib", counts["calib"] + 1)


def test_lm_tokens_rejects_bad_sizes(monkeypatch, word_tokenizer):
    tok = word_tokenizer(["the"])
    with pytest.raises(ValueError):
        text.lm_tokens(tok, "calib", 0)
    with pytest.raises(ValueError, match="only"):
        text.lm_tokens(tok, "calib", 10**9)
    empty = Dataset.from_dict({"text": [], "source": [], "id": []})
    monkeypatch.setattr(text, "lm_text", lambda split, source="packaged": empty)
    with pytest.raises(ValueError, match="no documents"):
        text.lm_tokens(tok, "calib", 10)
