"""profiles/vllm/overheads.yaml (and a user's calibration overlay) through the checked loader.

The file holds coefficient sets. A main set (no `runner`) covers a release range; the main sets
together cover every supported release with no gap and no overlap. An overlay set (`runner: v1|v2`)
changes only the terms that model runner measures differently, over its own range (overlays may
overlap: a later one refines an earlier one). A calibration set (`match: {gpu, interconnect, tp}`,
only in a user's overlay file, written by `vllm-planner calibrate`) replaces terms for one GPU,
interconnect and TP over its release range. Every term is typed (`TERMS`); an unknown term, a wrong
type, a set whose `base` does not exist or a range that ends before it starts is a one-line error
naming the file and the entry. `capture_max_size` is a range-keyed fact per GPU family, and
`vision_blocks` one per vLLM architecture (what a ViT block holds at its peak, by its model code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Optional

from planner.profile_data import (
    FrozenMap,
    Range,
    Version,
    convert,
    data_error,
    load_ranges,
    lookup,
    read_mapping,
    version_field,
)


@dataclass(frozen=True)
class CommBuffers:
    """Communication buffers outside torch for one interconnect class."""

    tp2: float
    """GiB per GPU at TP 2."""
    per_extra_tp: float
    """GiB per GPU added per rank beyond 2."""


NON_TORCH_KEYS = ("tp1", "tp1_pp", "tp2", "per_extra_tp")
TERMS: dict[str, Any] = {
    "forward_const_gib": float,
    "forward_per_token_bytes": float,
    "sampler_const_gib": float,
    "sampler_logits": float,
    "sampler_hidden": float,
    "moe_workspace": float,
    "vision": float,
    "activation_offset_gib": float,
    "non_torch_gib": FrozenMap,
    "non_torch_comm_gib": FrozenMap,
    "cudagraph_const_gib": float,
    "cudagraph_per_layer_gib": float,
    "cudagraph_full_share": float,
    "cudagraph_hidden_exponent": float,
    "cold_const_gib": float,
    "cold_per_token_bytes": float,
}
"""Every term a set may give, with its type (planner/overheads.py Coefficients documents each)."""


@dataclass(frozen=True)
class Match:
    """The hardware a calibration set was measured on."""

    gpu: str
    """Catalogue name of the GPU (profiles/gpus.yaml)."""
    interconnect: Optional[str]
    """Interconnect class at TP > 1; None at TP 1."""
    tp: int


@dataclass(frozen=True)
class CoefficientSet:
    name: str
    start: Version
    until: Optional[Version]
    base: Optional[str]
    """A main set whose terms this one starts from."""
    runner: Optional[Literal["v1", "v2"]]
    validated: tuple[str, ...]
    source: str
    terms: FrozenMap
    match: Optional[Match] = None
    startups: int = 0
    """Calibration sets: how many start-ups the terms come from."""
    cold_startups: int = 0
    """... how many of them were cold starts (their modelled cold-start extra taken out of the terms)."""
    captured_pool_gib: Optional[float] = None
    """... the median CUDA-graph pool their logs say was captured (information: not a budget term)."""

    def covers(self, v: Version) -> bool:
        return self.start <= v and (self.until is None or v < self.until)


@dataclass(frozen=True)
class OverheadTable:
    path: Path
    sets: tuple[CoefficientSet, ...]
    capture_max_size: FrozenMap
    """GPU family ('default' for the others) -> ranges of the largest default capture size."""
    vision_blocks: FrozenMap = FrozenMap({})
    """vLLM architecture ('default' for the others) -> ranges of VisionBlock."""

    def capture_size(self, v: Version, family: str) -> int:
        ranges = self.capture_max_size.get(family) or self.capture_max_size.get("default")
        return lookup(ranges, v).size if ranges else 512

    def vision_block(self, v: Version, architecture: str) -> "VisionBlock":
        ranges = self.vision_blocks.get(architecture) or self.vision_blocks.get("default")
        return lookup(ranges, v) if ranges else VisionBlock(3, 2, 0, 0, 4, "")


@dataclass(frozen=True)
class CaptureSize:
    size: int
    source: str


class VisionBlock(NamedTuple):
    """What one ViT block of vLLM's vision tower holds at its peak, per patch, in tensors of the
    tower's width (hidden_size), read from the release's model code; the profile's dummy items run
    through it eagerly (planner/overheads.py features)."""

    mlp_hidden: int
    """[patches, hidden] model-dtype tensors alive beside the MLP's columns (the block's input, which the
    caller still holds, the residual sum and the normed input; a fused add-norm's two outputs add one)."""
    attention_whole_hidden: int
    """... alive through the attention (the block's input and the normed input), not split by TP."""
    attention_split_hidden: int
    """... model-dtype tensors of the attention on one TP rank (q/k/v projection, their contiguous
    copies, the concatenated q/k); 0 where the MLP phase is always the larger."""
    attention_fp32_split_hidden: int
    """fp32 [patches, hidden / TP] tensors of the attention (an fp32 rotary over q and k: input and output)."""
    pixel_bytes: int
    """Bytes per pixel value of the dummy batch alive through the blocks (the processor's fp32 values)."""
    source: str


