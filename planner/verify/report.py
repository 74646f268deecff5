"""Predicted against observed: one entry per figure the plan predicts and the server reported (start-up
log first, `/metrics` where the log is silent), each judged against a stated tolerance, plus the start-up
outcome (a failure is a result: vLLM's error next to what the plan predicted) and the load results.

Default tolerances (`TOLERANCES`): KV tokens, maximum concurrency, blocks and available KV memory within
3% (the KV figures also allow the log's 2-decimal rounding); weights within 5% or 0.05 GiB; activation
peak, non-torch memory and CUDA-graph estimate within 25% or 0.25 GiB (modelled terms); block size,
max_model_len and gpu_memory_utilization exactly; the load: every request completes, and no preemption
when the requests fit the KV cache at once (`usable_concurrency`: vLLM's maximum concurrency less the
null block it never hands out).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from planner.verify.load import LoadResult
from planner.verify.logparse import StartupFigures
from planner.verify.metrics import CacheConfig
from planner.verify.perfcheck import PerfCheck
from planner.verify.perfcheck import table as speed_table
from planner.verify.server import Startup


@dataclass(frozen=True)
class Tolerance:
    """|observed - predicted| <= max(absolute, relative x |predicted|)."""

    relative: float = 0.0
    absolute: float = 0.0

    def allows(self, predicted: float, observed: float) -> bool:
        return abs(observed - predicted) <= max(self.absolute, self.relative * abs(predicted)) + 1e-9

    def __str__(self) -> str:
        parts = [f"{self.relative:.0%}"] if self.relative else []
        if self.absolute:
            parts.append(f"±{self.absolute:g}")
        return " or ".join(parts) or "exact"


TOLERANCES: dict[str, Tolerance] = {
    "kv_cache_tokens": Tolerance(relative=0.03),
    "max_concurrency": Tolerance(relative=0.03, absolute=0.01),
    "num_blocks": Tolerance(relative=0.03),
    "kv_cache_gib": Tolerance(relative=0.03, absolute=0.01),
    "weights_gib": Tolerance(relative=0.05, absolute=0.05),
    "activation_gib": Tolerance(relative=0.25, absolute=0.25),
    "non_torch_gib": Tolerance(relative=0.25, absolute=0.25),
    "cudagraph_gib": Tolerance(relative=0.25, absolute=0.25),
    "max_model_len_fit": Tolerance(relative=0.03),
    "block_size": Tolerance(),
    "max_model_len": Tolerance(),
    "gpu_memory_utilization": Tolerance(absolute=1e-6),
    "load_completed": Tolerance(),
    "load_preemptions": Tolerance(),
}
REQUIRED = ("kv_cache_tokens", "max_concurrency")
"""A started server that reports neither of these fails the check: they are what the plan is for."""


@dataclass(frozen=True)
class Entry:
    name: str
    predicted: Optional[float]
    observed: Optional[float]
    source: str
    """Where the observed value came from: 'log', '/metrics', 'load'."""
    tolerance: Optional[Tolerance]
    """None: reported for information, not judged."""

    @property
    def error(self) -> Optional[float]:
        if self.predicted is None or self.observed is None:
            return None
        return self.observed - self.predicted

    @property
    def ok(self) -> Optional[bool]:
        """None when not judged (information only, or the server did not report it)."""
        if self.tolerance is None or self.predicted is None:
            return None
        if self.observed is None:
            return False if self.name in REQUIRED else None
        return self.tolerance.allows(self.predicted, self.observed)

    def to_json(self) -> dict[str, Any]:
        tol = None if self.tolerance is None else dataclasses.asdict(self.tolerance)
        return {
            "name": self.name,
            "predicted": self.predicted,
            "observed": self.observed,
            "error": self.error,
            "tolerance": tol,
            "ok": self.ok,
            "source": self.source,
        }


# ---- building the entries ---------------------------------------------------------------------

# plan key -> StartupFigures field
_LOG_FIGURES = (
    ("weights_gib", "weights_gib"),
    ("activation_gib", "activation_peak_gib"),
    ("non_torch_gib", "non_torch_gib"),
    ("cudagraph_gib", "cudagraph_estimate_gib"),
    ("kv_cache_gib", "available_kv_gib"),
    ("kv_cache_tokens", "kv_cache_tokens"),
    ("max_concurrency", "max_concurrency"),
    ("max_model_len", "max_concurrency_tokens"),
)
# plan key -> CacheConfig field (the fallback, or the only source)
_METRIC_FIGURES = {
    "kv_cache_tokens": "kv_cache_size_tokens",
    "max_concurrency": "kv_cache_max_concurrency",
    "num_blocks": "num_gpu_blocks",
    "block_size": "block_size",
    "gpu_memory_utilization": "gpu_memory_utilization",
}


def _entry(plan: dict[str, Any], name: str, observed: Optional[float], source: str) -> Optional[Entry]:
    predicted = plan.get(name)
    if predicted is None or (not predicted and observed is None):
        return None  # nothing predicted, or a zero the server does not print (CPU: no activation term)
    return Entry(name, predicted, observed, source if observed is not None else "-", TOLERANCES[name])


def figure_entries(
    plan: dict[str, Any], figures: StartupFigures, cache: Optional[CacheConfig], device: str, started: bool = True
) -> list[Entry]:
    """One entry per predicted figure; after a failed start-up, only those the log printed."""
    out: list[Entry] = []
    for key, attr in _LOG_FIGURES:
        obs, src = getattr(figures, attr), "log"
        if obs is None and cache is not None and key in _METRIC_FIGURES:
            obs, src = getattr(cache, _METRIC_FIGURES[key]), "/metrics"
        out.append(_entry(plan, key, obs, src))
    for key in ("num_blocks", "block_size") + (("gpu_memory_utilization",) if device != "cpu" else ()):
        # CPU: gpu_memory_utilization is printed but does not apply (VLLM_CPU_KVCACHE_SPACE sizes the pool)
        out.append(_entry(plan, key, getattr(cache, _METRIC_FIGURES[key]) if cache else None, "/metrics"))
    if figures.error_estimated_max_model_len is not None:
        out.append(_entry(plan, "max_model_len_fit", figures.error_estimated_max_model_len, "log"))
    return [e for e in out if e is not None and (started or e.observed is not None)]


def blocks_per_request(plan: dict[str, Any]) -> Optional[int]:
    """Blocks one request of max_model_len holds (uniform full attention: what the load exercises)."""
    block, mml = plan.get("block_size"), plan.get("max_model_len")
    return math.ceil(mml / block) if block and mml else None


def usable_concurrency(plan: dict[str, Any]) -> int:
    """Requests of max_model_len the KV cache holds at once. vLLM's maximum concurrency (what its log
    prints and the plan predicts) is num_blocks / P, P the blocks one request needs, but its block
    pool keeps one block back, the null block, and hands out only num_blocks - 1: 372 blocks of 4
    per request print 93.00x and hold 92."""
    conc, blocks = plan.get("max_concurrency") or 0.0, plan.get("num_blocks")
    if conc <= 0 or not blocks or blocks < 2:
        return max(0, math.floor(conc))
    per_request = _blocks_per_request(conc, blocks)
    if per_request is None:
        return math.floor(conc * (blocks - 1) / blocks)
    return (blocks - 1) // per_request


def _blocks_per_request(conc: float, blocks: int) -> Optional[int]:
    """The integer P with blocks / P = conc, conc being rounded to 2 decimals (the plan's JSON): the
    largest that matches (fewer requests when two would), None when none does."""
    most = math.floor(blocks / max(conc - 0.005, 1e-12) + 1e-9)
    least = math.ceil(blocks / (conc + 0.005) - 1e-9)
    return most if most >= max(least, 1) else None


def load_entries(plan: dict[str, Any], load: LoadResult) -> list[Entry]:
    out = [Entry("load_completed", load.requests, load.completed, "load", TOLERANCES["load_completed"])]
    # Within what the KV cache holds at once every request runs unpreempted: a preemption means it did not.
    judged = load.requests <= usable_concurrency(plan) and load.requests <= (plan.get("max_num_seqs") or load.requests)
    out.append(
        Entry("load_preemptions", 0, load.preemptions, "/metrics", TOLERANCES["load_preemptions"] if judged else None)
    )
    per_req, blocks = blocks_per_request(plan), plan.get("num_blocks")
    if per_req and blocks and blocks > 1:
        # vLLM reports usage over the blocks other than the null block; sampled, so information only.
        usage = min(1.0, load.requests * per_req / (blocks - 1))
        out.append(Entry("load_peak_kv_cache_usage", usage, load.peak_kv_cache_usage, "/metrics", None))
    return out


# ---- the report -------------------------------------------------------------------------------


def predicts_startup_failure(plan: dict[str, Any]) -> bool:
    """The plan says vLLM refuses to start: no KV memory, or one request of max_model_len does not fit.
    (A plan that misses only the requested concurrency still starts.)"""
    if plan.get("fits", True):
        return False
    return (plan.get("num_blocks") or 0) <= 0 or (plan.get("max_model_len_fit") or 0) < (plan.get("max_model_len") or 0)


@dataclass(frozen=True)
class Report:
    model: str
    device: str
    plan: dict[str, Any]
    serve_argv: list[str]
    startup: Startup
    entries: list[Entry]
    load: Optional[LoadResult] = None
    vllm_version: Optional[str] = None
    """What the server said it is (log banner or /version)."""
    log_path: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    speed: Optional[PerfCheck] = None
    """The load's measured TTFT/TPOT/ITL/throughput beside perf's estimate (information, not judged)."""

    @property
    def started(self) -> bool:
        return self.startup.outcome == "ready"

    @property
    def failure_predicted(self) -> Optional[bool]:
        """For a start-up that failed: did the plan predict it? None when the server started."""
        return None if self.started else predicts_startup_failure(self.plan)

    @property
    def problems(self) -> list[str]:
        """Why verification fails; empty when it passes."""
        out = [
            f"{e.name}: observed {_fmt(e.observed)}, predicted {_fmt(e.predicted)} (tolerance {e.tolerance})"
            for e in self.entries
            if e.ok is False
        ]
        predicted_fail = predicts_startup_failure(self.plan)
        if self.started and predicted_fail:
            out.append("vLLM started, but the plan predicted it would refuse to")
        if not self.started:
            if not predicted_fail:
                out.append(
                    f"start-up {self.startup.outcome}, but the plan predicted it would start: {self.startup.error}"
                )
            elif self.startup.outcome != "failed":
                out.append(
                    f"the plan predicted a start-up failure, but the server {self.startup.outcome} "
                    f"without vLLM's error: {self.startup.error}"
                )
        planned, seen = self.plan.get("model_runner"), self.startup.figures.model_runner
        if planned and seen and planned != seen and self.device != "cpu":  # the CPU budget has no runner terms
            out.append(
                f"model runner: the plan assumed {planned}, the server ran {seen} (its activation and "
                "CUDA-graph terms differ): set VLLM_USE_V2_MODEL_RUNNER for both, or plan for the server's release"
            )
        if self.load is not None and not self.load.complete:
            out.append(
                f"load: {self.load.completed} of {self.load.requests} requests completed"
                + (f" ({self.load.errors[0]})" if self.load.errors else "")
            )
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        s = self.startup
        return {
            "ok": self.ok,
            "problems": self.problems,
            "model": self.model,
            "device": self.device,
            "gpu": self.plan.get("gpu"),  # the catalogue GPU the plan was for (calibrate reads it)
            "vllm_version": self.vllm_version,
            "plan_vllm_version": self.plan.get("vllm_version"),
            "serve_argv": self.serve_argv,
            "startup": {
                "outcome": s.outcome,
                "seconds": round(s.seconds, 1),
                "pid": s.pid,
                "exit_code": s.exit_code,
                "error": s.error,
                "phase": s.figures.phase,
                "log": self.log_path,
            },
            "plan_fits": self.plan.get("fits"),
            "plan_error": self.plan.get("error"),
            "failure_predicted": self.failure_predicted,
            "model_runner": {"planned": self.plan.get("model_runner"), "observed": s.figures.model_runner},
            "entries": [e.to_json() for e in self.entries],
            "load": dataclasses.asdict(self.load) if self.load else None,
            "speed": self.speed.to_json() if self.speed else None,
            "notes": self.notes,
        }


# ---- text -------------------------------------------------------------------------------------


def _fmt(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if float(v).is_integer() and abs(v) >= 1:
        return f"{int(v):,}"
    return f"{v:,.4g}" if abs(v) < 1 else f"{v:,.2f}"


def _verdict(e: Entry) -> str:
    if e.tolerance is None:
        return "info"
    return {True: "pass", False: "FAIL", None: "not reported"}[e.ok]


def _error_text(e: Entry) -> str:
    if e.error is None:
        return "-"
    err = 0.0 if abs(e.error) < 1e-9 * max(1.0, abs(e.predicted or 0)) else e.error  # float noise
    pct = f" ({err / e.predicted:+.1%})" if e.predicted else ""
    return f"{err:+,.4g}{pct}"


def table(entries: list[Entry]) -> str:
    from tabulate import tabulate

    rows = [
        [e.name, _fmt(e.predicted), _fmt(e.observed), _error_text(e), str(e.tolerance or "-"), e.source, _verdict(e)]
        for e in entries
    ]
    return tabulate(
        rows,
        headers=["figure", "predicted", "observed", "error", "tolerance", "source", "result"],
        disable_numparse=True,
        colalign=("left", "right", "right", "right", "left", "left", "left"),
    )


def _ramp(load: LoadResult) -> str:
    return "; the first ramps up" if load.driver == "builtin" else ", every request measured"


def text(r: Report) -> str:
    s = r.startup
    lines = [
        f"{r.model} on {'the vLLM CPU backend' if r.device == 'cpu' else r.plan.get('gpu')}, "
        f"vLLM {r.vllm_version or 'unknown'} (plan for {r.plan.get('vllm_version')})",
        "",
    ]
    lines.append(f"start-up: {s.outcome} after {s.seconds:.0f} s" + (f": {s.error}" if s.error else ""))
    if r.plan.get("model_runner") or s.figures.model_runner:
        lines.append(
            f"model runner: planned {r.plan.get('model_runner') or '-'}, "
            f"server {s.figures.model_runner or 'not logged'}"
        )
    if not r.started:
        said = r.plan.get("error") or "it fits"
        lines.append(f"the plan predicted: {said} -> failure {'predicted' if r.failure_predicted else 'NOT predicted'}")
    if r.entries:
        lines += ["", table(r.entries)]
    if r.load:
        ld = r.load
        lines += [
            "",
            f"load ({ld.driver}): {ld.completed}/{ld.requests} requests of {ld.prompt_tokens}+{ld.output_tokens} "
            "tokens "
            + (f"x {ld.rounds} rounds (a closed loop{_ramp(ld)}) " if ld.rounds > 1 else "")
            + f"completed in {ld.seconds:.1f} s; peak running {_fmt(ld.max_running)}, waiting {_fmt(ld.max_waiting)}, "
            f"preemptions {_fmt(ld.preemptions)}, peak KV usage {_fmt(ld.peak_kv_cache_usage)}",
        ]
        lines += [f"  error: {e}" for e in ld.errors]
    if r.speed:
        by = f"measured by {r.speed.measured_by}"
        lines += ["", f"speed: {by}, beside the estimate (information, not judged)", speed_table(r.speed)]
        lines += [f"  {n}" for n in r.speed.notes]
    lines += [f"note: {n}" for n in r.notes]
    if r.log_path:
        lines.append(f"server log: {r.log_path}")
    problems = r.problems
    lines += ["", "VERIFIED" if not problems else "NOT VERIFIED:"] + [f"  - {p}" for p in problems]
    return "\n".join(lines)
