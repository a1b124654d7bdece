"""Each chapter's cold and warm execution time under a profile (``cpu`` unless ANALYSIS_PROFILE says).

Cold: every chapter runs in book order against a fresh, empty result cache (so the first chapter
also converts the GGUF weights, and later chapters reuse what earlier ones computed, exactly as a
first `make book` on a new machine does). Warm: the same again with that cache filled. Chapters
execute as `make book` executes them (nbclient on the MyST notebook, working directory book/).

    python benchmarks/book.py [--chapters intro causal_tracing] [--keep-cache DIR] [--warm-only]

``--warm-only --keep-cache DIR`` reuses the cache of a cold build that already ran (``make book``
with ``ANALYSIS_CACHE_DIR=DIR``): the cold seconds are read from that build's run records
(``DIR/book_runs/<profile>/<chapter>.json``, timed from ``book.start`` to ``book.finish``), and only
the warm runs execute.

Last line: ``<chapter>.cold=<s> <chapter>.warm=<s> ... total.cold=<s> total.warm=<s>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUN_ONE = """
import sys, jupytext
from nbclient import NotebookClient
nb = jupytext.read(sys.argv[1])
NotebookClient(nb, timeout=7200, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
"""


def chapters() -> list[str]:
    from analysis.book import chapters as toc

    return toc()


def run(chapter: str, cache_dir: Path) -> float:
    env = {
        **os.environ,
        "ANALYSIS_CACHE_DIR": str(cache_dir),
        "ANALYSIS_QUIET": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "ANALYSIS_PROFILE": os.environ.get("ANALYSIS_PROFILE", "cpu"),
    }
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", RUN_ONE, str(ROOT / "book" / f"{chapter}.md"), str(ROOT / "book")], env=env, check=True
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", nargs="*", default=None, help="chapter stems (default: the whole _toc.yml)")
    parser.add_argument(
        "--keep-cache", default=None, help="use (and keep) this cache folder instead of a temporary one"
    )
    parser.add_argument("--warm-only", action="store_true", help="cold times from the run records in --keep-cache")
    args = parser.parse_args()
    if args.warm_only and not args.keep_cache:
        parser.error("--warm-only needs --keep-cache DIR: the cache a cold build filled")
    names = args.chapters or chapters()
    with tempfile.TemporaryDirectory(prefix="book-bench-") as tmp:
        cache_dir = Path(args.keep_cache or tmp)
        times: dict[str, float] = {}
        if args.warm_only:
            records = cache_dir / "book_runs" / os.environ.get("ANALYSIS_PROFILE", "cpu")
            for name in names:
                times[f"{name}.cold"] = json.loads((records / f"{name}.json").read_text())["seconds"]
        for phase in ("warm",) if args.warm_only else ("cold", "warm"):
            for name in names:
                times[f"{name}.{phase}"] = run(name, cache_dir)
                print(f"{name} {phase}: {times[f'{name}.{phase}']:.0f} s", flush=True)
        for phase in ("cold", "warm"):
            times[f"total.{phase}"] = sum(v for k, v in times.items() if k.endswith(f".{phase}") and "total" not in k)
    print(" ".join(f"{k}={v:.0f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