_SET_KEYS = {
    "name",
    "from",
    "until",
    "base",
    "runner",
    "validated",
    "source",
    "coefficients",
    "match",
    "startups",
    "cold_startups",
    "captured_pool_gib",
}


def _terms(raw: Any, where: str, path: Path) -> FrozenMap:
    if not isinstance(raw, dict) or not raw:
        raise data_error(path, f"{where}: 'coefficients' must be a non-empty mapping of terms")
    out = {}
    for k, v in raw.items():
        if k not in TERMS:
            raise data_error(path, f"{where}: unknown term {k!r} (one of {', '.join(TERMS)})")
        if k != "non_torch_comm_gib":
            out[k] = convert(v, TERMS[k], f"{where}.{k}", path)
    if "non_torch_gib" in out:
        bad = [k for k in out["non_torch_gib"] if k not in NON_TORCH_KEYS]
        if bad:
            raise data_error(
                path, f"{where}.non_torch_gib: unknown key {bad[0]!r} (one of {', '.join(NON_TORCH_KEYS)})"
            )
        out["non_torch_gib"] = FrozenMap({k: float(v) for k, v in out["non_torch_gib"].items()})
    if "non_torch_comm_gib" in raw:
        comm = raw["non_torch_comm_gib"]
        if not isinstance(comm, dict) or not comm:
            raise data_error(path, f"{where}.non_torch_comm_gib: expected a mapping of interconnect classes")
        out["non_torch_comm_gib"] = FrozenMap(
            {k: convert(v, CommBuffers, f"{where}.non_torch_comm_gib.{k}", path) for k, v in comm.items()}
        )
    return FrozenMap(out)


def _set(raw: Any, i: int, path: Path) -> CoefficientSet:
    where = f"sets[{i}]"
    if not isinstance(raw, dict):
        raise data_error(path, f"{where}: expected a mapping, got {raw!r}")
    extra = sorted(set(raw) - _SET_KEYS)
    missing = [k for k in ("name", "from", "coefficients") if k not in raw]
    if extra or missing:
        what = "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(extra)}"] if extra else [])
        )
        raise data_error(path, f"{where}: {what}")
    where = f"set {raw['name']!r}"
    start = version_field(raw["from"], where, path)
    until = version_field(raw["until"], where, path) if "until" in raw else None
    if until is not None and until <= start:
        raise data_error(path, f"{where}: 'until' {raw['until']} is not after 'from' {raw['from']}")
    return CoefficientSet(
        name=convert(raw["name"], str, f"{where}.name", path),
        start=start,
        until=until,
        base=convert(raw.get("base"), Optional[str], f"{where}.base", path),
        runner=convert(raw.get("runner"), Optional[Literal["v1", "v2"]], f"{where}.runner", path),
        validated=convert(raw.get("validated", []), tuple[str, ...], f"{where}.validated", path),
        source=convert(raw.get("source", ""), str, f"{where}.source", path),
        terms=_terms(raw["coefficients"], where, path),
        match=convert(raw["match"], Match, f"{where}.match", path) if "match" in raw else None,
        startups=convert(raw.get("startups", 0), int, f"{where}.startups", path),
        cold_startups=convert(raw.get("cold_startups", 0), int, f"{where}.cold_startups", path),
        captured_pool_gib=convert(raw.get("captured_pool_gib"), Optional[float], f"{where}.captured_pool_gib", path),
    )


