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

from planner.datafiles import load_yaml
from planner.errors import PlannerError
from planner.paths import profiles_dir

GIB = 2**30


@dataclass(frozen=True)
class KVRange:
    low_bytes: int
    high_bytes: int
    extrapolated: bool
    why: tuple[str, ...]
    """What lies outside the measured envelope (empty inside it)."""
    source: str


@functools.cache
def _table() -> dict:
    doc = load_yaml(profiles_dir() / "vllm" / "uncertainty.yaml")
    if not isinstance(doc, dict) or not isinstance(doc.get("families"), list) or not doc["families"]:
        raise PlannerError("profiles/vllm/uncertainty.yaml: expected a non-empty `families` list")
    return doc


def _family(version: str) -> dict:
    from planner.releases import parse_version  # local: releases imports nothing from here

    v = parse_version(version)
    for f in _table()["families"]:
        if parse_version(f["from"]) <= v and ("until" not in f or v < parse_version(f["until"])):
            return f
    raise PlannerError(f"no uncertainty family covers vLLM {version}")


def kv_range(kv_bytes: int, version: str, gpu: str, interconnect: str | None, tp: int, validated: bool,
             cold: bool = False) -> KVRange:
    """[low, high] bytes of KV memory per GPU around `kv_bytes`. `validated`: whether the release's
    coefficient sets were fitted or checked on real start-ups of that release."""
    f = _family(version)
    err = float(f["cold_error_gib"] if cold else f.get("tp_error_gib", f["error_gib"]) if tp > 1 else f["error_gib"]) * GIB
    why = []
    if not validated:
        why.append(f"vLLM {version} (no start-up of this release was measured)")
    if gpu not in f.get("gpus", ()):
        why.append(f"the {gpu} (no start-up on it in this release family)")
    if tp > 1 and (interconnect or "nvls") not in f.get("interconnects", ()):
        why.append(f"TP over {interconnect or 'the default interconnect'} (not measured in this release family)")
    if why:
        err *= float(_table()["outside_factor"])
    return KVRange(int(kv_bytes - err), int(kv_bytes + err), bool(why), tuple(why), str(f["source"]))
