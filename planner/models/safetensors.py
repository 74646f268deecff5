"""Tensor names, shapes and dtypes from safetensors headers, never the tensor data.

A safetensors file starts with an 8-byte little-endian header length and a JSON header mapping
each tensor name to `{"dtype", "shape", "data_offsets"}`; reading that prefix is enough.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from planner.errors import PlannerError

_MAX_HEADER_BYTES = 100 * 2**20  # the format caps headers at 100 MB


@dataclass(frozen=True)
class HeaderTensor:
    name: str
    dtype: str
    """safetensors dtype code: BF16, F16, F32, F8_E4M3, I32, U8..."""
    shape: tuple[int, ...]


def parse_header(raw: bytes, origin: str) -> list[HeaderTensor]:
    """Tensors listed in one safetensors JSON header (the `__metadata__` entry is skipped)."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlannerError(f"{origin}: safetensors header is not valid JSON ({exc.__class__.__name__}): the file is damaged, download it again") from None
    if not isinstance(header, dict):
        raise PlannerError(f"{origin}: safetensors header is not a JSON object: the file is damaged, download it again")
    try:
        return [HeaderTensor(name, str(info["dtype"]), tuple(int(d) for d in info["shape"]))
                for name, info in header.items() if name != "__metadata__"]
    except (KeyError, TypeError, ValueError):
        raise PlannerError(f"{origin}: a safetensors header entry lacks a valid dtype or shape: the file is damaged, download it again") from None


def read_file_header(path: Path) -> list[HeaderTensor]:
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise PlannerError(f"{path}: too short to be a safetensors file: download it again")
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER_BYTES:
            raise PlannerError(f"{path}: safetensors header of {length} bytes is implausible: the file is damaged, download it again")
        return parse_header(f.read(length), str(path))


def read_dir(model_dir: Path) -> list[HeaderTensor] | None:
    """All tensors of a checkpoint directory (sharded via `model.safetensors.index.json` or not);
    None when the directory has no safetensors files."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
            raise PlannerError(f"{index}: not a valid safetensors index ({exc.__class__.__name__}): download it again") from None
        files = [model_dir / s for s in shards]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise PlannerError(f"{model_dir}: shards named in the index are missing ({', '.join(missing[:3])}): finish the download or remove the index")
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    return [t for f in files for t in read_file_header(f)]
