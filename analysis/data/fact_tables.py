"""The fact tables: candidate (subject, answers) facts of every relation, read from each curated source.

:mod:`analysis.data.knowledge` asks them (its templates, caps, order, screen and splits); this
module only reads them. Each source gives relation -> candidates, best known first where the
source ranks them: GeoNames (capital, continent, currency; city -> country), Unicode CLDR through
Babel's pickles, read without Babel (official language), the Wikidata film table (language,
country, director), pytickersymbols (headquarters) and WordNet's real people (nationality,
occupation). Accepted answers keep the sources' aliases.
"""

from __future__ import annotations

import ast
import pickle
import re
import sqlite3
import unicodedata
from collections import Counter
from collections.abc import Iterable

from analysis.data import wordnet
from analysis.data.sources import raw_file, read_json

MIN_CITY_POPULATION = 100_000
"""Cities asked about (``"city country"``) have at least this many people."""
MIN_PEOPLE = 5
"""A nationality or occupation is asked only if at least this many WordNet people have it."""

Fact = tuple[str, list[str], str]
"""One candidate fact: (subject, accepted answers with the target first, key unique in its relation)."""


# --------------------------------------------------------------------------------------
# Names and aliases
# --------------------------------------------------------------------------------------


def _unique(names: Iterable[str]) -> list[str]:
    """Stripped, non-empty names, each once, in order."""
    return list(dict.fromkeys(n.strip() for n in names if n and n.strip()))


def _ascii(name: str) -> str:
    """``name`` without its accents ("Bogotá" -> "Bogota")."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()


def _with_ascii(name: str) -> list[str]:
    """A name and, if it differs, its accent-free spelling."""
    return _unique([name, _ascii(name)])


def _cldr_variants(name: str) -> list[str]:
    """A CLDR display name and its parts: "Myanmar (Burma)" -> Myanmar (Burma), Myanmar, Burma;
    "Congo - Kinshasa" -> also Congo; "Côte d’Ivoire" -> also Côte d'Ivoire."""
    plain = name.replace("\u2019", "'")
    outer, _, inner = plain.partition(" (")
    return _unique([name, plain, outer, inner.rstrip(")"), plain.split(" - ")[0]])


# --------------------------------------------------------------------------------------
# CLDR (Babel's pickles, read without Babel)
# --------------------------------------------------------------------------------------


class _Inert:
    """Stands in for any Babel class in its pickles (number and date patterns we never use)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


class _CldrUnpickler(pickle.Unpickler):
    """Unpickles Babel's ``.dat`` files with no code run: ``babel.*`` classes become :class:`_Inert`."""

    def find_class(self, module: str, name: str) -> type:
        if module.split(".")[0] == "babel":
            return _Inert
        raise pickle.UnpicklingError(f"CLDR data refers to {module}.{name}, which is not allowed.")


def _cldr(rel: str) -> dict:
    """One of Babel's CLDR pickles (``global.dat``, ``en.dat``) as plain dicts."""
    with raw_file("cldr", rel).open("rb") as f:
        return _CldrUnpickler(f).load()


# --------------------------------------------------------------------------------------
# The relations, source by source: each gives relation -> facts, best known first
# --------------------------------------------------------------------------------------


def _country_aliases(countries: dict, territories: dict[str, str]) -> dict[str, list[str]]:
    """Every name of a country (GeoNames' and CLDR's English) -> all its names, GeoNames' first."""
    aliases: dict[str, list[str]] = {}
    for code, country in countries.items():
        names = _unique([country["name"], *_cldr_variants(territories.get(code, ""))])
        for name in names:
            aliases.setdefault(name, names)
    return aliases


def _country_answers(name: str, aliases: dict[str, list[str]]) -> list[str]:
    """A country's name first, then its other names (if the name is a known country's)."""
    return _unique([name, *aliases.get(name, [])])


def _currency_answers(name: str) -> list[str]:
    """GeoNames' currency name in running-text case ("CFA Franc" -> "CFA franc") and as given."""
    lower = " ".join(w.lower() if w.istitle() else w for w in name.split())
    return _unique([lower, name])


