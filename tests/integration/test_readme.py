"""The README's commands work as written: its Python snippets run (smoke profile), its short shell
commands run, and every `make` target it names exists."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from analysis.config import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.M | re.S)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "ANALYSIS_PROFILE": "smoke",
        "ANALYSIS_QUIET": "1",
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def shell_commands() -> list[str]:
    commands = []
    for lang, body in BLOCKS:
        if lang in ("bash", "sh", "shell"):
            commands += [
                line.split("  #")[0].strip()
                for line in body.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
    return commands


def test_readme_has_commands_and_snippets():
    assert any(c.startswith("make test") for c in shell_commands())
    assert any(lang == "python" for lang, _ in BLOCKS)


@pytest.mark.parametrize("command", [c for c in shell_commands() if c.startswith("make ")])
def test_make_targets_exist(command):
    """`make -n` resolves the target without running it (the long ones run in CI and the book build)."""
    target = shlex.split(command)[1]
    out = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, env=_env())
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(
    "command",
    [c for c in shell_commands() if not c.startswith("make ") and "<" not in c and "ANALYSIS_PROFILE=gpu" not in c],
)
def test_short_shell_commands_run(command, tmp_path):
    """Commands that finish within a minute on the smoke profile run as written."""
    before = set((ROOT / "book").iterdir())
    try:
        out = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, env=_env(), timeout=300)
    finally:
        for made in set((ROOT / "book").iterdir()) - before:  # e.g. the notebook jupytext writes
            made.unlink()
    assert out.returncode == 0, f"{command!r} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"


def test_python_snippets_run_in_order(tmp_path):
    """The README's Python blocks run top to bottom in one interpreter, as a reader pastes them."""
    code = "\n\n".join(body for lang, body in BLOCKS if lang == "python")
    script = tmp_path / "readme.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, env=_env(), timeout=900
    )
    assert out.returncode == 0, f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
