"""WordNet 3.0's nouns: the parser that the profession task and the people facts share.

``data.noun`` (from Debian ``wordnet-base``) holds one synset a line: offset, lexicographer file,
lemmas, pointers and a gloss (format: ``man 5WN wndb``). :func:`synsets` parses the fetched file
once per fetch; :func:`person_name` gives a person synset a readable name.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from analysis.data.sources import parsed_cache, raw_dir, raw_file

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


def parse(lines: Iterable[str]) -> dict[str, Synset]:
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


def person_name(lemmas: list[str]) -> str:
    """A readable name for a person synset: its first multi-word lemma, else its first."""
    full = [lemma for lemma in lemmas if "_" in lemma]
    return (full or lemmas)[0].replace("_", " ")


@parsed_cache(maxsize=2)
def _synsets(raw: Path) -> dict[str, Synset]:
    with raw_file("wordnet", "data.noun").open(encoding="utf-8") as f:
        return parse(f)


def synsets() -> dict[str, Synset]:
    """Every noun synset of the fetched ``data.noun``, by offset (parsed once per fetch)."""
    return _synsets(raw_dir())
