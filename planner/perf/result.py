"""The result of `perf`: every figure estimated, each latency and throughput with the range the
held-out error of the fit gives, and where the KV pool cannot hold the load, no latency at all
but the admissible concurrency."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from planner.estimate import Estimate
from planner.perf.coefficients import Choice
from planner.perf.service import Service

ESTIMATED = (
    "ttft_ms",
    "tpot_ms",
    "itl_ms",
    "e2e_latency_s",
    "output_tokens_per_s",
    "output_tokens_per_s_per_gpu",
    "total_tokens_per_s",
    "requests_per_s",
    "kv_tokens_in_use",
)


def estimate_of(value: float | None, band: Any, unit: str, choice: Choice) -> Estimate | None:
    """`value` with the range the set's held-out error gives (measured / predicted - 1 from p10 to
    p90, widened to hold the value itself), or None without a value or a band for the metric."""
    if value is None or band is None:
        return None
    source = f"{choice.set.name}: leave-one-model-out error p10-p90 on {band.rows} measured rows"
    return Estimate.relative(value, unit, max(0.0, -band.p10), max(0.0, band.p90), source, bool(choice.extrapolated))


def _range(e: Estimate | None, digits: int) -> list[float] | None:
    return None if e is None else e.range(digits)


@dataclass(frozen=True)
class Figures:
    """What one replica serves at one load (None where the load is over capacity)."""

    ttft_ms: float | None
    tpot_ms: float | None
    e2e_latency_s: float | None
    output_tokens_per_s: float | None
    total_tokens_per_s: float | None
    requests_per_s: float | None
    kv_tokens_in_use: float | None
    running: float | None

    @staticmethod
    def of(s: Service | None, output_len: int) -> "Figures":
        if s is None:
            return Figures(None, None, None, None, None, None, None, None)
        return Figures(
            s.ttft_s * 1e3,
            s.tpot_s * 1e3 if output_len > 1 else None,
            s.e2e_s,
            s.output_tokens_per_s,
            s.total_tokens_per_s,
            s.requests_per_s,
            s.kv_tokens_in_use,
            s.running,
        )

    def estimates(self, choice: Choice) -> dict[str, Estimate | None]:
        """TTFT, TPOT and output tokens/s as `Estimate`s with the fit's held-out ranges."""
        band = choice.set.held_out
        return {
            "ttft_ms": estimate_of(self.ttft_ms, band.get("ttft"), "ms", choice),
            "tpot_ms": estimate_of(self.tpot_ms, band.get("tpot"), "ms", choice),
            "output_tokens_per_s": estimate_of(self.output_tokens_per_s, band.get("throughput"), "tokens/s", choice),
        }

    def to_json(self, choice: Choice, gpus: int) -> dict[str, Any]:
        e = self.estimates(choice)
        r = lambda v, d: None if v is None else round(v, d)  # noqa: E731
        return {
            "ttft_ms": r(self.ttft_ms, 1),
            "tpot_ms": r(self.tpot_ms, 2),
            "itl_ms": r(self.tpot_ms, 2),
            "e2e_latency_s": r(self.e2e_latency_s, 3),
            "output_tokens_per_s": r(self.output_tokens_per_s, 1),
            "output_tokens_per_s_per_gpu": r(
                None if self.output_tokens_per_s is None else self.output_tokens_per_s / gpus, 1
            ),
            "total_tokens_per_s": r(self.total_tokens_per_s, 1),
            "requests_per_s": r(self.requests_per_s, 3),
            "kv_tokens_in_use": r(self.kv_tokens_in_use, 0),
            "running_requests": r(self.running, 1),
            "ttft_ms_range": _range(e["ttft_ms"], 1),
            "tpot_ms_range": _range(e["tpot_ms"], 2),
            "output_tokens_per_s_range": _range(e["output_tokens_per_s"], 1),
        }


@dataclass(frozen=True)
class PerfResult:
    model: str
    gpu: str
    vllm_version: str
    tp: int
    pp: int
    input_len: int
    output_len: int
    concurrency: int | None
    request_rate: float | None
    figures: Figures
    kv_limited: bool
    """The KV pool cannot hold the load at its mean length: it queues or preempts."""
    saturated: bool
    """An open-loop rate the replica cannot keep up with (the queue grows without bound)."""
    max_concurrency_kv: int
    max_concurrency_kv_no_preemption: int
    kv_cache_tokens: int
    max_num_seqs: int
    max_num_batched_tokens: int
    choice: Choice
    at_admissible: Figures | None = None
    """Over KV capacity: the figures at the admissible concurrency."""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        gpus = self.tp * self.pp
        s = self.choice.set
        out: dict[str, Any] = {
            "model": self.model,
            "gpu": self.gpu,
            "vllm_version": self.vllm_version,
            "tp": self.tp,
            "pp": self.pp,
            "input_len": self.input_len,
            "output_len": self.output_len,
            "concurrency": self.concurrency,
            "request_rate": self.request_rate,
        }
        out |= self.figures.to_json(self.choice, gpus)
        out |= {
            "kv_limited": self.kv_limited,
            "saturated": self.saturated,
            "max_concurrency_kv": self.max_concurrency_kv,
            "max_concurrency_kv_no_preemption": self.max_concurrency_kv_no_preemption,
            "kv_cache_tokens": self.kv_cache_tokens,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "at_admissible_concurrency": None
            if self.at_admissible is None
            else {"concurrency": self.max_concurrency_kv} | self.at_admissible.to_json(self.choice, gpus),
            "calibration": {
                "set": s.name,
                "release_family": s.release_family,
                "fitted_on": s.fitted_on,
                "fitted_releases": list(s.fitted_releases),
                "fitted_gpus": list(s.fitted_gpus),
                "extrapolated": bool(self.choice.extrapolated),
                "why": list(self.choice.extrapolated),
                "held_out_error": {k: vars(v) for k, v in s.held_out.items()},
            },
            "estimated": list(ESTIMATED),
            "notes": self.notes,
        }
        return out
