"""Language-modelling text: English prose for perplexity and calibration, as documents or tokens.

Perplexity and every calibration-based compression need running English prose. The packaged
default is the Wikipedia articles of BIG-bench ``paragraph_segmentation``: 9,000 documents in
9 contiguous blocks of 1,000, one language per block. A document is kept as English when it
lies in the English block *and* a stopword guess (:func:`guess_language`) agrees; each kept
document falls into a split by a SHA-256 hash of its id (:data:`LM_SPLITS`: eval 20 %, calib
10 %, train 70 %), so the splits are disjoint at the document level and identical on every
machine. :func:`lm_text` returns the documents of a split; ``source="wikitext"`` loads
WikiText-2 raw (Merity et al. 2016) from the Hugging Face Hub instead, where it is reachable.
:func:`lm_tokens` turns a split into one token stream: each document wrapped in the
tokenizer's BOS/EOS, concatenated in order, cut at ``n_tokens``.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import datasets
from datasets import Dataset, Features, Value

from analysis.data.sources import bigbench_examples, parsed_cache, raw_dir

if TYPE_CHECKING:
    import torch
    from jaxtyping import Int


PS_LANGUAGES: tuple[str, ...] = ("de", "en", "es", "fr", "it", "nl", "pl", "pt", "ru")
"""Languages of BIG-bench paragraph_segmentation's 9 contiguous blocks of 1,000 documents."""
PS_BLOCK = 1000

_STOPWORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "the of and to in is was that for with as by on are from his it",
        "de": "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine",
        "fr": "le la les de des et en un une du est dans que pour qui sur par au",
        "es": "el la de que y en los del se las por un para con una es al",
        "it": "il di che e la per un in del della è le una con non dei sono",
        "pt": "o a de que e do da em um para com uma os no na se por não",
        "nl": "de het een en van in is dat op te zijn voor met die niet aan",
        "pl": "i w na z się do nie że to jest o jak przez od po oraz",
    }.items()
}
_CYRILLIC = re.compile(r"[а-яё]+")

LM_SPLITS: dict[str, tuple[int, int]] = {"eval": (0, 20), "calib": (20, 30), "train": (30, 100)}
"""Split -> bucket range of ``sha256(doc id) % 100``: 20 % eval, 10 % calib, 70 % train."""

LM_SCHEMA = Features({"text": Value("string"), "source": Value("string"), "id": Value("string")})


GUESS_CHARS = 3000
"""Characters from the start of a text that :func:`guess_language` reads."""


def guess_language(text: str) -> str:
    """Stopword guess of a text's language (one of :data:`PS_LANGUAGES`; Cyrillic -> "ru")."""
    lower = text[:GUESS_CHARS].lower()
    words = re.findall(r"\w+", lower)
    if not words:
        return "unknown"
    if sum(map(len, _CYRILLIC.findall(lower))) > 0.3 * sum(map(len, words)):  # letter share
        return "ru"
    counts = Counter(words)
    scores = {lang: sum(counts[w] for w in stop) for lang, stop in _STOPWORDS.items()}
    return max(scores, key=scores.__getitem__)


def _ps_document(example: dict) -> str:
    """A paragraph_segmentation document as prose: one blank line between paragraphs."""
    sentences = example["input"].rstrip("\n").split("\n")
    ends = example["target"].split()
    paragraphs, current = [], []
    for sentence, end in zip(sentences, ends, strict=True):
        current.append(sentence.strip())
        if end == "1":
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


class PSDocument(NamedTuple):
    """One paragraph_segmentation document."""

    id: str
    block: str
    """Language of the block of 1,000 documents it sits in (the label)."""
    guess: str
    """:func:`guess_language` of its text (the check)."""
    text: str
    """Sentences joined, paragraphs separated by a blank line."""
    lead: str
    """Its first :data:`LEAD_SENTENCES` sentences (the language_id example)."""


LEAD_SENTENCES = 3


