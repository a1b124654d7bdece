"""Chapter helpers: what every chapter of the book does before its first result and after its last.

A chapter opens with one call and closes with another::

    from analysis import book
    profile = book.start("causal_tracing")   # profile banner, plot style, quiet progress, timer
    ...
    book.table(frame, "rome_comparison")     # shows the table, writes it as CSV beside the page
    ...
    book.finish()                            # "chapter runtime 123 s under the 'cpu' profile"

:func:`start` is an entry point, so it is the place (not a library import) that sets process
settings: idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, which only
takes effect if set before torch starts its thread pool: the Makefile and the test suite also
export it), the TransformerLens deprecation notices and tqdm's "IProgress not found" notice are
silenced, and pandas prints wide tables.

Every table a chapter shows through :func:`table` (and every verdict table, also as JSON) is
written as CSV, copied by the book build to ``<html>/results/<chapter>/`` and linked from the page, so a reader can take the
numbers without rerunning anything. :func:`finish` writes a run record (runtime, profile, cache
hits and misses, machine, package versions) that the "How this book was built" appendix reads.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from analysis import cache
from analysis.config import CACHE_DIR, ROOT, Profile, get_profile

PINNED = (
    "torch",
    "transformers",
    "datasets",
    "transformer-lens",
    "sae-lens",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "seaborn",
    "jupyter-book",
)


@dataclass
class Chapter:
    """The running chapter: its name, profile, start time, and the cache counts and computing
    seconds (:data:`analysis.cache.SECONDS`) at its start."""

    name: str
    profile: Profile
    started: float
    counts_at_start: dict = field(default_factory=dict)
    seconds_at_start: dict = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        """Seconds since :func:`start`."""
        return time.time() - self.started


_CURRENT: Chapter | None = None


def start(name: str, profile: str | Profile | None = None, banner: bool = True) -> Profile:
    """Begin a chapter: choose the profile (``$ANALYSIS_PROFILE`` by default), start its timer,
    set the plot style and the process settings above, and print which profile runs."""
    global _CURRENT
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    warnings.filterwarnings("ignore", message=".*Hooked(Transformer|Encoder).*deprecated.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="transformer_lens")
    # libraries that import tqdm.auto warn that a kernel without ipywidgets has no widget bars;
    # our own bars are text bars (analysis.progress), so the notice would only clutter the page
    warnings.filterwarnings("ignore", message="IProgress not found")
    import pandas as pd

    from analysis import plots

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    plots.setup_style()
    pd.set_option("display.max_colwidth", 160)
    pd.set_option("display.width", 160)
    _CURRENT = Chapter(name, prof, time.time(), dict(cache.COUNTS), dict(cache.SECONDS))
    if banner:
        print(f"chapter {name!r}, profile: {prof.name}")
    return prof


def chapters() -> list[str]:
    """The book's chapters, by file stem, in the order of ``_toc.yml``."""
    import re

    toc = (ROOT / "_toc.yml").read_text()
    return [p.rsplit("/", 1)[-1] for p in re.findall(r"^\s*(?:root|-\s*file):\s*(\S+)\s*$", toc, flags=re.M)]


def current() -> Chapter:
    """The chapter begun by the last :func:`start` (RuntimeError before any)."""
    if _CURRENT is None:
        raise RuntimeError("No chapter started; call analysis.book.start(<chapter name>) first.")
    return _CURRENT


def results_dir(chapter: str | None = None, profile: str | None = None) -> Path:
    """Where a chapter's tables are written: ``<cache>/book_results/<profile>/<chapter>/``. The book
    build copies ``<cache>/book_results/<profile>/`` to ``<html>/results/`` (book/_ext/atlas_sphinx.py),
    so a page whose execution Jupyter Book took from its cache still finds its files."""
    chap = current() if chapter is None or profile is None else None
    return CACHE_DIR / "book_results" / (profile or chap.profile.name) / (chapter or chap.name)


def _safe(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip())
    if not safe:
        raise ValueError("A table needs a name made of letters, digits, '-' or '_', e.g. 'rome_comparison'.")
    return safe


def table(frame, name: str, verdicts: bool = False):
    """Show ``frame`` and write it to ``<html>/results/<chapter>/<name>.csv`` (and ``.json`` when
    ``verdicts``), with a link under the table. Returns ``frame`` so it displays as the cell's value."""
    from IPython.display import Markdown, display

    chapter = current()
    stem = _safe(name)
    folder = results_dir(chapter.name, chapter.profile.name)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{stem}.csv")
    files = [f"{stem}.csv"]
    if verdicts:
        frame.reset_index().to_json(folder / f"{stem}.json", orient="records", indent=1, default_handler=str)
        files.append(f"{stem}.json")
    chapter.tables += files
    links = " · ".join(f"[{f}](../results/{chapter.name}/{f})" for f in files)
    display(frame)
    display(Markdown(f"Download: {links}"))
    return None


def memory_plan(plan, device: str) -> None:
    """Show a study's :class:`analysis.memory.MemoryPlan` as the ``memory_plan`` table, then the
    rule the code follows past one device, for ``device`` and this host."""
    from analysis import memory

    table(memory.frame(plan), "memory_plan")
    print(memory.rule(plan, memory.device_bytes(device), memory.host_bytes()))


def machine() -> dict[str, object]:
    """Cores, memory and accelerator of this machine."""
    import torch

    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = float("nan")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return {
        "cores": os.cpu_count(),
        "memory GiB": round(mem_gib, 1),
        "device": device,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def versions() -> dict[str, str]:
    """The installed versions of the pinned packages that shape the results."""
    out = {}
    for name in PINNED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def records_dir(profile: str) -> Path:
    """Where run records of chapters executed under ``profile`` are kept (beside the result cache)."""
    return CACHE_DIR / "book_runs" / profile


def finish() -> None:
    """Print the chapter's runtime and profile and write its run record (see :func:`run_records`)."""
    chapter = current()
    seconds = chapter.elapsed()
    counts = {k: cache.COUNTS[k] - chapter.counts_at_start.get(k, 0) for k in ("hit", "miss")}
    spent = {k: v - chapter.seconds_at_start.get(k, 0.0) for k, v in cache.SECONDS.items()}
    slowest = {k: round(v, 1) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])[:5] if v >= 1.0}
    record = {
        "chapter": chapter.name,
        "profile": chapter.profile.name,
        "seconds": round(seconds, 1),
        "cache hits": counts["hit"],
        "cache misses": counts["miss"],
        "slowest computations": slowest,
        "tables": chapter.tables,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        **machine(),
    }
    folder = records_dir(chapter.profile.name)
    cache.atomic_write(folder / f"{chapter.name}.json", lambda p: p.write_text(json.dumps(record, indent=1)))
    print(
        f"chapter runtime {seconds:.0f} s under the {chapter.profile.name!r} profile "
        f"({counts['hit']} cached results reused, {counts['miss']} computed)"
    )


def run_records(profile: str) -> list[dict]:
    """Every chapter's last run record under ``profile`` (as written by :func:`finish`)."""
    folder = records_dir(profile)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.exists() else []
