"""A disk cache for expensive results, keyed by what produced them.

A causal trace over hundreds of facts or a compression sweep takes minutes to hours on a CPU,
and a chapter is rebuilt far more often than its inputs change. Every such result is stored
under ``data/cache/<name>/<key>.pt`` where the key is a hash of

    (the function's name, its configuration, the model, the data's fingerprint)

so that changing any input gives a new entry and never a stale one. The data's fingerprint
(:func:`data_fingerprint`) hashes ``DATA_VERSION`` and the content hashes that every packaged
source's ``MANIFEST.json`` lists, so pointing ``ANALYSIS_DATA_DIR`` at other data, or fetching
new data, never serves a result computed from the old. Writes go to a temporary
file that is renamed into place (``os.replace`` is atomic), so an interrupted run leaves
either the old entry or none. An entry that cannot be read (a crash in an older version, a
disk error) is reported with a warning and recomputed. A sweep caches each cell separately
(:func:`cached_map`), so an interrupted sweep resumes at the first missing cell.

Every call is logged in :data:`RUNS`: a hit (with the record of the run that computed it, kept
in a ``<key>.run.json`` file beside the entry), or a computed entry with its seconds and the peak
memory it reached (:func:`analysis.memory.measure`: what the process holds on the host, and CUDA's allocations
when CUDA is in use), which the book's build appendix shows per computation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, TypeVar

import torch

import analysis.config
from analysis import memory
from analysis.config import CACHE_DIR
from analysis.progress import progress

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Run:
    """One call of :func:`cached`: a hit ran nothing; a miss ran ``seconds`` and reached ``peaks``
    (seconds and peaks are inclusive: a computation that calls :func:`cached` inside counts those)."""

    name: str
    hit: bool
    seconds: float = 0.0
    peaks: tuple[memory.Peak, ...] = ()
    recorded: "Run | None" = None
    """For a hit: the run that computed the entry (its seconds and peaks, from the record written
    beside the entry), or None where the entry has no record (written by an older version)."""


RUNS: list[Run] = []
"""Every call of :func:`cached` in this process, in order; the book reports them per chapter."""


MOVED: dict[str, str] = {
    "analysis.studies.adaptive.runner": "analysis.studies.adaptive.results",
}
"""Modules whose result classes moved (old module -> new): entries pickled before the move still
load, instead of being recomputed. A class that changes its fields is a new cache entry instead
(change its key), never a line here."""


class _MovedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED.get(module, module), name)


_PICKLE = SimpleNamespace(
    __name__="analysis.cache.moved_pickle",
    Unpickler=_MovedUnpickler,
    load=lambda f, **kw: _MovedUnpickler(f, **kw).load(),
)
"""A ``pickle_module`` for ``torch.load`` that reads classes through :data:`MOVED`."""


class CacheError(RuntimeError):
    """The cache directory cannot be used (not writable)."""


def _canonical(obj: Any) -> Any:
    """A JSON-able form of a configuration: dataclasses, tuples, paths and dtypes included."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        values = dataclasses.asdict(obj)
        for f in dataclasses.fields(obj):
            if not f.metadata.get("cache_key", True):  # a choice the key records elsewhere (e.g. model_key)
                del values[f.name]
        return {"__dataclass__": type(obj).__name__, **_canonical(values)}
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


_FINGERPRINTS: dict[tuple, str] = {}
"""Fingerprints computed in this process, keyed by the manifests' (path, mtime_ns, size)."""