def _check_main_ranges(sets: tuple[CoefficientSet, ...], first: Version, path: Path) -> None:
    """The main sets cover every release from `first` on, with no gap and no overlap."""
    main = sorted((s for s in sets if s.runner is None and s.match is None), key=lambda s: s.start)
    raw = [{"from": _text(s.start), **({"until": _text(s.until)} if s.until else {}), "value": s.name} for s in main]
    load_ranges("sets (main sets, no runner)", raw, str, first, path)


def _text(v: Version) -> str:
    return ".".join(str(p) for p in (v if v[3] else v[:3]))


def _capture(raw: Any, first: Version, path: Path) -> FrozenMap:
    if not isinstance(raw, dict) or "default" not in raw:
        raise data_error(
            path, "'capture_max_size' must map GPU families (and 'default') to {from, until, value} ranges"
        )
    return FrozenMap(
        {fam: load_ranges(f"capture_max_size.{fam}", r, CaptureSize, first, path) for fam, r in raw.items()}
    )


def table_from_doc(doc: dict, path: Path, first: Version, calibration: bool = False) -> OverheadTable:
    """Check and convert a loaded document. `calibration`: a user's overlay (only calibration sets,
    no capture sizes, no range cover); otherwise the bundled table."""
    raw_sets = doc.get("sets")
    if not isinstance(raw_sets, list) or not raw_sets:
        raise data_error(path, "'sets' must be a non-empty list of coefficient sets")
    sets = tuple(_set(x, i, path) for i, x in enumerate(raw_sets))
    names = [s.name for s in sets]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise data_error(path, f"set {dup!r} appears twice")
    for s in sets:
        if s.base is not None and s.base not in names:
            raise data_error(path, f"set {s.name!r}: base {s.base!r} is not a set of this file")
        if calibration and s.match is None:
            raise data_error(path, f"set {s.name!r}: a calibration overlay holds only sets with a 'match'")
        if not calibration and s.match is not None:
            raise data_error(path, f"set {s.name!r}: 'match' belongs in a calibration overlay, not here")
    if calibration:
        _check_calibration(sets, path)
        return OverheadTable(path, sets, FrozenMap({"default": ()}))
    _check_main_ranges(sets, first, path)
    blocks = doc.get("vision_blocks") or {}
    if not isinstance(blocks, dict) or (blocks and "default" not in blocks):
        raise data_error(path, "'vision_blocks' must map architectures (and 'default') to {from, until, value} ranges")
    vision = FrozenMap(
        {kind: load_ranges(f"vision_blocks.{kind}", r, VisionBlock, first, path) for kind, r in blocks.items()}
    )
    return OverheadTable(path, sets, _capture(doc.get("capture_max_size"), first, path), vision)


def _check_calibration(sets: tuple[CoefficientSet, ...], path: Path) -> None:
    """Two calibration sets for the same hardware must not claim the same release."""
    for i, a in enumerate(sets):
        for b in sets[i + 1 :]:
            same_hw = a.match == b.match and a.runner == b.runner
            if same_hw and a.start < (b.until or (9999,)) and b.start < (a.until or (9999,)):
                raise data_error(
                    path, f"sets {a.name!r} and {b.name!r} calibrate the same hardware for the same releases"
                )


def load(path: Path, first: Version, calibration: bool = False) -> OverheadTable:
    what = "calibration overlay" if calibration else "overhead coefficients"
    return table_from_doc(read_mapping(path, what), path, first, calibration)


__all__ = [
    "CoefficientSet",
    "CommBuffers",
    "Match",
    "OverheadTable",
    "Range",
    "TERMS",
    "VisionBlock",
    "load",
    "table_from_doc",
]