@parsed_cache(maxsize=4)
def _ps_documents(raw: Path) -> tuple[PSDocument, ...]:
    """All 9,000 paragraph_segmentation documents, in file order."""
    examples = bigbench_examples("paragraph_segmentation/task.json")
    if len(examples) != PS_BLOCK * len(PS_LANGUAGES):
        raise ValueError(f"paragraph_segmentation: expected 9,000 documents, got {len(examples)}")
    docs = []
    for i, example in enumerate(examples):
        text = _ps_document(example)
        lead = " ".join(s.strip() for s in example["input"].strip().split("\n")[:LEAD_SENTENCES])
        block = PS_LANGUAGES[i // PS_BLOCK]
        docs.append(PSDocument(f"ps-{i:04d}", block, guess_language(text), text, lead))
    return tuple(docs)


def ps_documents() -> tuple[PSDocument, ...]:
    """All 9,000 paragraph_segmentation documents, in file order (parsed once per fetch)."""
    return _ps_documents(raw_dir())


def language_agreement() -> dict[str, int]:
    """How often the stopword guess agrees with the block language (the label check)."""
    docs = ps_documents()
    agree = sum(d.block == d.guess for d in docs)
    english_guess = sum(d.guess == "en" for d in docs)
    english_both = sum(d.block == d.guess == "en" for d in docs)
    return {
        "n_documents": len(docs),
        "n_agree": agree,
        "n_guessed_english": english_guess,
        "n_english_kept": english_both,
    }


def _bucket(key: str, buckets: int = 100) -> int:
    """A stable bucket in ``[0, buckets)`` from a string's SHA-256 (same on every machine)."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) % buckets


def lm_split_of(doc_id: str) -> str:
    """The LM split a document id belongs to (fixed by a hash of the id)."""
    bucket = _bucket(doc_id)
    for split, (lo, hi) in LM_SPLITS.items():
        if lo <= bucket < hi:
            return split
    raise AssertionError(bucket)


@parsed_cache(maxsize=8)
def _bigbench_lm_text(raw: Path, split: str) -> Dataset:
    """English paragraph_segmentation documents of one split (block and stopword guess agree)."""
    rows = [
        {"text": d.text, "source": "bigbench/paragraph_segmentation", "id": d.id}
        for d in _ps_documents(raw)
        if d.block == d.guess == "en" and lm_split_of(d.id) == split
    ]
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
            "lm_text(split) with source='bigbench'."
        ) from err
    articles = wikitext_articles(ds["text"])
    rows = [
        {"text": t, "source": "wikitext-2-raw-v1", "id": f"wikitext-{split}-{i:04d}"} for i, t in enumerate(articles)
    ]
    return Dataset.from_list(rows, features=LM_SCHEMA)


def lm_text(split: str = "eval", source: str = "bigbench") -> Dataset:
    """English documents of one split. Schema: ``text`` (one document), ``source``, ``id``.

    ``source="bigbench"`` (default): Wikipedia articles from BIG-bench paragraph_segmentation,
    split by a hash of the document id (eval 20 %, calib 10 %, train 70 %; disjoint).
    ``source="wikitext"``: WikiText-2 raw from the Hub (eval=test, calib=validation).
    """
    if split not in LM_SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {list(LM_SPLITS)}")
    if source == "bigbench":
        return _bigbench_lm_text(raw_dir(), split)
    if source == "wikitext":
        return _wikitext_lm_text(split)
    raise ValueError(f"Unknown LM text source {source!r}; choose 'bigbench' or 'wikitext'")


def document_token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of one document wrapped in the tokenizer's BOS/EOS (each if it has one)."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    prefix = [bos] if bos is not None else []
    suffix = [eos] if eos is not None and eos != bos else []
    return prefix + list(ids) + suffix


def lm_tokens(
    tokenizer, split: str = "eval", n_tokens: int = 16_384, source: str = "bigbench"
) -> Int[torch.Tensor, " n_tokens"]:
    """The first ``n_tokens`` tokens of a split's documents, concatenated in order.

    Each document is preceded by BOS and followed by EOS where the tokenizer has them
    (once when they are the same token). ``tokenizer`` is a Hugging Face tokenizer or any
    object with a ``.tokenizer`` attribute holding one (e.g. a ``HookedTransformer``).
    Raises ``ValueError`` if ``n_tokens < 1`` or the split holds fewer tokens.
    """
    import torch

    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    docs = lm_text(split, source)["text"][:]
    if not docs:
        raise ValueError(f"lm_tokens({split!r}): the split has no documents")
    if n_tokens < 1:
        raise ValueError(f"lm_tokens({split!r}): n_tokens must be positive, got {n_tokens}")
    ids: list[int] = []
    for text in docs:
        ids.extend(document_token_ids(tokenizer, text))
        if len(ids) >= n_tokens:
            return torch.tensor(ids[:n_tokens], dtype=torch.long)
    raise ValueError(f"lm_tokens({split!r}): asked for {n_tokens} tokens, but the split has only {len(ids)}")
