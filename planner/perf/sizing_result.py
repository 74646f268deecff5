"""What SLO sizing (`planner.perf.sizing`) returns: the traffic and targets it sizes for, and per
GPU type the layout and replica count chosen, the others that meet the targets and why the rest do
not, with their JSON form. Every figure in them is estimated by the performance model. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from planner.perf import coefficients as coef
from planner.perf.result import Figures
from planner.perf.ttft_percentiles import percentile_ranges

Objective = Literal["gpus", "cost"]
BINDINGS = ("memory", "KV capacity", "TTFT", "TPOT", "throughput")


@dataclass(frozen=True)
class Traffic:
    request_rate: float
    """Poisson arrivals, requests per second, over all replicas."""
    input_len: int
    """Prompt tokens per request."""
    output_len: int
    """Output tokens per request."""


@dataclass(frozen=True)
class Targets:
    ttft_ms: float | None = None
    """Mean time to first token, ms (None: no target)."""
    tpot_ms: float | None = None
    """Mean time per output token after the first, ms (None: no target)."""


@dataclass(frozen=True)
class Floor:
    """A lone request's figures on one layout (no other load): no replica count goes below them."""

    ttft_ms: float
    tpot_ms: float | None
    ttft_at: str = ""
    """The layout with that TTFT floor ("TP 8 x PP 1")."""
    tpot_at: str = ""
    """The layout with that TPOT floor."""


@dataclass(frozen=True)
class LayoutSizing:
    """One layout on one GPU type, sized for the traffic (every figure estimated)."""

    gpu: str
    tp: int
    pp: int
    replicas: int
    gpus: int
    """replicas x TP x PP."""
    nodes: int
    cost_per_hour_usd: float | None
    """gpus x the catalogue's indicative price per GPU-hour (None where it has none)."""
    cost_per_million_output_tokens_usd: float | None
    """cost_per_hour_usd over the output tokens an hour of the traffic carries (rate x output_len x 3600)."""
    capacity_rps: float
    """Largest Poisson rate one replica serves within the targets (estimated)."""
    capacity_binding: str
    """What stops a replica above capacity_rps: TTFT, TPOT, KV capacity or throughput (prefill saturates)."""
    binding: str
    """What sets this deployment's size: memory (one replica of the smallest layout that holds the model
    has headroom), else capacity_binding."""
    floor: Floor
    request_rate_per_replica: float
    figures: Figures
    """What each replica runs at request_rate / replicas: `perf.api.estimate`'s figures (same service model)."""
    choice: coef.Choice
    """The coefficient set (and why it is extrapolated, if it is)."""
    kv_cache_tokens: int
    max_concurrency_kv: int
    ttft_percentiles_ms: dict[str, float] | None = None
    """p50/p90/p99 TTFT (estimated, not validated: no measured tails) from the Kingman wait of the prefill queue;
    in JSON with `ttft_percentiles_ms_range`, the mean TTFT's held-out band carried over (not the tail's shape)."""

    def to_json(self) -> dict[str, Any]:
        p = self.figures.to_json(self.choice, self.tp * self.pp)
        keep = (
            "ttft_ms",
            "ttft_ms_range",
            "tpot_ms",
            "tpot_ms_range",
            "e2e_latency_s",
            "output_tokens_per_s",
            "output_tokens_per_s_range",
            "kv_tokens_in_use",
            "running_requests",
        )
        return {
            "gpu": self.gpu,
            "tp": self.tp,
            "pp": self.pp,
            "replicas": self.replicas,
            "gpus_used": self.gpus,
            "nodes_used": self.nodes,
            "cost_per_hour_usd": _round(self.cost_per_hour_usd, 2),
            "cost_per_million_output_tokens_usd": _round(self.cost_per_million_output_tokens_usd, 4),
            "binding": self.binding,
            "capacity_binding": self.capacity_binding,
            "capacity_per_replica_rps": round(self.capacity_rps, 4),
            "request_rate_per_replica": round(self.request_rate_per_replica, 4),
            "utilization": round(self.request_rate_per_replica / self.capacity_rps, 3),
            "floor_ttft_ms": round(self.floor.ttft_ms, 1),
            "floor_tpot_ms": _round(self.floor.tpot_ms, 2),
            **{k: p[k] for k in keep},
            "ttft_percentiles_ms": self.ttft_percentiles_ms,
            "ttft_percentiles_ms_range": percentile_ranges(self.ttft_percentiles_ms, p["ttft_ms"], p["ttft_ms_range"]),
            "kv_cache_tokens": self.kv_cache_tokens,
            "max_concurrency_kv": self.max_concurrency_kv,
            "calibration": self.choice.set.name,
            "extrapolated": list(self.choice.extrapolated),
        }


