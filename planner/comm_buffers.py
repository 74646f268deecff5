"""NCCL's and vLLM's communication buffers in device memory at TP 2, by interconnect class, built
from their documented sizes (profiles/vllm/comm_buffers.yaml): NCCL's receive buffers per channel
and peer where its transport keeps them on the GPU, plus vLLM's custom all-reduce buffers where vLLM
enables it. benchmarks/fit_overheads.py writes these figures into overheads.yaml (non_torch_comm_gib,
the `tp2` of each class but NVLS, which is measured); not read on the planning path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from planner.paths import profiles_dir
from planner.profile_data import FrozenMap, Range, convert, data_error, load_ranges, lookup, read_mapping
from planner.units import GIB


@dataclass(frozen=True)
class Sized:
    bytes: int
    source: str


@dataclass(frozen=True)
class LinkClass:
    nccl_channels: int
    """Channels whose receive buffers NCCL keeps in device memory (0: host memory)."""
    custom_all_reduce: bool
    why: str


@dataclass(frozen=True)
class Table:
    nccl_connection_bytes: int
    custom_all_reduce: tuple[Range, ...]
    classes: FrozenMap


@functools.cache
def _table() -> Table:
    from planner import releases

    path = profiles_dir() / "vllm" / "comm_buffers.yaml"
    doc = read_mapping(path, "communication buffer table")
    nccl = convert(doc.get("nccl_connection_bytes"), FrozenMap, "nccl_connection_bytes", path)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in nccl.values()):
        raise data_error(path, "nccl_connection_bytes: every protocol's buffer must be a whole number of bytes")
    raw = doc.get("classes")
    if not isinstance(raw, dict) or not raw:
        raise data_error(path, "'classes' must map interconnect classes to their buffers")
    classes = FrozenMap({k: convert(v, LinkClass, f"classes.{k}", path) for k, v in raw.items()})
    first = releases.parse_version(releases.supported_range()[0])
    ar = load_ranges("custom_all_reduce", doc.get("custom_all_reduce"), Sized, first, path)
    return Table(sum(nccl.values()), ar, classes)


def classes() -> tuple[str, ...]:
    return tuple(_table().classes)


def tp2_bytes(link: str, version: str) -> int:
    """Device memory per GPU that NCCL and custom all-reduce hold at TP 2 over `link` on vLLM `version`."""
    from planner.releases import parse_version

    t = _table()
    c = t.classes[link]
    ar = lookup(t.custom_all_reduce, parse_version(version)).bytes if c.custom_all_reduce else 0
    return c.nccl_channels * t.nccl_connection_bytes + ar


def tp2_gib(link: str, version: str) -> float:
    return round(tp2_bytes(link, version) / GIB, 4)
