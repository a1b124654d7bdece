"""Fixtures for the data tests: the raw data on disk (the word-level tokenizer is in tests/unit/conftest.py).

The tests need the raw data; ``fetched`` calls ``fetch()``, which does nothing when ``make
data`` already ran. No pretrained model is loaded: models here are tiny random
HookedTransformers over a word-level tokenizer built from the facts' own words.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def fetched():
    """Raw data on disk (a no-op after ``make data``)."""
    from analysis.data import fetch

    return fetch()