@dataclass(frozen=True)
class GpuSizing:
    """One GPU type: the best layout and replica count, the others that meet the targets, and why
    the rest do not."""

    gpu: str
    inventory: str | None
    """The inventory group (NODESxGPUSxTYPE), None for --gpu (as many nodes as needed)."""
    price_per_gpu_hour_usd: float | None
    chosen: LayoutSizing | None
    layouts: tuple[LayoutSizing, ...]
    """Every layout that meets the targets, best first (chosen is the first)."""
    unmet: tuple[str, ...]
    """One line per layout that does not: memory, a target at or below its floor, too few GPUs."""
    floor: Floor | None
    """The lowest floor over the layouts that fit in memory (None: none fits)."""
    below_floor: bool = False
    """Every layout that fits has a target at or below its floor (the target is out of reach here)."""
    suggestions: tuple[str, ...] = ()
    """Where no layout meets the targets: what would (larger TP, fp8 weights or KV, another GPU, a looser target)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "inventory": self.inventory,
            "meets_targets": self.chosen is not None,
            "price_per_gpu_hour_usd": self.price_per_gpu_hour_usd,
            "chosen": None if self.chosen is None else self.chosen.to_json(),
            "alternatives": [x.to_json() for x in self.layouts[1:]],
            "not_meeting": list(self.unmet),
            "floor_ttft_ms": None if self.floor is None else round(self.floor.ttft_ms, 1),
            "floor_tpot_ms": None if self.floor is None else _round(self.floor.tpot_ms, 2),
            "target_below_floor": self.below_floor,
            "suggestions": list(self.suggestions),
        }


@dataclass(frozen=True)
class SizingResult:
    model: str
    vllm_version: str
    traffic: Traffic
    targets: Targets
    objective: Objective
    options: tuple[GpuSizing, ...]
    """One per GPU type, best first by the objective; GPU types that meet no target last."""
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> LayoutSizing | None:
        return self.options[0].chosen if self.options else None

    def unreachable(self) -> str | None:
        """The one-line reason when every GPU type has the targets at or below its physical floor."""
        if not self.options or self.best is not None or not all(o.below_floor for o in self.options):
            return None
        from planner.perf.advice import unreachable_text

        return unreachable_text(self)

    def to_json(self) -> dict[str, Any]:
        t = self.traffic
        return {
            "model": self.model,
            "vllm_version": self.vllm_version,
            "request_rate": t.request_rate,
            "input_len": t.input_len,
            "output_len": t.output_len,
            "ttft_ms_target": self.targets.ttft_ms,
            "tpot_ms_target": self.targets.tpot_ms,
            "objective": self.objective,
            "meets_targets": self.best is not None,
            "gpus": [o.to_json() for o in self.options],
            "estimated": [
                "replicas",
                "gpus_used",
                "nodes_used",
                "cost_per_hour_usd",
                "cost_per_million_output_tokens_usd",
                "capacity_per_replica_rps",
                "ttft_ms",
                "tpot_ms",
                "ttft_percentiles_ms",
                "ttft_percentiles_ms_range",
                "floor_ttft_ms",
                "floor_tpot_ms",
            ],
            "notes": self.notes,
        }


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)
