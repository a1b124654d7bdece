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
numbers without rerunning anything. :func:`config` shows a config dataclass that way,
:func:`seed_vs_ours` sets a seed's numbers beside ours, and :func:`timed` prints how long a step
took. :func:`finish` writes a run record (runtime, profile, cache hits and misses, the seconds and
measured peak memory of each computation that ran, machine) that the "How this book was built"
appendix reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import pandas as pd
import torch
from IPython.display import Markdown, display

from analysis import cache, memory, plots
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
    """The running chapter: its name, profile, start time, and how many cached computations
    (:data:`analysis.cache.RUNS`) the process had logged at its start."""

    name: str
    profile: Profile
    started: float
    runs_at_start: int = 0
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

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    plots.setup_style()
    pd.set_option("display.max_colwidth", 160)
    pd.set_option("display.width", 160)
    _CURRENT = Chapter(name, prof, time.time(), len(cache.RUNS))
    if banner:
        print(f"chapter {name!r}, profile: {prof.name}")
    return prof


def chapters() -> list[str]:
    """The book's chapters, by file stem, in the order of ``_toc.yml``."""

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


def config(cfg, title: str = "sizes", name: str = "sizes", skip: Iterable[str] = ()) -> None:
    """Show a config dataclass as a one-column table ``title`` of its fields' values (as text), written
    as ``name``; a nested config's fields come first, as ``<field>.<its field>``; ``skip`` leaves fields
    out; None shows as an empty cell."""

    values = dataclasses.asdict(cfg)
    nested = [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]
    rows = {f"{n}.{k}": v for n in nested if n not in skip for k, v in values[n].items()}
    rows |= {k: v for k, v in values.items() if k not in skip and k not in nested}
    table(pd.Series(rows, name=title).astype(str).to_frame(), name)


def seed_vs_ours(
    seed: Mapping[str, object], ours: Mapping[str, object], seed_name: str = "seed", ours_name: str = "ours"
):
    """A frame with the seed's number beside ours, one row per quantity (``ours``'s order, then any
    only the seed has); a quantity one side did not report is empty."""

    rows = list(dict.fromkeys([*ours, *seed]))
    return pd.DataFrame({seed_name: pd.Series(seed), ours_name: pd.Series(ours)}).reindex(rows)


@contextmanager
def timed(label: str, clock: Callable[[], float] = time.perf_counter) -> Iterator[None]:
    """Time the ``with`` block and print ``"<label> ready in <N> s"`` after it."""
    t0 = clock()
    yield
    print(f"{label} ready in {clock() - t0:.0f} s")


def machine() -> dict[str, object]:
    """Cores, memory and accelerator of this machine."""

    ram = memory.available("cpu")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return {
        "cores": os.cpu_count(),
        "memory GiB": round(ram / 2**30, 1) if ram else float("nan"),
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


def computations(runs: Sequence[cache.Run]) -> dict[str, dict[str, float]]:
    """Per cache name that ran (slowest first): how often, its seconds in all, and per measure
    (:mod:`analysis.memory`) the highest peak and the most it added while it ran, in MiB."""
    out: dict[str, dict[str, float]] = {}
    for run in (r for r in runs if not r.hit):
        row = out.setdefault(run.name, {"runs": 0, "seconds": 0.0})
        row["runs"] += 1
        row["seconds"] += run.seconds
        for p in run.peaks:
            for what, n_bytes in ((f"peak MiB, {p.measure}", p.total), (f"added MiB, {p.measure}", p.added)):
                row[what] = max(row.get(what, -math.inf), round(n_bytes / memory.MiB, 1))
    for row in out.values():
        row["seconds"] = round(row["seconds"], 1)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["seconds"]))


def finish() -> None:
    """Print the chapter's runtime and profile and write its run record (see :func:`run_records`)."""
    chapter = current()
    seconds = chapter.elapsed()
    runs = cache.RUNS[chapter.runs_at_start :]
    hits = sum(r.hit for r in runs)
    ran = computations(runs)
    record = {
        "chapter": chapter.name,
        "profile": chapter.profile.name,
        "seconds": round(seconds, 1),
        "cache hits": hits,
        "cache misses": len(runs) - hits,
        "computations": ran,
        "served from the cache": sorted({r.name for r in runs if r.hit} - set(ran)),
        "tables": chapter.tables,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        **machine(),
    }
    folder = records_dir(chapter.profile.name)
    cache.atomic_write(folder / f"{chapter.name}.json", lambda p: p.write_text(json.dumps(record, indent=1)))
    print(
        f"chapter runtime {seconds:.0f} s under the {chapter.profile.name!r} profile "
        f"({hits} cached results reused, {len(runs) - hits} computed)"
    )


def run_records(profile: str) -> list[dict]:
    """Every chapter's last run record under ``profile`` (as written by :func:`finish`)."""
    folder = records_dir(profile)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.exists() else []
