"""Data: every text, fact, benchmark and labelled example the atlas studies, from packaged files.

Studies of compressed language models need four kinds of data: running English prose to
measure perplexity and to calibrate compression (``lm_text``, ``lm_tokens``), factual prompts
to see which knowledge survives compression (``facts``, ``filter_known`` and the one known-fact
screen ``known_facts``, after ROME's *known facts*, Meng et al. 2022, split by purpose with
``fact_splits``), real benchmarks (``mmlu``, ``sst2``, ``lambada``), and small labelled sets for
linear probes and sparse autoencoders (``load_task``). Hubs cannot be reached from these
machines, and BIG-bench's package is no longer served, so the set-up step (``python -m
analysis.data fetch``) downloads real data that ships inside ordinary, pinned packages and checks
every file's sha256 against the lock (:mod:`analysis.data.lock`). Fetched files go to ``RAW_DIR``
(git ignores them) with a ``MANIFEST.json`` per source; loaders parse them into
``datasets.Dataset`` objects with fixed, documented schemas, deterministic orders and
document-level splits, and cache them in-process. Nothing here is synthetic, and no set is passed
off under a benchmark's name it does not come from: ``data/README.md`` is the card for each set
and lists what has no real source here.

The package has one module per kind of data:

- :mod:`~analysis.data.catalog`: the raw sources, the pinned packages that ship them.
- :mod:`~analysis.data.sources`: the fetch that downloads them, ``verify``, reading fetched files.
- :mod:`~analysis.data.lock`: the sha256 of every extracted file.
- :mod:`~analysis.data.text`: language-modelling text (``lm_text``, ``lm_tokens``).
- :mod:`~analysis.data.wordnet`: WordNet's noun synsets (people for facts and the profession task).
- :mod:`~analysis.data.fact_tables`: candidate facts, read from each curated source.
- :mod:`~analysis.data.knowledge`: facts (templates, caps, order) and the known-fact screen.
- :mod:`~analysis.data.benchmarks`: MMLU, SST-2 and LAMBADA, as their authors released them.
- :mod:`~analysis.data.tasks`: the labelled probing tasks (``load_task``, ``TASKS``).
- :mod:`~analysis.data.card`: the size of every set (``sizes``, ``summary``).

``python -m analysis.data`` (:mod:`analysis.data.__main__`) is the command line.
"""

from analysis.config import DATA_VERSION
from analysis.data.benchmarks import MMLU_LETTERS, lambada, mmlu, mmlu_prompt, sst2
from analysis.data.card import DATASET_SOURCES, sizes, summary
from analysis.data.knowledge import (
    FACT_RELATIONS,
    FACT_TEMPLATES,
    KNOWN_FACTS_CACHE,
    SPLIT_FRACTIONS,
    balanced,
    fact_prompt,
    fact_split,
    fact_splits,
    facts,
    filter_known,
    known_facts,
    known_share,
    split_by_purpose,
)
from analysis.data.sources import MANIFEST, SOURCES, DataSourceError, fetch, verify
from analysis.data.tasks import (
    CODE_LABELS,
    DOMAIN_LABELS,
    MASK,
    PROFESSIONS,
    SENTIMENT_LABELS,
    SNIPPET_LINES,
    TASKS,
    load_task,
)
from analysis.data.text import (
    LM_SOURCES,
    LM_SPLITS,
    document_token_ids,
    lm_split_of,
    lm_text,
    lm_tokens,
    split_token_counts,
)

__all__ = [
    "DATA_VERSION",
    "SOURCES",
    "MANIFEST",
    "DataSourceError",
    "fetch",
    "verify",
    "LM_SOURCES",
    "LM_SPLITS",
    "lm_text",
    "lm_tokens",
    "document_token_ids",
    "lm_split_of",
    "split_token_counts",
    "FACT_RELATIONS",
    "FACT_TEMPLATES",
    "KNOWN_FACTS_CACHE",
    "SPLIT_FRACTIONS",
    "facts",
    "balanced",
    "fact_prompt",
    "filter_known",
    "known_facts",
    "fact_splits",
    "fact_split",
    "split_by_purpose",
    "known_share",
    "MMLU_LETTERS",
    "mmlu",
    "mmlu_prompt",
    "sst2",
    "lambada",
    "TASKS",
    "load_task",
    "SENTIMENT_LABELS",
    "DOMAIN_LABELS",
    "CODE_LABELS",
    "PROFESSIONS",
    "MASK",
    "SNIPPET_LINES",
    "DATASET_SOURCES",
    "sizes",
    "summary",
]
