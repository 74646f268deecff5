"""Writing the files a command emits, safely: nothing replaced without `force` (and then the whole
list checked first), every file written to a private temporary file in the same folder and renamed
over the target (atomic: a full disk or a kill leaves the old file or none, never a fragment), and a
symlink in the target folder replaced as a link, never followed.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from planner.errors import PlannerError


@dataclass(frozen=True)
class OutFile:
    """One file to write."""

    name: str
    """File name inside the target folder (no folder part)."""
    text: str
    executable: bool = False
    """Mode 0755 (less the umask) instead of 0644: the shell scripts."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _describe(err: OSError, path: Path | str) -> str:
    return f"cannot write {path}: {err.strerror or err}"


def existing(paths: list[Path]) -> list[Path]:
    """The paths that already exist, links (dangling ones too) included."""
    return [p for p in paths if os.path.lexists(p)]


def refuse_overwrite(paths: list[Path], force: bool) -> None:
    """A one-line PlannerError naming what would be replaced, unless `force`."""
    there = existing(paths)
    if there and not force:
        names = ", ".join(str(p) for p in there[:6]) + (f" and {len(there) - 6} more" if len(there) > 6 else "")
        raise PlannerError(f"would replace {names}: pass --force to overwrite, or choose another folder")


def prepare_dir(out_dir: Path) -> None:
    """Create the folder (and parents); a file in its place is an error."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PlannerError(f"{out_dir} exists and is not a folder: choose another --out") from None
    except OSError as e:
        raise PlannerError(_describe(e, out_dir)) from None


def atomic_write(path: Path, text: str | bytes, executable: bool = False) -> Path:
    """Write `text` (UTF-8; bytes as they are: a PNG) to `path` through a private temporary file and a rename."""
    mode = (0o777 if executable else 0o666) & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise PlannerError(_describe(e, path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text if isinstance(text, bytes) else text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)  # replaces a symlink itself, never its target
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise PlannerError(_describe(e, path)) from None
        raise
    return path


def write_files(out_dir: Path, files: list[OutFile], force: bool = False) -> list[Path]:
    """Write every file into `out_dir`; without `force` nothing is written if any would be replaced."""
    paths = [out_dir / f.name for f in files]
    if any(Path(f.name).name != f.name or f.name in ("", ".", "..") for f in files):
        raise ValueError(f"file names must not hold a folder: {[f.name for f in files]}")
    prepare_dir(out_dir)
    refuse_overwrite(paths, force)
    return [atomic_write(p, f.text, f.executable) for p, f in zip(paths, files)]


def open_private_new(path: Path, force: bool = False) -> int:
    """A file descriptor for a new file only this user can read (0600), created without following a
    symlink; with `force` an existing file (or link) at `path` is removed first."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        if force and os.path.lexists(path):
            os.unlink(path)
        return os.open(path, flags, 0o600)
    except FileExistsError:
        raise PlannerError(f"would replace {path}: pass --force to overwrite, or choose another path") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PlannerError(f"{path} is a symlink: refusing to write through it") from None
        raise PlannerError(_describe(e, path)) from None
