"""Progress bars that suit both a terminal and an executed book page.

Every loop over prompts, layers, batches or grid cells goes through :func:`progress`. In a
terminal it is an ordinary tqdm bar. When a chapter is executed for the book
(``ANALYSIS_QUIET=1``, set by ``make book`` and the tests) or output is not a terminal, the bar
updates rarely, so the rendered page shows one or two lines instead of hundreds.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

try:  # widget bars in Jupyter when ipywidgets is there (make lab installs it), text bars otherwise
    import ipywidgets  # noqa: F401
    from tqdm.auto import tqdm
except ImportError:  # tqdm.auto would warn "IProgress not found" into every executed page
    from tqdm.std import tqdm

T = TypeVar("T")


def quiet() -> bool:
    """True when progress should stay out of the way (book builds, tests, pipes)."""
    return os.environ.get("ANALYSIS_QUIET") == "1" or not sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str | None = None, total: int | None = None, **kw) -> Iterable[T]:
    """A tqdm bar over ``iterable``; sparse updates when :func:`quiet`."""
    if quiet():
        kw.setdefault("mininterval", 30.0)
        kw.setdefault("disable", os.environ.get("ANALYSIS_QUIET") == "1")
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, **kw)