def _geonames_facts(countries: dict, cities: list[dict], aliases: dict[str, list[str]]) -> dict[str, list[Fact]]:
    """Capital, continent and currency of every country; the country of big, unambiguous cities."""
    continents = read_json("geonames", "continents.json")
    out: dict[str, list[Fact]] = {"capital": [], "continent": [], "currency": [], "city country": []}
    for code, c in sorted(countries.items()):
        subject = c["name"].strip()
        continent = continents[c["continentcode"]]
        english = [a["name"] for a in continent["alternateNames"] if a.get("lang") == "en"]
        out["continent"].append((subject, _unique([continent["name"], *english]), code))
        if c["capital"]:
            out["capital"].append((subject, _with_ascii(c["capital"]), code))
        if c["currencyname"]:
            out["currency"].append((subject, _currency_answers(c["currencyname"]), code))
    out["city country"] = _city_facts(countries, cities, aliases)
    return out


def _city_facts(countries: dict, cities: list[dict], aliases: dict[str, list[str]]) -> list[Fact]:
    """Cities of :data:`MIN_CITY_POPULATION`+ people whose name no other GeoNames city has, largest first."""
    n_named = Counter(c["name"] for c in cities)
    big = [c for c in cities if c["population"] >= MIN_CITY_POPULATION and n_named[c["name"]] == 1]
    big.sort(key=lambda c: (-c["population"], c["geonameid"]))
    return [
        (c["name"], _country_answers(countries[c["countrycode"]]["name"].strip(), aliases), str(c["geonameid"]))
        for c in big
        if c["countrycode"] in countries and c["name"].strip()
    ]


def _language_names(code: str, languages: dict[str, str]) -> list[str]:
    """English names of a CLDR language code ("zh_Hans" -> Simplified Chinese, Chinese)."""
    return _unique([languages.get(code, ""), languages.get(code.split("_")[0], "")])


def _official_language_facts(countries: dict) -> list[Fact]:
    """Each country's official languages (CLDR status official or de facto), most spoken first."""
    territory_languages = _cldr("global.dat")["territory_languages"]
    languages = _cldr("en.dat")["languages"]
    out = []
    for code, country in sorted(countries.items()):
        spoken = territory_languages.get(code, {})
        official = [lang for lang, v in spoken.items() if v["official_status"] in ("official", "de_facto_official")]
        official.sort(key=lambda lang: -(spoken[lang]["population_percent"] or 0))
        answers = _unique(name for lang in official for name in _language_names(lang, languages))
        if answers:
            out.append((country["name"].strip(), answers, code))
    return out


def _film_facts(aliases: dict[str, list[str]]) -> dict[str, list[Fact]]:
    """Language, country and director of films with one of each, most reviewed first."""
    query = (
        "SELECT o.imdbID, o.Title, o.Language, o.Country, o.Director FROM omdb o JOIN tomatoes t ON o.ID = t.ID"
        " ORDER BY t.Reviews IS NULL, t.Reviews DESC, o.imdbID"
    )
    with sqlite3.connect(f"file:{raw_file('films', 'movies.db')}?mode=ro", uri=True) as db:
        rows = db.execute(query).fetchall()
    n_titled = Counter(title for _, title, *_ in rows)
    out: dict[str, list[Fact]] = {"film language": [], "film country": [], "film director": []}
    for imdb, title, language, country, director in rows:
        if not title or not title.strip() or n_titled[title] > 1:
            continue
        for relation, value in (("film language", language), ("film country", country), ("film director", director)):
            if value and value.strip() and "," not in value:  # exactly one listed
                answers = _country_answers(value, aliases) if relation == "film country" else _unique([value])
                out[relation].append((title.strip(), answers, imdb))
    return out