def data_fingerprint() -> str:
    """A sha256 over ``DATA_VERSION`` and the sorted (source, file, sha256) entries of every
    ``RAW_DIR/<source>/MANIFEST.json``'s ``"sha256"`` table: it changes when the data does.

    ``RAW_DIR`` is read from :mod:`analysis.config` at each call; the result is remembered per
    process until a manifest is added, removed or rewritten. Without manifests it is a constant.
    """
    raw = Path(analysis.config.RAW_DIR)
    manifests = sorted(raw.glob("*/MANIFEST.json")) if raw.is_dir() else []
    stamp = (analysis.config.DATA_VERSION, *((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in manifests))
    if stamp not in _FINGERPRINTS:
        entries = []
        for path in manifests:
            try:
                table = json.loads(path.read_text()).get("sha256")
            except (OSError, ValueError, AttributeError):
                table = None
            if isinstance(table, dict):
                entries += [(path.parent.name, str(rel), str(digest)) for rel, digest in table.items()]
            else:  # no content table: the manifest's own bytes stand for the data
                entries.append((path.parent.name, "MANIFEST.json", hashlib.sha256(path.read_bytes()).hexdigest()))
        payload = json.dumps({"version": analysis.config.DATA_VERSION, "files": sorted(entries)})
        _FINGERPRINTS[stamp] = hashlib.sha256(payload.encode()).hexdigest()
    return _FINGERPRINTS[stamp]


def cache_key(name: str, config: Any = None, model: str | None = None) -> str:
    """The hex key of (name, config, model, :func:`data_fingerprint`); stable across runs and machines."""
    payload = json.dumps(
        {"name": name, "config": _canonical(config), "model": model, "data": data_fingerprint()},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def tensors_hash(tensors: Iterable[torch.Tensor]) -> str:
    """A content hash (BLAKE2b, 16 bytes, hex) of tensors' dtypes, shapes and bytes, in order.

    Equal only when every tensor is bit-for-bit equal: unlike a sum it tells apart two weights
    whose entries are a permutation of each other.
    """
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class DiskCache:
    """A folder of ``torch.save`` files, one per key, written atomically."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else CACHE_DIR

    def check_writable(self) -> None:
        """Raise :class:`CacheError` with a fix if the cache folder cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root):
                pass
        except OSError as err:
            raise CacheError(
                f"The result cache folder {self.root} is not writable ({err.strerror}). "
                "Set ANALYSIS_CACHE_DIR to a writable folder, or fix the folder's permissions."
            ) from err

    def path(self, name: str, key: str) -> Path:
        return self.root / name / f"{key}.pt"

    def record_path(self, name: str, key: str) -> Path:
        """The JSON record beside an entry: the seconds and peak memory its computation took."""
        return self.root / name / f"{key}.run.json"

    def save_record(self, name: str, key: str, run: Run) -> None:
        payload = {"seconds": run.seconds, "peaks": [dataclasses.astuple(p) for p in run.peaks]}
        atomic_write(self.record_path(name, key), lambda p: p.write_text(json.dumps(payload)))

    def load_record(self, name: str, key: str) -> Run | None:
        """The computing :class:`Run` of an entry, or None when it has no readable record."""
        try:
            payload = json.loads(self.record_path(name, key).read_text())
            peaks = tuple(memory.Peak(*p) for p in payload["peaks"])
            return Run(name, hit=False, seconds=float(payload["seconds"]), peaks=peaks)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def load(self, name: str, key: str) -> tuple[bool, Any]:
        """``(True, value)`` for a readable entry, ``(False, None)`` when missing or corrupt."""
        path = self.path(name, key)
        if not path.exists():
            return False, None
        try:
            return True, torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PICKLE)
        except Exception as err:  # corrupt or partial: recompute, never crash
            warnings.warn(f"Cache entry {path} is unreadable ({type(err).__name__}); recomputing.")
            path.unlink(missing_ok=True)
            return False, None

    def save(self, name: str, key: str, value: Any) -> None:
        self.check_writable()
        atomic_write(self.path(name, key), lambda p: torch.save(value, p))

    def clear(self, name: str | None = None) -> int:
        """Delete all entries (or those of one name); returns how many were removed."""
        folder = self.root / name if name else self.root
        files = list(folder.rglob("*.pt")) if folder.exists() else []
        for f in files:
            f.unlink()
        for f in folder.rglob("*.run.json") if folder.exists() else []:
            f.unlink()
        return len(files)


def cached(
    name: str,
    compute: Callable[[], T],
    config: Any = None,
    model: str | None = None,
    cache: DiskCache | None = None,
    refresh: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> T:
    """``compute()``, or its stored result for the same (name, config, model, data fingerprint);
    logged in :data:`RUNS` with the seconds ``clock`` counted and the peak memory measured."""
    cache = cache or DiskCache()
    key = cache_key(name, config, model)
    if not refresh:
        hit, value = cache.load(name, key)
        if hit:
            RUNS.append(Run(name, hit=True, recorded=cache.load_record(name, key)))
            return value
    cache.check_writable()  # fail before, not after, an hour of work
    t0 = clock()
    with memory.measure() as meter:
        value = compute()
    run = Run(name, hit=False, seconds=clock() - t0, peaks=meter.peaks)
    RUNS.append(run)
    cache.save(name, key, value)
    cache.save_record(name, key, run)
    return value


def cached_map(
    name: str,
    items: Iterable[Any],
    compute: Callable[[Any], T],
    config: Any = None,
    model: str | None = None,
    cache: DiskCache | None = None,
    desc: str | None = None,
) -> list[T]:
    """``[compute(item) for item in items]`` with one cache entry per item, so it resumes."""
    items = list(items)
    return [
        cached(name, lambda item=item: compute(item), {"config": config, "item": item}, model, cache)
        for item in progress(items, desc=desc or name)
    ]
