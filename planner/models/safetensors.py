"""Tensor names, shapes and dtypes from safetensors headers, never the tensor data.

A safetensors file starts with an 8-byte little-endian header length and a JSON header mapping
each tensor name to `{"dtype", "shape", "data_offsets"}`; reading that prefix is enough.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.input_files import check_regular, read_text

HEADER_LIMIT = 100 * 2**20  # the format caps headers at 100 MB
INDEX_LIMIT = 64 * 2**20
MAX_RANK = 8
MAX_EXTENT = 2**40  # per dimension: far above any real tensor, and it keeps byte counts finite
_DAMAGED = "the file is damaged, download it again"


@dataclass(frozen=True)
class HeaderTensor:
    name: str
    dtype: str
    """safetensors dtype code: BF16, F16, F32, F8_E4M3, I32, U8..."""
    shape: tuple[int, ...]


def _shape(info: Any) -> tuple[int, ...] | None:
    """A header entry's shape when it is a list of non-negative integers (not "1024", not -1, not true)."""
    shape = info.get("shape") if isinstance(info, dict) else None
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        return None
    if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_EXTENT for d in shape):
        return None
    return tuple(shape)


def parse_header(raw: bytes, origin: str) -> list[HeaderTensor]:
    """Tensors listed in one safetensors JSON header (the `__metadata__` entry is skipped)."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PlannerError(
            f"{origin}: safetensors header is not valid JSON ({exc.__class__.__name__}): {_DAMAGED}"
        ) from None
    if not isinstance(header, dict):
        raise PlannerError(f"{origin}: safetensors header is not a JSON object: {_DAMAGED}")
    out = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = _shape(info)
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if shape is None or not isinstance(dtype, str) or not dtype:
            raise PlannerError(
                f"{origin}: tensor {name[:80]!r} lacks a dtype string or a shape of at most {MAX_RANK} "
                f"non-negative integers: {_DAMAGED}"
            )
        out.append(HeaderTensor(name, dtype, shape))
    return out


def read_file_header(path: Path) -> list[HeaderTensor]:
    size = check_regular(path, "safetensors file")  # a FIFO or device would block the read
    try:
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise PlannerError(f"{path}: too short to be a safetensors file: download it again")
            (length,) = struct.unpack("<Q", prefix)
            if length > HEADER_LIMIT or length > size - 8:
                raise PlannerError(f"{path}: safetensors header of {length} bytes is implausible: {_DAMAGED}")
            return parse_header(f.read(length), str(path))
    except OSError as exc:
        raise PlannerError(f"{path}: cannot read ({exc.strerror}): check the file and its permissions") from None


def _index_shards(index: Path) -> list[str]:
    try:
        weight_map = json.loads(read_text(index, INDEX_LIMIT, "safetensors index"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, RecursionError, KeyError, AttributeError, TypeError) as exc:
        raise PlannerError(
            f"{index}: not a valid safetensors index ({exc.__class__.__name__}): download it again"
        ) from None
    bad = [s for s in shards if not isinstance(s, str) or "/" in s or s in ("", ".", "..")]
    if bad:
        raise PlannerError(f"{index}: shard names must be file names in the folder, got {bad[0]!r}: download it again")
    return shards


def read_dir(model_dir: Path) -> list[HeaderTensor] | None:
    """All tensors of a checkpoint directory (sharded via `model.safetensors.index.json` or not);
    None when the directory has no safetensors files."""
    index = model_dir / "model.safetensors.index.json"
    try:
        if index.is_file():
            files = [model_dir / s for s in _index_shards(index)]
            missing = [f.name for f in files if not f.exists()]
            if missing:
                raise PlannerError(
                    f"{model_dir}: shards named in the index are missing ({', '.join(missing[:3])}): "
                    "finish the download or remove the index"
                )
        else:
            files = sorted(model_dir.glob("*.safetensors"))
    except OSError as exc:
        raise PlannerError(f"{model_dir}: cannot list the checkpoint ({exc.strerror}): check its permissions") from None
    if not files:
        return None
    return [t for f in files for t in read_file_header(f)]
