"""Facts: (subject, relation, answers) from curated public sources, the screen for the ones a
model knows (ROME's *known facts*), and its split by purpose.

Whether compression keeps a model's knowledge is measured on facts it knew to begin with.
ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT") traces only
*known facts*: prompts whose greedy next token is the start of the right answer. The facts
here come from curated tables that ship inside packages (read by :mod:`analysis.data.fact_tables`):
GeoNames (countries, continents, cities), Unicode CLDR (official languages), a Wikidata
snapshot of films, Wikipedia's company infoboxes (``pytickersymbols``) and WordNet 3.0's
people. Each relation of :data:`FACT_RELATIONS` is asked in its own natural words
(:data:`FACT_TEMPLATES`, e.g. "<subject> is located in the continent of"), subject first, as
ROME's prompts do, so that the subject is followed by several tokens and ROME's "further
tokens" role occurs. Every relation keeps at most :data:`RELATION_CAP` facts, the best known
subjects first where the source ranks them, and no answer may take more than
:data:`MAX_ANSWER_SHARE` of a relation (so "always say English" cannot pass for knowledge).
:func:`facts` fixes one order, each relation shuffled with its own seed and then interleaved
round-robin, so that any prefix ``facts(n)`` is balanced across relations.

:func:`filter_known` keeps the facts a model completes correctly (first token of the target);
:func:`known_facts` is the project's one screen: the known facts among the first ``n_screen``,
cached once per model and per pool, so that every study traces, probes and compresses the same
facts. Data that chose anything must never also judge it, so :func:`fact_splits` divides the
known facts into disjoint purposes (:data:`SPLIT_FRACTIONS`): ``"score"`` facts build scores,
``"eval"`` facts judge compressed models. The split is stratified by relation and seeded, and
:func:`known_share` tabulates how many facts of each relation the model knows.
"""

from __future__ import annotations

import ast
import hashlib
import json
import pickle
import random
import re
import sqlite3
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from datasets import Dataset, Features, List, Value

from analysis.data.fact_tables import Fact, candidate_facts
from analysis.data.sources import check_n, parsed_cache, raw_dir
from analysis.evaluate import fact_recall
from analysis.config import get_profile
from analysis.cache import cached # torch and transformer_lens load only when needed
from analysis.models import model_key
import pandas as pd

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

FACT_TEMPLATES: dict[str, str] = {
    "capital": "{} has its capital in",
    "continent": "{} is located in the continent of",
    "currency": "{} pays in its official currency, the",
    "official language": "{} has as its official language",
    "city country": "{} is a city in the country of",
    "film language": "{} is a film whose original language is",
    "film country": "{} is a film produced in the country of",
    "film director": "{} is a film directed by",
    "headquarters": "{} has its headquarters in the city of",
    "nationality": "{} was a person whose nationality was",
    "occupation": "{} had the occupation of",
}
"""How each relation is asked, ``{}`` standing for the subject (verbatim).

Written once per relation from its meaning, in the manner of ROME's known-facts prompts
("... is located in the continent of"), before any model's answers were seen and not tuned
to them. Every template starts with the subject and has at least two words after it, so
ROME's token roles (last subject token, first subsequent token, further tokens, last token)
all occur; none ends in a space (the target carries it).
"""

FACT_RELATIONS: tuple[str, ...] = tuple(FACT_TEMPLATES)
"""The relations, in the round-robin order of :func:`facts`."""

FACT_SOURCES: dict[str, str] = {
    "capital": "geonames",
    "continent": "geonames",
    "currency": "geonames",
    "official language": "cldr",
    "city country": "geonames",
    "film language": "films",
    "film country": "films",
    "film director": "films",
    "headquarters": "tickers",
    "nationality": "wordnet",
    "occupation": "wordnet",
}
"""The raw source (folder under ``RAW_DIR``) behind each relation; the first part of its ids."""

RELATION_CAP = 2_000
"""At most this many facts per relation (the first of the source's ranking)."""
MAX_ANSWER_SHARE = 0.25
"""No first answer may take more than this share of a relation's facts."""

