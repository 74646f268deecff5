"""The fitted coefficient sets (`profiles/perf/coefficients.yaml`): loading with one-line errors,
and choosing the set for a vLLM release and a GPU, saying when it is an extrapolation.

A set holds for one vLLM release family (`releases: first..last`) and one GPU family (by CUDA
compute capability major). Applied to a release outside the releases it was fitted on, or a GPU
it has no rows for, it still gives figures, marked extrapolated with the reason.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, Optional

from planner import releases
from planner.errors import PlannerError
from planner.hardware import GPU
from planner.paths import profiles_dir
from planner.perf.step import Coefficients
from planner.profile_data import Bounds, DataError, VersionText, load_document
from planner.target import gpu_families

FIX = "rerun benchmarks/fit_perf.py (it writes this file)"
Fraction = Annotated[float, Bounds(1e-9, 1.0)]
Share = Annotated[float, Bounds(0.0, 1.0)]
Amount = Annotated[float, Bounds(0.0, 1e4)]
"""A time (ms, us) of the step model."""
Error = Annotated[float, Bounds(-1.0, 100.0)]
"""measured / predicted - 1."""


class CoefficientsRow(NamedTuple):
    """The file's `coefficients:` of a set: one line per field of `step.Coefficients`, with its bounds
    (the fields step.Coefficients gives a default may be left out)."""

    bandwidth_fraction: Fraction
    compute_fraction: Fraction
    step_floor_ms: Amount
    layer_floor_us: Amount
    allreduce_us: Amount
    request_overhead_ms: Amount
    link_fraction: Fraction = Coefficients.link_fraction
    moe_gemm_efficiency: Fraction = Coefficients.moe_gemm_efficiency
    moe_read_efficiency: Fraction = Coefficients.moe_read_efficiency
    moe_layer_floor_us: Amount = Coefficients.moe_layer_floor_us
    burst_share: Share = Coefficients.burst_share


@dataclass(frozen=True)
class ErrorBand:
    """Held-out (leave-one-model-out) error of one metric: measured / predicted - 1."""

    median_abs: Error
    p10: Error
    p90: Error
    rows: Annotated[int, Bounds(0, 1e6)]


class ReleaseSpan(NamedTuple):
    first: VersionText
    last: Optional[VersionText] = None
    """None: up to the newest release."""


class SetRow(NamedTuple):
    """One entry of `sets:` as benchmarks/fit_perf.py writes it."""

    name: str
    release_family: str
    releases: ReleaseSpan
    engine: str
    gpu_family: str
    fitted_releases: tuple[VersionText, ...]
    fitted_gpus: tuple[str, ...]
    fitted_on: str
    coefficients: CoefficientsRow
    fitted: tuple[str, ...]
    held_out_error: dict[Literal["ttft", "tpot", "throughput"], ErrorBand]


class CoefficientFile(NamedTuple):
    schema_version: Literal[1]
    data: str
    rows_used: int
    rows_not_used: dict[str, int]
    sets: tuple[SetRow, ...]


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
    held_out: Mapping[str, ErrorBand]

    def holds_for(self, version: str) -> bool:
        v = releases.parse_version(version)
        return releases.parse_version(self.first) <= v and (self.last is None or v <= releases.parse_version(self.last))


def gpu_family(gpu: GPU) -> str:
    return gpu_families().perf_of(gpu.compute_capability)


def _set(path: Path, i: int, row: SetRow) -> CoefficientSet:
    for metric, band in row.held_out_error.items():
        if band.p10 > band.p90:
            raise DataError(path, f"sets[{i}].held_out_error.{metric}: p10 above p90", FIX)
    return CoefficientSet(
        row.name,
        row.release_family,
        row.releases.first,
        row.releases.last,
        row.gpu_family,
        row.fitted_releases,
        row.fitted_gpus,
        row.fitted_on,
        Coefficients(**row.coefficients._asdict()),
        row.held_out_error,
    )


def load(path: Path | None = None) -> tuple[CoefficientSet, ...]:
    path = path or profiles_dir() / "perf" / "coefficients.yaml"
    doc = load_document(path, CoefficientFile, "performance coefficient file", FIX)
    if not doc.sets:
        raise DataError(path, "`sets:` is empty; it needs a set per release family x GPU family", FIX)
    return tuple(_set(path, i, s) for i, s in enumerate(doc.sets))


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
