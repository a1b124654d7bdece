"""Facts: Wikidata prompts, and the screen for the ones a model knows (ROME's *known facts*).

Whether compression keeps a model's knowledge is measured on facts it knew to begin with.
ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT") traces only
*known facts*: prompts whose greedy next token is the start of the right answer. The prompts
here come from BIG-bench ``qa_wikidata``: the ones of the form "The <relation> of <subject>
is" for the ten relations of :data:`FACT_RELATIONS`, one row per distinct prompt (duplicate
prompts merge their accepted answers). :func:`facts` fixes one order, each relation shuffled
with its own seed and then interleaved round-robin, so that any prefix ``facts(n)`` is
balanced across relations. :func:`filter_known` keeps the facts a model completes correctly
(first token of the target); :func:`known_facts` is the project's one screen: the known
facts among the first ``n_screen``, cached once per model so that every study traces,
probes and compresses the same facts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from datasets import Dataset, Features, List, Value

from analysis.data.sources import bigbench_examples, check_n, parsed_cache, raw_dir

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

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


@parsed_cache(maxsize=4)
def _facts(raw: Path) -> Dataset:
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
    ds = _facts(raw_dir())
    check_n(n, len(ds), "facts")
    return ds if n is None else ds.select(range(n))


def filter_known(model: HookedTransformer, facts: Dataset, batch_size: int = 32) -> tuple[Dataset, dict]:
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


KNOWN_FACTS_CACHE = "data/known_facts"
"""The one cache name of the known-fact screen, shared by every study."""
KNOWN_FACTS_VERSION = 1
"""Bumped when what the screen stores changes."""


def known_facts(model: HookedTransformer, n_screen: int, cache: bool = True) -> tuple[Dataset, dict]:
    """The facts among the first ``n_screen`` of :func:`facts` that the model knows.

    Returns ``(known Dataset, stats)`` as :func:`filter_known` does. With ``cache``, the known
    ids and the stats are stored under :data:`KNOWN_FACTS_CACHE`, keyed by ``n_screen`` and
    :func:`analysis.models.model_key` (a hash of the weights), so a second call, from any
    study, reads them back.
    """
    pool = facts(n_screen)

    def screen() -> dict:
        known, stats = filter_known(model, pool)
        return {"ids": list(known["id"]), "stats": stats}

    if cache:
        from analysis.cache import cached  # torch and transformer_lens load only when needed
        from analysis.models import model_key

        config = {"n_screen": n_screen, "version": KNOWN_FACTS_VERSION}
        out = cached(KNOWN_FACTS_CACHE, screen, config=config, model=model_key(model))
    else:
        out = screen()
    wanted = set(out["ids"])
    return pool.select([i for i, fid in enumerate(pool["id"]) if fid in wanted]), out["stats"]
