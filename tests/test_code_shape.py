"""The shape issue #16 set for the code under planner/: no function over 60 lines, no module over 450, and
profile data read only through the one checked loader (planner/profile_data.py): a module that parses
YAML itself is one of the few named here, each with why. Read from the source, every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "planner"
MODULES = sorted(PKG.rglob("*.py"))
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450

RAW_YAML = {
    "planner/datafiles.py": "the YAML loader itself (C loader where there is one); profile_data reads through it",
    "planner/profile_data.py": "the checked loader",
    "planner/calibrate_io.py": "a user's calibration overlay, rewritten after overhead_table.load checked it",
    "planner/cli/examples.py": "deploy/examples/plans.yaml, the rendered examples' index (not profiles/)",
    "planner/launch/deployment.py": "deploy/templates/sizing.yaml (not profiles/)",
    "planner/launch/templates.py": "the deployment templates themselves (not profiles/)",
}
"""Modules that parse YAML without the checked loader, and why; every other module reads through it."""
_YAML_CALLS = {"load", "safe_load", "safe_load_all", "load_all", "full_load", "unsafe_load", "parse"}


def _rel(path: Path) -> str:
    return path.relative_to(PKG.parent).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_no_function_is_over_60_lines(path):
    long = [
        f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(_tree(path))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{_rel(path)}: split {', '.join(long)} (at most {MAX_FUNCTION_LINES} lines)"


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_no_module_is_over_450_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_rel(path)}: {lines} lines; split it along a seam (at most {MAX_MODULE_LINES})"


def _raw_yaml_reads(tree: ast.Module) -> list[str]:
    """Calls of yaml.<load...>(...) and of datafiles' load_yaml / load_yaml_text, by line."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "yaml":
            if f.attr in _YAML_CALLS:
                out.append(f"yaml.{f.attr} (line {node.lineno})")
        elif isinstance(f, (ast.Name, ast.Attribute)):
            name = f.id if isinstance(f, ast.Name) else f.attr
            if name in ("load_yaml", "load_yaml_text"):
                out.append(f"{name} (line {node.lineno})")
    return out


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_yaml_is_read_through_the_checked_loader(path):
    reads = _raw_yaml_reads(_tree(path))
    if _rel(path) in RAW_YAML:
        assert reads, f"{_rel(path)} parses no YAML any more: drop it from RAW_YAML"
    else:
        assert not reads, (
            f"{_rel(path)}: {', '.join(reads)}: read profile data with planner.profile_data "
            "(read_mapping + convert / load_table / load_document and a typed schema)"
        )


def test_the_checks_see_what_they_look_for():
    """The walkers find a long function, a raw YAML read in both spellings, and nothing in clean code."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    long = ast.parse(f"def f():\n{body}\n")
    assert long.body[0].end_lineno - long.body[0].lineno + 1 == MAX_FUNCTION_LINES + 1
    raw = ast.parse("import yaml\nyaml.safe_load(t)\nfrom planner.datafiles import load_yaml\nload_yaml(p)\n")
    assert _raw_yaml_reads(raw) == ["yaml.safe_load (line 2)", "load_yaml (line 4)"]
    assert _raw_yaml_reads(ast.parse("from planner.profile_data import read_mapping\nread_mapping(p, 'x')\n")) == []