SPLIT_FRACTIONS: dict[str, float] = {"score": 0.4, "eval": 0.6}
"""The purposes the known facts are split into, and each one's share (per relation).

``"score"``: facts behind any score or choice (causal traces, the causal-tracing redundancy
score, anything fitted or selected). ``"eval"``: facts that judge a compressed or ablated
model (fact recall, fact multiple choice, head-ablation importance, budget comparisons).
"""

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


def fact_prompt(relation: str, subject: str) -> str:
    """The natural-language prompt for ``relation`` of ``subject`` (:data:`FACT_TEMPLATES`)."""
    if relation not in FACT_TEMPLATES:
        raise ValueError(f"Unknown relation {relation!r}; known: {', '.join(FACT_RELATIONS)}.")
    if not subject or not subject.strip():
        raise ValueError("The subject is empty; a fact prompt needs the subject's name.")
    return FACT_TEMPLATES[relation].format(subject)


# --------------------------------------------------------------------------------------
# The facts
# --------------------------------------------------------------------------------------


def _capped(candidates: list[Fact]) -> list[Fact]:
    """The first :data:`RELATION_CAP` candidates with distinct subjects, none of whose first answers
    takes more than :data:`MAX_ANSWER_SHARE` of the facts kept (the cap shrinks until it holds)."""
    size = RELATION_CAP
    while True:
        kept = _first_with_answer_limit(candidates, size, max(1, int(MAX_ANSWER_SHARE * size)))
        if len(kept) == size or not kept:
            return kept
        size = len(kept)


def _first_with_answer_limit(candidates: list[Fact], size: int, per_answer: int) -> list[Fact]:
    """Up to ``size`` candidates in order, one per subject, at most ``per_answer`` per first answer."""
    kept, subjects, answers = [], set(), Counter()
    for subject, accepted, key in candidates:
        if len(kept) == size:
            break
        if subject in subjects or answers[accepted[0]] >= per_answer:
            continue
        subjects.add(subject)
        answers[accepted[0]] += 1
        kept.append((subject, accepted, key))
    return kept


def _relation_rows(relation: str, candidates: list[Fact]) -> list[dict]:
    """One relation's facts as rows: capped, then shuffled with the relation's own seed."""
    rows = [
        {
            "subject": subject,
            "relation": relation,
            "prompt": fact_prompt(relation, subject),
            "target": " " + answers[0],
            "answers": answers,
            "id": f"{FACT_SOURCES[relation]}-{relation.replace(' ', '-')}-{key}",
        }
        for subject, answers, key in _capped(candidates)
    ]
    random.Random(f"facts-{relation}").shuffle(rows)
    return rows


def _interleave(groups: list[list[dict]]) -> list[dict]:
    """Round-robin over groups, so that every prefix is balanced across them."""
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out.extend(g[i] for g in groups if i < len(g))
        i += 1
    return out


def balanced(ds: Dataset, column: str = "relation") -> Dataset:
    """``ds`` reordered round-robin over the values of ``column`` (in order of first appearance,
    each group keeping its own order), so that every prefix is balanced across them: a screen of
    known facts keeps easy relations and drops hard ones, and a prefix of it is no longer balanced."""
    groups: dict = {}
    for i, value in enumerate(ds[column]):
        groups.setdefault(value, []).append(i)
    return ds.select(_interleave(list(groups.values())))


@parsed_cache(maxsize=4)
def _facts(raw: Path) -> Dataset:
    """All facts: each relation capped and shuffled, then interleaved round-robin."""
    candidates = candidate_facts()
    rows = _interleave([_relation_rows(r, candidates[r]) for r in FACT_RELATIONS])
    return Dataset.from_list(rows, features=FACT_SCHEMA)


