"""Run profiles: the one place that sets the scale of every experiment.

A *profile* fixes the model, the sample counts and the token budgets that a chapter or a
test uses. There are three:

- ``smoke``: seconds per chapter; what the test suite executes.
- ``cpu``: the published book, sized so that the whole book builds on a 2-core CPU.
- ``gpu``: full-size runs (the seeds' own models and sample counts) for a machine with a GPU.

``ANALYSIS_PROFILE`` selects one (``cpu`` by default). Chapters read every size from the
profile object, print it, and the result cache keys on it, so a result computed at one
scale is never mistaken for another.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT: Path = Path(__file__).resolve().parent.parent
"""The repository root (the folder holding ``analysis/``, ``book/`` and ``data/``)."""

DATA_DIR: Path = Path(os.environ.get("ANALYSIS_DATA_DIR", ROOT / "data"))
"""Where packaged raw data (``DATA_DIR/raw``) and the result cache (``DATA_DIR/cache``) live."""

RAW_DIR: Path = DATA_DIR / "raw"
CACHE_DIR: Path = Path(os.environ.get("ANALYSIS_CACHE_DIR", DATA_DIR / "cache"))

DATA_VERSION = "2"
"""Bumped whenever a loader's output changes; part of every cache key."""

PROFILE_ENV = "ANALYSIS_PROFILE"
DEFAULT_PROFILE = "cpu"
OVERRIDES_ENV = "ANALYSIS_PROFILE_OVERRIDES"
"""Names a JSON file ``{"<profile>": {"<field>": value, "extra": {"<study>": {...}}}}`` whose values
replace a profile's fields (and, through ``extra``, a study's sizes): an experiment as data."""


SIZE = {"size": True}
"""Field metadata of a config field that is a *size* (tokens, samples, steps, widths, seeds): a toy
run shrinks sizes and keeps choices (models, methods, switches, layers). Metadata never enters a
cache key."""


def size_fields(cfg: Any) -> list[str]:
    """The names of ``cfg``'s fields marked as sizes (``field(metadata=SIZE)``), in field order."""
    return [f.name for f in dataclasses.fields(cfg) if f.metadata.get("size")]


@dataclass(frozen=True)
class Profile:
    """Sizes for one scale of run. Every field is printed by the chapters that use it."""

    name: str
    model: str = "smollm2-135m"
    """Decoder model name: an embedded model, a hub name (:data:`analysis.models.HUB_MODELS`) or a local folder."""
    encoder: str = "minilm-l6"
    """Encoder model name, for probing chapters."""
    device: str = "cpu"
    eval_tokens: int = field(default=16_384, metadata=SIZE)
    """Tokens of held-out evaluation text scored for perplexity."""
    calib_tokens: int = field(default=8_192, metadata=SIZE)
    """Tokens of calibration text (gradients, activation statistics)."""
    context: int = field(default=256, metadata=SIZE)
    """Sliding-window context length for perplexity."""
    stride: int = field(default=256, metadata=SIZE)
    """Sliding-window stride; ``stride == context`` scores disjoint windows."""
    batch_size: int = field(default=8, metadata=SIZE)
    n_facts: int = field(default=200, metadata=SIZE)
    """Fact prompts screened once for the known-fact screen every chapter shares
    (:func:`analysis.data.fact_splits`); about 1 in 4 is known for SmolLM2."""
    fact_screen: str = "greedy"
    """Which screened facts count as known: ``"greedy"`` (the model's greedy next token is the
    answer's first token) or ``"all"`` (no screen: only for toy runs on random weights, which know
    no fact, to exercise the code downstream of the screen)."""
    logit_lens_tokens: int = field(default=4_096, metadata=SIZE)
    """Tokens used for the intro chapter's logit-lens curve."""
    n_probe_examples: int = field(default=400, metadata=SIZE)
    """Examples per probing task."""
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=SIZE)
    extra: dict = field(default_factory=dict)
    """Study-specific sizes, added by later chapters without touching the fields above."""

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed (profiles are frozen)."""
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        eval_tokens=512,
        calib_tokens=256,
        context=128,
        stride=128,
        batch_size=4,
        n_facts=80,
        logit_lens_tokens=256,
        n_probe_examples=40,
        seeds=(0,),
    ),
    "cpu": Profile(name="cpu", n_facts=4_000),
    "gpu": Profile(
        name="gpu",
        model="gpt2-xl",
        encoder="bert-base-uncased",
        device="cuda",
        eval_tokens=300_000,
        calib_tokens=131_072,
        context=1024,
        stride=512,
        batch_size=16,
        n_facts=12_762,
        logit_lens_tokens=65_536,
        n_probe_examples=4_000,
        seeds=(0, 1, 2),
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The profile called ``name``, else the one named by ``$ANALYSIS_PROFILE``, else ``cpu``."""
    name = name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ValueError(
            f"Unknown profile {name!r}. Known profiles: {', '.join(PROFILES)}. "
            f"Set {PROFILE_ENV} to one of them (e.g. `export {PROFILE_ENV}=smoke`)."
        ) from None
    changes = _overrides().get(name)
    if not changes:
        return profile
    return _replace(profile, changes, f"{OVERRIDES_ENV}: {name}")


