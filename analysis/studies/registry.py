"""One registry of the seven studies: each study's key, chapter and package, under one naming scheme.

Every study package has the same files (``config.py``, ``run.py``, ``results.py``, ``verdicts.py``,
``plots.py``, ``seed.py``) and the same three entry points, so a reader (or a test) reaches any of
them the same way:

- ``config_for(profile)``: the study's frozen config at a run profile (``smoke``, ``cpu``, ``gpu``),
  with ``profile.extra[<key>]`` overrides applied; fields that are sizes carry
  :data:`analysis.config.SIZE` metadata (:func:`analysis.config.size_fields`);
- ``CONFIGS``: the config per profile, before overrides;
- ``verdicts(...)``: every seed claim the chapter records, judged on the study's typed results
  (``results.py``).

A study whose chapter runs in one step has ``run(model, profile)`` (the sweep, AdaptiveCompress);
the others run their steps one by one, with the chapter's text between them, each step returning a
typed result.

:func:`config_for` and :func:`configs` here take the study's key; :data:`STUDIES` lists them in
book order.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from analysis.config import Profile
from analysis.studies import adaptive, capability, factorization, sweep, synthesis, tracing, variance


@dataclass(frozen=True)
class Study:
    """A study: its key (also its key in ``Profile.extra``), its chapter and its package."""

    key: str
    chapter: str
    package: ModuleType


STUDIES: dict[str, Study] = {
    s.key: s
    for s in (
        Study("tracing", "causal_tracing", tracing),
        Study("sweep", "information_aware_compression", sweep),
        Study("factorization", "factorization", factorization),
        Study("capability", "capability_density", capability),
        Study("adaptive", "adaptive_compress", adaptive),
        Study("variance", "variance_vs_importance", variance),
        Study("synthesis", "synthesis", synthesis),
    )
}
"""The studies in book order, by key."""


def study(key: str) -> Study:
    """The :class:`Study` called ``key``, or a ValueError naming the known ones."""
    try:
        return STUDIES[key]
    except KeyError:
        raise ValueError(f"Unknown study {key!r}; known studies: {', '.join(STUDIES)}.") from None


def config_for(key: str, profile: Profile | str) -> Any:
    """The config of study ``key`` at ``profile`` (a :class:`~analysis.config.Profile` or its name)."""
    return study(key).package.config_for(profile)


def verdicts(key: str) -> Callable[..., list]:
    """Study ``key``'s ``verdicts`` function (its arguments are the study's typed results)."""
    return study(key).package.verdicts


def configs(key: str) -> dict[str, Any]:
    """Study ``key``'s config per profile name, before any override."""
    return dict(study(key).package.CONFIGS)
