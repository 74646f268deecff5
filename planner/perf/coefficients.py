"""The fitted coefficient sets (`profiles/perf/coefficients.yaml`): loading with one-line errors,
and choosing the set for a vLLM release and a GPU, saying when it is an extrapolation.

A set holds for one vLLM release family (`releases: first..last`) and one GPU family (by CUDA
compute capability major). Applied to a release outside the releases it was fitted on, or a GPU
it has no rows for, it still gives figures, marked extrapolated with the reason.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner import releases
from planner.errors import PlannerError
from planner.hardware import GPU
from planner.paths import profiles_dir
from planner.perf.step import Coefficients
from planner.profile_data import read_mapping
from planner.target import gpu_families

_METRICS = ("ttft", "tpot", "throughput")
_OPTIONAL = {"link_fraction", "burst_share"}  # the dataclass defaults hold where a set does not fit them


@dataclass(frozen=True)
class ErrorBand:
    """Held-out (leave-one-model-out) error of one metric: measured / predicted - 1."""

    median_abs: float
    p10: float
    p90: float
    rows: int


@dataclass(frozen=True)
class CoefficientSet:
    name: str
    release_family: str
    first: str
    last: str | None
    gpu_family: str
    fitted_releases: tuple[str, ...]
    fitted_gpus: tuple[str, ...]
    fitted_on: str
    """Which rows, in words (subsets, models, row count)."""
    coefficients: Coefficients
    held_out: dict[str, ErrorBand]

    def holds_for(self, version: str) -> bool:
        v = releases.parse_version(version)
        return releases.parse_version(self.first) <= v and (self.last is None or v <= releases.parse_version(self.last))


def gpu_family(gpu: GPU) -> str:
    return gpu_families().perf_of(gpu.compute_capability)


def _err(path: Path, what: str) -> PlannerError:
    return PlannerError(f"{path}: {what}; fix the file or rerun benchmarks/fit_perf.py")


def _number(path: Path, where: str, value: Any, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise _err(path, f"{where} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _coefficients(path: Path, where: str, raw: Any) -> Coefficients:
    if not isinstance(raw, dict):
        raise _err(path, f"{where}.coefficients must be a mapping")
    names = {f.name for f in dataclasses.fields(Coefficients)}
    unknown, missing = set(raw) - names, names - _OPTIONAL - set(raw)
    if unknown or missing:
        raise _err(path, f"{where}.coefficients: unknown {sorted(unknown)}, missing {sorted(missing)}")
    bounds = {"bandwidth_fraction": 1.0, "compute_fraction": 1.0, "link_fraction": 1.0, "burst_share": 1.0}
    return Coefficients(
        **{
            k: _number(path, f"{where}.{k}", v, 1e-9 if k.endswith("_fraction") else 0.0, bounds.get(k, 1e4))
            for k, v in raw.items()
        }
    )


def _band(path: Path, where: str, raw: Any) -> ErrorBand:
    if not isinstance(raw, dict) or set(raw) != {"median_abs", "p10", "p90", "rows"}:
        raise _err(path, f"{where} needs median_abs, p10, p90 and rows")
    b = ErrorBand(
        *(_number(path, f"{where}.{k}", raw[k], -1.0, 100.0) for k in ("median_abs", "p10", "p90")),
        int(_number(path, f"{where}.rows", raw["rows"], 0, 1e6)),
    )
    if b.p10 > b.p90:
        raise _err(path, f"{where}: p10 above p90")
    return b


def _set(path: Path, i: int, raw: Any) -> CoefficientSet:
    where = f"sets[{i}]"
    need = (
        "name",
        "release_family",
        "releases",
        "gpu_family",
        "fitted_releases",
        "fitted_gpus",
        "fitted_on",
        "coefficients",
        "held_out_error",
    )
    if not isinstance(raw, dict) or any(k not in raw for k in need):
        raise _err(path, f"{where} needs {', '.join(need)}")
    rel = raw["releases"]
    if not isinstance(rel, dict) or not isinstance(rel.get("first"), str):
        raise _err(path, f"{where}.releases needs a quoted `first` version (and `last`, or null)")
    for v in [rel["first"]] + ([rel["last"]] if rel.get("last") else []) + list(raw["fitted_releases"]):
        try:
            releases.parse_version(str(v))
        except PlannerError as e:
            raise _err(path, f"{where}: {e}") from None
    bands = raw["held_out_error"]
    if not isinstance(bands, dict) or not set(bands) <= set(_METRICS):
        raise _err(path, f"{where}.held_out_error keys must be among {', '.join(_METRICS)}")
    return CoefficientSet(
        str(raw["name"]),
        str(raw["release_family"]),
        rel["first"],
        rel.get("last"),
        str(raw["gpu_family"]),
        tuple(map(str, raw["fitted_releases"])),
        tuple(map(str, raw["fitted_gpus"])),
        str(raw["fitted_on"]),
        _coefficients(path, where, raw["coefficients"]),
        {k: _band(path, f"{where}.held_out_error.{k}", v) for k, v in bands.items()},
    )


def load(path: Path | None = None) -> tuple[CoefficientSet, ...]:
    path = path or profiles_dir() / "perf" / "coefficients.yaml"
    doc = read_mapping(path, "performance coefficient file")
    if not isinstance(doc.get("sets"), list) or not doc["sets"]:
        raise _err(path, "the top level needs a non-empty `sets:` list")
    return tuple(_set(path, i, s) for i, s in enumerate(doc["sets"]))


@functools.cache
def bundled() -> tuple[CoefficientSet, ...]:
    return load()


@dataclass(frozen=True)
class Choice:
    set: CoefficientSet
    extrapolated: tuple[str, ...]
    """Why the set is applied outside what it was fitted on (empty: within it)."""


def choose(sets: tuple[CoefficientSet, ...], version: str, gpu: GPU) -> Choice:
    """The set of the release's family for the GPU's family; another family's set (the nearest by
    compute capability) when the GPU's has none, with its datasheet figures."""
    fam = [s for s in sets if s.holds_for(version)]
    if not fam:
        raise PlannerError(
            f"no performance coefficients hold for vLLM {version}: add a set to profiles/perf/coefficients.yaml"
        )
    mine = gpu_family(gpu)
    same = [s for s in fam if s.gpu_family == mine]
    chosen = same[0] if same else fam[0]
    why = []
    if not same:
        why.append(
            f"no {mine} GPU has measured rows: the {chosen.gpu_family} efficiencies applied with the "
            f"{gpu.name} datasheet bandwidth and TFLOPS"
        )
    elif gpu.name not in chosen.fitted_gpus:
        why.append(f"no rows measured on {gpu.name}: the {mine} family's efficiencies with its datasheet figures")
    fitted = sorted(chosen.fitted_releases, key=releases.parse_version)
    v = releases.parse_version(version)
    if v < releases.parse_version(fitted[0]) or v > releases.parse_version(fitted[-1]):
        why.append(f"fitted on vLLM {fitted[0]}-{fitted[-1]}, applied to {version}")
    return Choice(chosen, tuple(why))
