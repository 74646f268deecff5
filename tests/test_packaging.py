"""Every package under planner/ is installed by a plain `pip install .` (pyproject's packages list):
a module missing there works in the editable checkout and fails for every user."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_package_is_in_the_packages_list():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "planner").rglob("__init__.py")}
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_every_console_script_resolves_inside_a_listed_package():
    """`vllm-planner = "planner.cli:run"`: the target imports, is callable, and its package ships."""
    import importlib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    scripts = project["project"]["scripts"]
    assert scripts, "no [project.scripts]"
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
        package = module if (REPO / module.replace(".", "/") / "__init__.py").exists() else module.rpartition(".")[0]
        assert package in listed, f"{name}: {package} is not in [tool.setuptools] packages"