STUDY_KEYS: tuple[str, ...] = ("adaptive", "capability", "factorization", "sweep", "synthesis", "tracing", "variance")
"""The keys of ``Profile.extra``: one per study that reads its sizes through :func:`study_config`."""


def _overrides() -> dict:
    """The profile overrides in ``$ANALYSIS_PROFILE_OVERRIDES`` (a JSON file), or none."""
    path = os.environ.get(OVERRIDES_ENV)
    if not path:
        return {}
    try:
        overrides = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{OVERRIDES_ENV}={path!r} is not a readable JSON file ({err}); fix it or unset it.") from err
    fields = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    for name, changes in overrides.items():
        unknown = set(changes) - fields if isinstance(changes, dict) else set()
        if name not in PROFILES or unknown or not isinstance(changes, dict):
            problem = f"has unknown fields {sorted(unknown)}" if unknown else "is no profile"
            if name in PROFILES and not unknown:
                problem = f"must be an object of field values, got {changes!r}"
            raise ValueError(
                f"{OVERRIDES_ENV}: {name!r} {problem}; profiles: {', '.join(PROFILES)}; fields: {', '.join(sorted(fields))}."
            )
        _check_extra(changes.get("extra", {}), f"{OVERRIDES_ENV}: {name}.extra")
    return overrides


def _check_extra(extra, where: str) -> None:
    """Raise a ValueError unless ``extra`` maps known study keys (:data:`STUDY_KEYS`) to objects."""
    if not isinstance(extra, dict):
        raise ValueError(f"{where} must be an object {{study: {{field: value}}}}, got {extra!r}.")
    unknown = sorted(set(extra) - set(STUDY_KEYS))
    if unknown:
        raise ValueError(
            f"{where} has unknown study keys {unknown}; known: {', '.join(STUDY_KEYS)} (check the spelling)."
        )
    for key, value in extra.items():
        if not isinstance(value, dict):
            raise ValueError(f"{where}.{key} must be an object of field values, got {value!r}.")


def study_config(configs: dict, profile, key: str):
    """A study's sizes for a profile (a :class:`Profile` or its name) from its per-profile table.

    ``configs`` maps profile names to the study's frozen config dataclass; ``profile.extra[key]``
    (a dict of field values; JSON's dicts and lists fill nested configs and tuples), when present,
    overrides fields. Unknown study keys, unknown fields and values of the wrong type are errors.
    """
    name = profile if isinstance(profile, str) else profile.name
    if name in configs and isinstance(profile, str):
        profile = get_profile(profile)  # with $ANALYSIS_PROFILE_OVERRIDES applied
    if name not in configs:
        raise ValueError(f"No {key} sizes for profile {name!r}; known: {', '.join(configs)}.")
    extra = getattr(profile, "extra", {})
    _check_extra(extra, f"Profile {name!r} extra")
    overrides = dict(extra.get(key, {}))
    return _replace(configs[name], overrides, f"extra.{key}") if overrides else configs[name]


_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "true or false"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (tuple, "a list"),
    (dict, "an object"),
)


def _check_value(where: str, field: dataclasses.Field, current, value) -> None:
    """Raise a ValueError when ``value`` cannot stand for ``current`` (a bool, number, string, tuple or dict)."""
    if current is None or value is None:
        return
    if dataclasses.is_dataclass(current):
        ok, kind = isinstance(value, (dict, type(current))), "an object of field values"
    else:
        kind = next((k for t, k in _KINDS if isinstance(current, t)), None)
        if kind is None:
            return  # a type JSON cannot spell (a dtype, a path): taken as given
        if isinstance(current, bool):
            ok = isinstance(value, bool)
        elif isinstance(current, (int, float)):
            floats = isinstance(current, float) or "float" in str(field.type)
            ok = not isinstance(value, bool) and isinstance(value, (int, float) if floats else int)
        else:
            ok = isinstance(value, (list, tuple) if isinstance(current, tuple) else type(current))
    if not ok:
        raise ValueError(f"{where}.{field.name} must be {kind} (like {current!r}), got {value!r}.")


def _replace(config, changes: dict, where: str = "overrides"):
    """``dataclasses.replace`` that also takes JSON's shapes: a dict for a nested config, a list for a
    tuple; an unknown field or a value of the wrong type is a ValueError saying which."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: {type(config).__name__} has no fields {unknown}; fields: {', '.join(sorted(fields))}."
        )
    values = {}
    for key, value in changes.items():
        current = getattr(config, key)
        _check_value(where, fields[key], current, value)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _replace(current, value, f"{where}.{key}")
        elif isinstance(value, list):  # a tuple; of configs when the current one holds configs
            template = current[0] if current and dataclasses.is_dataclass(current[0]) else None
            value = tuple(
                _replace(template, v, f"{where}.{key}") if template and isinstance(v, dict) else v for v in value
            )
        values[key] = value
    return dataclasses.replace(config, **values)