def _company_facts(cities: list[dict]) -> list[Fact]:
    """Headquarters city of index companies: the parts of the infobox's place that name a GeoNames
    city, the first one as target ("Minato, Tokyo": Minato, also Tokyo); places with digits or
    parentheses (street addresses, seats split between cities) are dropped."""
    tree = ast.parse(raw_file("tickers", "indices_data.py").read_text(encoding="utf-8"))
    (indices,) = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)]
    city_names = {c["name"] for c in cities}
    companies: dict[str, str] = {}
    for index in sorted(indices):
        for company in indices[index]["companies"]:
            place = (company.get("metadata") or {}).get("headquarters") or ""
            companies.setdefault(re.sub(r" \(corporation\)$", "", company["name"]).strip(), place)
    out = []
    for name, place in sorted(companies.items()):
        cities = _unique(p for p in place.split(",") if p.strip() in city_names)
        if name and "(" not in name and cities and not re.search(r"[\d()]", place):
            key = re.sub(r"[^0-9A-Za-z]+", "_", _ascii(name)).strip("_")
            out.append((name, _unique(n for city in cities for n in _with_ascii(city)), key))
    return out


# --------------------------------------------------------------------------------------
# WordNet people
# --------------------------------------------------------------------------------------

_NOT_REAL = {"imaginary_being", "spiritual_being", "fictional_character", "mythical_being", "deity"}
"""WordNet synsets whose instances are not historical people (gods, heroes of myth, characters)."""


def _ancestors(offset: str, synsets: dict) -> set[str]:
    """First lemmas of a synset and of all its hypernyms (``@``), transitively."""
    seen, stack = set(), [offset]
    while stack:
        synset = synsets[stack.pop()]
        if synset.lemmas[0] not in seen:
            seen.add(synset.lemmas[0])
            stack.extend(o for symbol, o in synset.pointers if symbol == "@")
    return seen


def _real_people(synsets: dict) -> dict[str, tuple[str, str, list[str]]]:
    """noun.person instances that are real people, named unambiguously: name -> (offset, gloss, classes)."""
    people: dict[str, tuple[str, str, list[str]]] = {}
    names: Counter[str] = Counter()
    for offset, person in synsets.items():
        classes = [o for symbol, o in person.pointers if symbol == "@i"]
        if person.lex_file != wordnet.NOUN_PERSON or not classes:
            continue
        if any(_ancestors(o, synsets) & _NOT_REAL for o in classes):
            continue
        name = wordnet.person_name(person.lemmas)
        names[name] += 1
        people[name] = (offset, person.gloss, classes)
    return {name: v for name, v in people.items() if names[name] == 1}


def _nationality(gloss: str, classes: list[str], synsets: dict) -> str | None:
    """The capitalised words that open a gloss right before the person's class ("French painter")."""
    for o in classes:
        for lemma in synsets[o].lemmas:
            match = re.match(rf"((?:[A-Z][a-z]+ ){{1,2}}){re.escape(lemma.replace('_', ' '))}\b", gloss)
            if match:
                return match.group(1).strip()
    return None


def _wordnet_facts() -> dict[str, list[Fact]]:
    """Nationality (from the gloss) and occupation (the one class) of real WordNet people."""
    synsets = wordnet.synsets()
    people = _real_people(synsets)
    nationalities = {name: _nationality(gloss, classes, synsets) for name, (_, gloss, classes) in people.items()}
    n_nationality = Counter(nationalities.values())
    n_occupation = Counter(classes[0] for _, _, classes in people.values() if len(classes) == 1)
    out: dict[str, list[Fact]] = {"nationality": [], "occupation": []}
    for name, (offset, _, classes) in sorted(people.items()):
        nationality = nationalities[name]
        if nationality and n_nationality[nationality] >= MIN_PEOPLE:
            answers = ["American", nationality] if nationality == "United States" else [nationality]
            out["nationality"].append((name, answers, offset))
        occupation = synsets[classes[0]].lemmas
        if len(classes) == 1 and n_occupation[classes[0]] >= MIN_PEOPLE and occupation[0].islower():
            out["occupation"].append((name, _unique(w.replace("_", " ") for w in occupation), offset))
    return out


def candidate_facts() -> dict[str, list[Fact]]:
    """Every relation's candidate facts, best known first where the source ranks them."""
    countries = read_json("geonames", "countries.json")
    cities = list(read_json("geonames", "cities15000.json").values())
    aliases = _country_aliases(countries, _cldr("en.dat")["territories"])
    return {
        **_geonames_facts(countries, cities, aliases),
        "official language": _official_language_facts(countries),
        **_film_facts(aliases),
        "headquarters": _company_facts(cities),
        **_wordnet_facts(),
    }


