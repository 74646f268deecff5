"""Where a user's calibration overlay lives, and reading it (the I/O edge of `vllm-planner calibrate`).

The overlay is `$XDG_CONFIG_HOME/vllm-planner/overheads.yaml` (`~/.config/vllm-planner/...` when
XDG_CONFIG_HOME is unset), or the file given with `--overheads FILE`. A plan reads it only when it is
there: one stat call per process when there is none. The file has the schema of
profiles/vllm/overheads.yaml (calibration sets only) and goes through the same checked loader.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

from planner.errors import PlannerError
from planner.overhead_table import CoefficientSet

_chosen: Path | None = None
"""The file given with --overheads (None: the default location)."""
_off = False


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vllm-planner" / "overheads.yaml"


def use(path: str | Path | None) -> None:
    """Plan with this overlay file (None: back to the default location). A named file must exist."""
    global _chosen
    if path is not None and not Path(path).is_file():
        raise PlannerError(f"--overheads {path}: no such file; write one with `vllm-planner calibrate LOG`")
    _chosen = Path(path) if path is not None else None


@contextlib.contextmanager
def suspended():
    """Plan with the shared terms only (calibrate replays a start-up against them)."""
    global _off
    saved, _off = _off, True
    try:
        yield
    finally:
        _off = saved


def active_path() -> Path | None:
    """The overlay a plan uses now: the chosen file, else the default one when it exists."""
    if _off:
        return None
    if _chosen is not None:
        return _chosen
    return _default_if_present(default_path())


@functools.cache
def _default_if_present(path: Path) -> Path | None:
    return path if path.is_file() else None


def sets() -> tuple[Path | None, tuple[CoefficientSet, ...]]:
    """(file, its calibration sets); (None, ()) with no overlay."""
    path = active_path()
    if path is None:
        return None, ()
    st = path.stat()
    return path, _load(path, st.st_mtime_ns, st.st_size).sets


@functools.cache
def _load(path: Path, mtime_ns: int, size: int):
    from planner import overhead_table, overheads  # local: overheads imports this module lazily

    return overhead_table.load(path, overheads._first(), calibration=True)
