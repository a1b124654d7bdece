"""The set-up command line: ``python -m analysis.data fetch|verify|lock|sizes``.

``fetch [NAMES...] [--force]`` (what ``make data`` runs) downloads the raw sources that are not
complete yet and checks them against the lock; ``verify`` re-checks every fetched file against
its manifest and the lock (exit status 1 on any difference); ``lock`` downloads every package
afresh and prints the lock table for ``analysis/data/lock.py`` (after moving a pin); ``sizes``
prints every set's size, and each fetched source's package and bytes, as JSON.
"""

from __future__ import annotations

import argparse
import json
import pprint
import sys
import time

import analysis.data
from analysis.data.sources import SOURCES, DataSourceError, computed_lock, fetch, raw_dir, raw_sizes, verify


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m analysis.data", description=analysis.data.__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    names_help = f"any of {', '.join(SOURCES)} (default: all)"
    fetch_cmd = sub.add_parser("fetch", help="download raw sources into RAW_DIR, checked against the lock")
    fetch_cmd.add_argument("names", nargs="*", help=names_help)
    fetch_cmd.add_argument("--force", action="store_true", help="download again even if present")
    verify_cmd = sub.add_parser("verify", help="re-check fetched files against their manifests and the lock")
    verify_cmd.add_argument("names", nargs="*", help=names_help)
    lock_cmd = sub.add_parser("lock", help="download every package afresh and print the lock table")
    lock_cmd.add_argument("names", nargs="*", help=names_help)
    sub.add_parser("sizes", help="print the size of every set as JSON")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        start = time.perf_counter()
        try:
            fetch(args.names or None, force=args.force)
        except DataSourceError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"done in {time.perf_counter() - start:.1f} s; raw data in {raw_dir()}")
    elif args.command == "verify":
        problems = verify(args.names or None)
        for name, found in problems.items():
            print(f"{name}: {'ok' if not found else 'FAILED'}")
            for line in found:
                print(f"  {line}")
        return int(any(problems.values()))
    elif args.command == "lock":
        print(f"LOCK: dict[str, dict[str, str]] = {pprint.pformat(computed_lock(args.names or None), width=110)}")
    else:
        print(json.dumps({"raw": raw_sizes(), **analysis.data.sizes()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
