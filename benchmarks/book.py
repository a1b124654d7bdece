"""Each chapter's cold and warm execution time under a profile (``cpu`` unless ANALYSIS_PROFILE says).

Cold: every chapter runs in book order against a fresh, empty result cache (so the first chapter
also converts the GGUF weights, and later chapters reuse what earlier ones computed, exactly as a
first `make book` on a new machine does). Warm: the same again with that cache filled. Chapters
execute as `make book` executes them (nbclient on the MyST notebook, working directory book/).

    python benchmarks/book.py [--chapters intro causal_tracing] [--keep-cache DIR]

Last line: ``<chapter>.cold=<s> <chapter>.warm=<s> ... total.cold=<s> total.warm=<s>``.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    names = args.chapters or chapters()
    with tempfile.TemporaryDirectory(prefix="book-bench-") as tmp:
        cache_dir = Path(args.keep_cache or tmp)
        times: dict[str, float] = {}
        for phase in ("cold", "warm"):
            for name in names:
                times[f"{name}.{phase}"] = run(name, cache_dir)
                print(f"{name} {phase}: {times[f'{name}.{phase}']:.0f} s", flush=True)
        for phase in ("cold", "warm"):
            times[f"total.{phase}"] = sum(v for k, v in times.items() if k.endswith(f".{phase}") and "total" not in k)
    print(" ".join(f"{k}={v:.0f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