def facts(n: int | None = None) -> Dataset:
    """Facts from curated sources (GeoNames, CLDR, Wikidata films, company infoboxes, WordNet),
    in a fixed relation-balanced order.

    Schema: ``subject`` (the prompt starts with it), ``relation``, ``prompt`` (the relation's
    :data:`FACT_TEMPLATES` phrasing, "France has its capital in"), ``target`` (" " + first
    accepted answer), ``answers`` (all accepted answers: the sources' own aliases), ``id``
    ("<source>-<relation>-<key>"). Any prefix of the order cycles through
    :data:`FACT_RELATIONS`, so ``facts(n)`` is balanced until the smallest relation runs out.
    """
    ds = _facts(raw_dir())
    check_n(n, len(ds), "facts")
    return ds if n is None else ds.select(range(n))


def pool_digest(pool: Dataset) -> str:
    """A sha256 over the facts' ids, prompts and answers: what a screen of ``pool`` depends on."""
    digest = hashlib.sha256()
    for fid, prompt, answers in zip(pool["id"], pool["prompt"], pool["answers"]):
        digest.update(json.dumps([fid, prompt, answers]).encode())
    return digest.hexdigest()


def filter_known(model: HookedTransformer, facts: Dataset, batch_size: int = 32) -> tuple[Dataset, dict]:
    """Keep the facts whose greedy next token after ``prompt`` is the first token of ``target``.

    Works with any TransformerLens ``HookedTransformer``; a fact with an empty prompt is a
    ``ValueError`` (there is nothing to complete). Returns the known facts (same
    schema) and ``{"n_total", "n_known", "known_fraction", "by_relation": {relation:
    [n_total, n_known]}}``.
    """
    if len(facts) == 0:
        raise ValueError("filter_known: no facts given")
    empty = [fid for fid, prompt in zip(facts["id"], facts["prompt"]) if not prompt or not prompt.strip()]
    if empty:
        raise ValueError(f"filter_known: {len(empty)} fact(s) have an empty prompt (first: {empty[0]!r}).")

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


KNOWN_FACTS_CACHE = "data/known_facts"
"""The one cache name of the known-fact screen, shared by every study."""
KNOWN_FACTS_VERSION = 3
"""Bumped when what the screen stores changes."""


def known_facts(
    model: HookedTransformer, n_screen: int, cache: bool = True, rule: str | None = None
) -> tuple[Dataset, dict]:
    """The facts among the first ``n_screen`` of :func:`facts` that the model knows.

    Returns ``(known Dataset, stats)`` as :func:`filter_known` does. ``rule`` is the profile's
    ``fact_screen`` (``"greedy"``, or ``"all"`` to keep every fact; None: the current profile's).
    With ``cache``, the known ids and the stats are stored under :data:`KNOWN_FACTS_CACHE`, keyed
    by ``n_screen``, the rule, :func:`pool_digest` of the screened facts (so facts read from other
    data never meet a stale screen) and :func:`analysis.models.model_key` (a hash of the weights),
    so a second call, from any study, reads them back.
    """

    rule = rule or get_profile().fact_screen
    if rule not in ("greedy", "all"):
        raise ValueError(f"Unknown fact screen {rule!r}: use 'greedy' (the book's) or 'all' (toy runs only).")
    pool = facts(n_screen)

    def screen() -> dict:
        if rule == "all":
            by_relation = {r: [n, n] for r, n in Counter(pool["relation"]).items()}
            stats = {"n_total": len(pool), "n_known": len(pool), "known_fraction": 1.0, "by_relation": by_relation}
            return {"ids": list(pool["id"]), "stats": stats}
        known, stats = filter_known(model, pool)
        return {"ids": list(known["id"]), "stats": stats}

    if cache:

        config = {"n_screen": n_screen, "pool": pool_digest(pool), "version": KNOWN_FACTS_VERSION}
        if rule != "greedy":  # the book's screen keeps its cache key
            config["rule"] = rule
        out = cached(KNOWN_FACTS_CACHE, screen, config=config, model=model_key(model))
    else:
        out = screen()
    wanted = set(out["ids"])
    return pool.select([i for i, fid in enumerate(pool["id"]) if fid in wanted]), out["stats"]


