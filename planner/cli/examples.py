"""Render the reference plans of `deploy/examples/plans.yaml` into `deploy/examples/<name>/`.

python -m planner.cli.examples            # rewrite the examples
python -m planner.cli.examples --check    # exit 1 when they drift
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from planner.paths import deploy_dir


def examples_dir() -> Path:
    return deploy_dir() / "examples"


def reference_plans() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((examples_dir() / "plans.yaml").read_text(encoding="utf-8"))


def _parser() -> argparse.ArgumentParser:
    from planner.cli.launch_options import add_launch_options
    from planner.cli.options import add_plan_options

    p = argparse.ArgumentParser(prog="examples")
    add_plan_options(p)
    add_launch_options(p)
    return p


def render_example(argv: list[str], out: Path) -> dict[str, str]:
    from planner.cli.emit import plan_for_launch
    from planner.cli.launch_options import launch_options
    from planner.launch.emit import emit_all

    a = _parser().parse_args(argv)
    result, req = plan_for_launch(a)
    return emit_all(result, req, out, force=True, **launch_options(a))  # the examples are rewritten in place


def render_all(root: Path) -> None:
    for name, spec in reference_plans().items():
        render_example([str(x) for x in spec["argv"]], root / name)


def drift(root: Path | None = None) -> list[str]:
    """Files that differ between the committed examples and a fresh rendering."""
    root = root or examples_dir()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        render_all(fresh)
        out = []
        for name in reference_plans():
            new, old = fresh / name, root / name
            files = {p.name for p in new.iterdir()} | ({p.name for p in old.iterdir()} if old.is_dir() else set())
            out += [
                f"{name}/{f}"
                for f in sorted(files)
                if not (new / f).is_file()
                or not (old / f).is_file()
                or not filecmp.cmp(new / f, old / f, shallow=False)
            ]
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m planner.cli.examples")
    p.add_argument("--check", action="store_true", help="only report drift (exit 1 when any)")
    a = p.parse_args(argv)
    if a.check:
        changed = drift()
        print("\n".join(changed) or "deploy/examples is up to date")
        return 1 if changed else 0
    render_all(examples_dir())
    print(f"wrote {examples_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
