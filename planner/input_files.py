"""Reading a file the user names: only regular files (a FIFO or a device would hang the read or never
end), and only up to a size bound (`/dev/zero`, a multi-GiB file by mistake), as one-line errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from planner.errors import PlannerError

MIB = 2**20


def check_regular(path: Path, what: str) -> int:
    """The size of `path` (symlinks followed), or a one-line error when it is not a readable regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PlannerError(f"{what} {path}: no such file: check the path") from None
    except OSError as exc:
        raise PlannerError(f"{what} {path}: cannot read ({exc.strerror}): check the path and its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise PlannerError(f"{what} {path} is not a regular file (a folder, FIFO or device): pass a file")
    return st.st_size


def read_bytes(path: Path, limit: int, what: str) -> bytes:
    """The whole file, refused above `limit` bytes."""
    size = check_regular(path, what)
    if size > limit:
        raise PlannerError(
            f"{what} {path} is {size / MIB:,.1f} MiB, above the {limit / MIB:g} MiB such a file can "
            "plausibly have: pass the right file"
        )
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # the file may have grown since the stat
    except OSError as exc:
        raise PlannerError(f"{what} {path}: cannot read ({exc.strerror}): check the path and its permissions") from None
    if len(data) > limit:
        raise PlannerError(
            f"{what} {path} is above the {limit / MIB:g} MiB such a file can plausibly have: pass the right file"
        )
    return data


def read_text(path: Path, limit: int, what: str) -> str:
    data = read_bytes(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PlannerError(f"{what} {path} is not UTF-8 text: pass the right file") from None