def split_by_purpose(known: Dataset, seed: int = 0) -> dict[str, Dataset]:
    """``known`` split into the disjoint purposes of :data:`SPLIT_FRACTIONS`, per relation.

    Within each relation the facts are ranked by a hash of ``(seed, id)`` and the first
    ``round(share * n)`` go to ``"score"``, the rest to ``"eval"``; so the split is exact per
    relation, the same in every process, and a fact's rank does not depend on which other
    facts were screened. Each split keeps ``known``'s order (so its prefixes stay balanced
    across relations), and together they hold every fact of ``known`` once.
    """

    if "id" not in known.column_names or "relation" not in known.column_names:
        raise ValueError("split_by_purpose needs facts with 'id' and 'relation' columns (from facts()).")
    ids, relations = list(known["id"]), list(known["relation"])
    if len(set(ids)) != len(ids):
        raise ValueError("split_by_purpose: the facts' ids repeat; pass each fact once.")

    def rank(i: int) -> str:
        return hashlib.sha256(f"fact-split-{seed}-{ids[i]}".encode()).hexdigest()

    by_relation: dict[str, list[int]] = {}
    for i, relation in enumerate(relations):
        by_relation.setdefault(relation, []).append(i)
    score: set[int] = set()
    for rows in by_relation.values():
        n_score = int(SPLIT_FRACTIONS["score"] * len(rows) + 0.5)
        score.update(sorted(rows, key=rank)[:n_score])
    return {
        "score": known.select(sorted(score)),
        "eval": known.select([i for i in range(len(known)) if i not in score]),
    }


def fact_splits(model: HookedTransformer, n_screen: int, seed: int = 0) -> dict[str, Dataset]:
    """The known facts among the first ``n_screen`` (:func:`known_facts`), split by purpose.

    Returns ``{"score": Dataset, "eval": Dataset}`` (schema of :func:`facts`): disjoint,
    stratified by relation with the shares of :data:`SPLIT_FRACTIONS` (40% score, 60% eval),
    seeded by ``seed`` (:func:`split_by_purpose`). ``"score"`` facts build anything that
    scores or chooses (causal traces, redundancy scores); ``"eval"`` facts judge a compressed
    or ablated model. The screen is the one cached :func:`known_facts` screen.
    """
    known, _ = known_facts(model, n_screen)  # under the current profile's fact_screen
    if len(known) == 0:
        raise ValueError(
            f"The model knows none of the first {n_screen} facts, so there is nothing to split; "
            "screen more facts (a larger n_screen)."
        )
    return split_by_purpose(known, seed)


def fact_split(model: HookedTransformer, n_screen: int, purpose: str, seed: int = 0) -> Dataset:
    """One purpose's facts (``"score"`` or ``"eval"``) of :func:`fact_splits`."""
    if purpose not in SPLIT_FRACTIONS:
        raise ValueError(f"Unknown purpose {purpose!r}; the fact splits are: {', '.join(SPLIT_FRACTIONS)}.")
    return fact_splits(model, n_screen, seed)[purpose]


def known_share(stats: dict) -> pd.DataFrame:
    """Screened / known / share per relation from a screen's ``stats`` (:func:`filter_known`).

    One row per relation of :data:`FACT_RELATIONS` that was screened, in that order, then
    ``"all"``; columns ``screened``, ``known`` (ints) and ``share`` (known / screened).
    """

    if "by_relation" not in stats:
        raise ValueError("known_share needs the stats of known_facts() or filter_known() (with 'by_relation').")
    by_relation = stats["by_relation"]
    order = [r for r in FACT_RELATIONS if r in by_relation] + sorted(set(by_relation) - set(FACT_RELATIONS))
    rows = {r: by_relation[r] for r in order}
    rows["all"] = [sum(v[0] for v in rows.values()), sum(v[1] for v in rows.values())]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=["screened", "known"]).astype(int)
    frame["share"] = frame["known"] / frame["screened"]
    frame.index.name = "relation"
    return frame
