"""The package's shape: layers point one way, no private names cross modules, no module has grown
past a newcomer's afternoon, and importing a module changes no global state."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from analysis.config import ROOT

PACKAGE = ROOT / "analysis"
LAYERS = {  # a module may import its own layer and the layers below it, never above
    0: ("config", "progress", "cache", "models", "components", "hooks", "forward", "evaluate", "stats", "memory"),
    1: ("data",),
    2: ("tracing", "sae", "probing", "scores", "wanda", "saliency", "geometry"),
    3: ("compress",),
    4: ("studies",),
    5: ("plots", "book"),  # what chapters call to show results
}
RANK = {name: rank for rank, names in LAYERS.items() for name in names}
MAX_LINES = 450


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def top(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every ``analysis`` import, at any depth of the file."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("analysis"):
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("analysis")]
    return out


def target_of(module: str, names: list[str]) -> list[str]:
    parts = module.split(".")
    if len(parts) > 1:
        return [parts[1]]
    return names  # "from analysis import compress, hooks"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_layers_point_down(path):
    here = top(path)
    if here == "__init__":
        return
    assert here in RANK, f"{here} is in no layer: add it to LAYERS"
    tree = ast.parse(path.read_text())
    for module, names in imported(tree):
        for target in target_of(module, names):
            if target in RANK:
                assert RANK[target] <= RANK[here], (
                    f"{path.name} ({here}, layer {RANK[here]}) imports {target} (layer {RANK[target]})"
                )


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_crosses_modules(path):
    for module, names in imported(ast.parse(path.read_text())):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{path.relative_to(ROOT)} imports private {private} from {module}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_short(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines; split it by idea"


def _global_state_calls(tree: ast.Module) -> list[str]:
    """Calls at module level (outside functions and classes) that change process-wide state; a
    warnings filter inside ``with warnings.catch_warnings():`` is scoped, not process-wide."""
    found = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(stmt, ast.With) and any(
            ast.unparse(item.context_expr) == "warnings.catch_warnings()" for item in stmt.items
        ):
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call):
                src = ast.unparse(node.func)
                if src in (
                    "warnings.filterwarnings",
                    "warnings.simplefilter",
                    "os.environ.setdefault",
                    "torch.set_num_threads",
                    "torch.manual_seed",
                ) or src.startswith("os.environ.update"):
                    found.append(src)
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.ctx, ast.Store)
                and ast.unparse(node.value) == "os.environ"
            ):
                found.append("os.environ[...] =")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_importing_changes_no_global_state(path):
    assert not _global_state_calls(ast.parse(path.read_text())), path.relative_to(ROOT)


def test_the_checks_can_fail():
    bad = ast.parse("import os, warnings\nwarnings.filterwarnings('ignore')\nos.environ['X'] = '1'\n")
    assert _global_state_calls(bad) == ["warnings.filterwarnings", "os.environ[...] ="]
    scoped = ast.parse("import warnings\nwith warnings.catch_warnings():\n    warnings.simplefilter('ignore')\n")
    assert _global_state_calls(scoped) == []
    tree = ast.parse("from analysis.studies.sweep import Cell\nfrom analysis import compress, _x\n")
    assert imported(tree) == [("analysis.studies.sweep", ["Cell"]), ("analysis", ["compress", "_x"])]
    assert target_of("analysis", ["compress", "hooks"]) == ["compress", "hooks"]


@pytest.mark.parametrize("path", sorted((PACKAGE / "studies").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_study_imports_no_other_study(path):
    parts = path.relative_to(PACKAGE / "studies").parts
    if len(parts) < 2:  # registry, verdicts and the package docstring: shared by every study
        return
    shared = {parts[0], "verdicts"}
    for module, names in imported(ast.parse(path.read_text())):
        if module == "analysis.studies":
            others = set(names) - shared
        elif module.startswith("analysis.studies."):
            others = {module.split(".")[2]} - shared
        else:
            continue
        assert not others, (
            f"{path.relative_to(ROOT)} imports the study {sorted(others)}; share it through a lower layer"
        )
