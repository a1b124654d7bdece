"""Memory, measured: the peak a computation reached, and a pre-flight check before a long run.

A study on a 7B model can fail an hour in, when it first builds an object that does not fit. We do
not estimate every tensor by hand from shapes (a copy of each study that drifts silently); we
measure what each computation actually held, and check only the few largest objects beforehand.

*Measured* (:func:`measure`). On the host, the memory the process holds (:func:`rss`: its
anonymous and shared resident pages) is sampled by a thread every few milliseconds while the
computation runs; the peak and the peak minus the level at the start are reported. This sees every
allocation, PyTorch's CPU tensors included; ``tracemalloc`` does not see those (PyTorch allocates
outside Python's allocator) and slows every Python allocation, and ``getrusage``'s ``ru_maxrss``
is a high-water mark of the whole process that never falls, so it cannot attribute a peak to a
computation that runs after a larger one. "Added" is what the process grew by: memory the allocator
reuses from earlier work (freed but still held) is not counted again. A spike shorter than the
sampling interval can be missed; the level at the end is always read. On a GPU,
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` is exact; measures nest (a
measure that starts inside another folds the outer's peak so far into it before the reset).
Neither touches the computation's values.

*Checked before* (:func:`preflight`). The model is built on the ``meta`` device from its
:class:`~transformer_lens.HookedTransformerConfig` (no memory, 0.15 s for a 7B-shaped config, with
TransformerLens's own parameter and buffer shapes); the study's largest known objects are added
and the sum compared with the device's memory (a CUDA device) or the host's RAM, with a warning
when it cannot fit.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

MiB = 2**20
HOST, CUDA = "host RSS", "cuda allocated"
"""The two measures: the process's resident set, and PyTorch's CUDA allocations."""


@dataclass(frozen=True)
class Peak:
    """The most memory held while a computation ran, in bytes, by one ``measure`` (:data:`HOST` or
    :data:`CUDA`): ``total`` is the level, ``added`` the level minus the one at the start."""

    measure: str
    total: int
    added: int


def rss() -> int | None:
    """The memory this process holds in bytes: its anonymous and shared-memory resident pages
    (``RssAnon + RssShmem`` of ``/proc/self/status``). File-backed pages (libraries, mapped weight
    files) are left out: the kernel may drop and reread them at any time. None where ``/proc`` is
    missing."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("RssAnon", "RssShmem")))
        return sum(int(v.split()[0]) for v in fields.values()) * 1024 if fields else None
    except (OSError, ValueError):
        return None


class Meter:
    """What :func:`measure` yields; after the block, :attr:`peaks` holds the host peak, then the
    CUDA peak when CUDA was in use."""

    def __init__(self, interval: float, cuda: bool):
        self.interval, self.cuda, self.peaks = interval, cuda, ()
        self.start = rss()
        self.high = self.start or 0
        self.cuda_start = self.cuda_high = torch.cuda.memory_allocated() if cuda else 0
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True, name="analysis.memory")

    def raise_to(self, host: int, cuda: int = 0) -> None:
        """Fold levels seen elsewhere (a nested measure, the sampler) into this one's highs."""
        with self.lock:
            self.high, self.cuda_high = max(self.high, host), max(self.cuda_high, cuda)

    def sample(self) -> None:
        while not self.stop.wait(self.interval):
            self.raise_to(rss() or 0)


_OPEN: list[Meter] = []
"""The measures open now, outermost first."""


@contextmanager
def measure(interval: float = 0.005) -> Iterator[Meter]:
    """Measure the peak memory of the ``with`` block (see the module docstring); the yielded
    :class:`Meter`'s ``peaks`` is set when the block ends, also when it raises."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:  # fold the peak so far into the open measures before resetting it
        for opened in _OPEN:
            opened.raise_to(0, torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
    meter = Meter(interval, cuda)
    if meter.start is not None:
        meter.thread.start()
    _OPEN.append(meter)
    try:
        yield meter
    finally:
        _OPEN.remove(meter)
        peaks = []
        if meter.start is not None:
            meter.stop.set()
            meter.thread.join()
            meter.raise_to(rss() or 0)
            peaks.append(Peak(HOST, meter.high, meter.high - meter.start))
        if cuda:
            meter.raise_to(0, torch.cuda.max_memory_allocated())
            peaks.append(Peak(CUDA, meter.cuda_high, meter.cuda_high - meter.cuda_start))
        for opened in _OPEN:  # what the inner block held, the outer ones held too
            opened.raise_to(meter.high, meter.cuda_high)
        meter.peaks = tuple(peaks)


def available(device: str) -> int | None:
    """Bytes of ``device``'s memory (a CUDA device) or of the host's RAM (any other device)."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(torch.device(device).index or 0).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def model_bytes(cfg: HookedTransformerConfig) -> int:
    """Bytes of the parameters and buffers of ``HookedTransformer(cfg)``, built on the meta device."""

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(dataclasses.replace(cfg, tokenizer_name=None), move_to_device=False)
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def preflight(cfg: HookedTransformerConfig, largest: dict[str, int], device: str) -> bool:
    """Whether the model of ``cfg`` and the study's ``largest`` objects (``{what: bytes}``) fit on
    ``device``; prints the sum and warns when it does not fit."""
    need = {"model (parameters and buffers)": model_bytes(cfg), **largest}
    total, have = sum(need.values()), available(device)
    parts = ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in need.items())
    print(f"pre-flight on {device}: {total / 2**30:.2f} GiB ({parts}) of {(have or 0) / 2**30:.1f} GiB")
    if have is not None and total > have:
        warnings.warn(
            f"{cfg.model_name} needs at least {total / 2**30:.1f} GiB on {device}, which has "
            f"{have / 2**30:.1f} GiB: lower the sizes or split the model (n_devices).",
            stacklevel=2,
        )
    return have is None or total <= have
