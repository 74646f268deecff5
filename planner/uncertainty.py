"""The stated uncertainty of the KV cache a plan predicts: a range from the cross-validated error of
the measured terms on real start-ups (profiles/vllm/uncertainty.yaml, written by
`benchmarks/accuracy.py --write-ranges` from its leave-one-GPU-class-out replay), by release family.

The error is in GiB of KV memory per GPU, because what is uncertain is the sum of the terms vLLM
measures (activation peak, non-torch memory, CUDA-graph estimate), whose error does not grow with
the card. A plan outside what the data covers (a release, GPU or interconnect no start-up measured)
gets the range widened by the table's `outside_factor`, and a note says why. Pure: the table is read
through the profile loader.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from planner.paths import profiles_dir
from planner.profile_data import Range, convert, data_error, load_ranges, lookup, read_mapping
from planner.units import GIB


@dataclass(frozen=True)
class KVRange:
    low_bytes: int
    high_bytes: int
    extrapolated: bool
    why: tuple[str, ...]
    """What lies outside the measured envelope (empty inside it)."""
    source: str


@dataclass(frozen=True)
class Family:
    """One release family's cross-validated KV error (a range entry of uncertainty.yaml)."""

    error_gib: float
    """90th-percentile |error| of warm TP 1 start-ups with their GPU class held out."""
    tp_error_gib: float
    """The same for TP > 1 (at least error_gib)."""
    cold_error_gib: float
    """The same for first boots on an empty compile cache."""
    cases: int
    tp_cases: int
    cold_cases: int
    gpus: tuple[str, ...]
    """GPU classes with a measured start-up in the family."""
    interconnects: tuple[str, ...]
    """Interconnect classes with a measured TP > 1 start-up in the family."""
    source: str


@dataclass(frozen=True)
class Table:
    outside_factor: float
    """How much wider the range is outside the measured envelope."""
    families: tuple[Range, ...]


@functools.cache
def _table() -> Table:
    """uncertainty.yaml through the checked loader: families as release ranges (no gap, no overlap)."""
    from planner import releases  # local: releases imports nothing from here

    path = profiles_dir() / "vllm" / "uncertainty.yaml"
    doc = read_mapping(path, "uncertainty table")
    fams = doc.get("families")
    if not isinstance(fams, list) or not all(isinstance(f, dict) for f in fams):
        raise data_error(path, "'families' must be a list of {from, until, error_gib, ...} entries")
    raw = [
        {
            **{k: f[k] for k in ("from", "until") if k in f},
            "value": {k: v for k, v in f.items() if k not in ("from", "until")},
        }
        for f in fams
    ]
    first = releases.parse_version(releases.supported_range()[0])
    factor = convert(doc.get("outside_factor"), float, "outside_factor", path)
    if factor < 1:
        raise data_error(path, f"outside_factor {factor} must be at least 1")
    return Table(factor, load_ranges("families", raw, Family, first, path))


def _family(version: str) -> Family:
    from planner.releases import parse_version  # local: releases imports nothing from here

    return lookup(_table().families, parse_version(version))


def kv_range(
    kv_bytes: int, version: str, gpu: str, interconnect: str | None, tp: int, validated: bool, cold: bool = False
) -> KVRange:
    """[low, high] bytes of KV memory per GPU around `kv_bytes`. `validated`: whether the release's
    coefficient sets were fitted or checked on real start-ups of that release."""
    f = _family(version)
    err = (f.cold_error_gib if cold else f.tp_error_gib if tp > 1 else f.error_gib) * GIB
    why = []
    if not validated:
        why.append(f"vLLM {version} (no start-up of this release was measured)")
    if gpu not in f.gpus:
        why.append(f"the {gpu} (no start-up on it in this release family)")
    if tp > 1 and (interconnect or "nvls") not in f.interconnects:
        why.append(f"TP over {interconnect or 'the default interconnect'} (not measured in this release family)")
    if why:
        err *= _table().outside_factor
    return KVRange(int(kv_bytes - err), int(kv_bytes + err), bool(why), tuple(why), f.source)
