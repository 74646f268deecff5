"""Measured against predicted speed: the load's measured TTFT, TPOT, ITL, end-to-end latency and
throughput (planner/verify/latency.py) beside what `vllm-planner perf` estimates for the same load
(planner.perf.api.estimate at the plan's layout: the load's prompt and output lengths, its number of
concurrent requests), each estimate with the range of the fit's held-out error, and beside both the
server's own mean of the same figures (vLLM's /metrics histograms read around the load).

Information, not a verdict: a range is the 10th-90th percentile of the fit's error, so one figure in
five may fall outside it on a good model; each row says whether it did. On the CPU build there is no
prediction (perf models GPUs): the measurement exercises the loop, not the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from planner.errors import PlannerError

CPU_NOTE = (
    "CPU build: the loop, not the numbers (perf models GPUs only; the CPU backend's speed says nothing of a GPU's)"
)
BURST_NOTE = (
    "the load sends its {n} requests at once and each once: the measured TTFT includes the queue of their "
    "prefills, while the estimate is the closed loop's steady state at concurrency {n} (--rounds 3 or more "
    "measures that)"
)
LOOP_NOTE = (
    "a closed loop of {n} senders, {r} rounds after a ramp-up measured (rates over the window in which all "
    "run): the estimate's steady state"
)
BENCH_LOOP_NOTE = (
    "a closed loop of {n} concurrent slots, {total} requests, every one measured (vllm bench serve leaves no "
    "ramp-up out; rates over its whole run): near the estimate's steady state as rounds grow"
)
BENCH_NOTE = "measured by vllm bench serve (vLLM's own benchmark), its means and percentiles as it reports them"
# (figure, perf --json key, its range key); the measured key is the figure's name
FIGURES = (
    ("ttft_ms", "ttft_ms", "ttft_ms_range"),
    ("tpot_ms", "tpot_ms", "tpot_ms_range"),
    ("itl_ms", "itl_ms", "tpot_ms_range"),  # perf's ITL is its TPOT, with its range
    ("e2e_latency_s", "e2e_latency_s", None),
    ("output_tokens_per_s", "output_tokens_per_s", "output_tokens_per_s_range"),
    ("total_tokens_per_s", "total_tokens_per_s", None),
    ("requests_per_s", "requests_per_s", None),
)


@dataclass(frozen=True)
class PerfRow:
    name: str
    predicted: Optional[float]
    """Estimated (perf); None on the CPU build or where perf cannot say."""
    predicted_range: Optional[list[float]]
    measured: Optional[float]
    """The mean over the completed requests (latencies), or the rate over the load's wall time."""
    measured_p50: Optional[float] = None
    measured_p99: Optional[float] = None
    measured_by_vllm: Optional[float] = None
    """The server's own mean over the load (its /metrics histograms), beside the client's."""

    @property
    def error(self) -> Optional[float]:
        """(measured - predicted) / predicted."""
        if self.predicted is None or self.measured is None or self.predicted == 0:
            return None
        return (self.measured - self.predicted) / self.predicted

    @property
    def within_range(self) -> Optional[bool]:
        if self.predicted_range is None or self.measured is None:
            return None
        lo, hi = self.predicted_range
        return lo <= self.measured <= hi

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "predicted": self.predicted,
            "estimated": self.predicted is not None,
            "predicted_range": self.predicted_range,
            "measured": self.measured,
            "measured_p50": self.measured_p50,
            "measured_p99": self.measured_p99,
            "measured_by_vllm": self.measured_by_vllm,
            "error": None if self.error is None else round(self.error, 4),
            "within_range": self.within_range,
        }


@dataclass(frozen=True)
class PerfCheck:
    rows: list[PerfRow]
    prediction: Optional[dict[str, Any]]
    """perf's result for this load (`perf --json`), None where there is none."""
    notes: list[str] = field(default_factory=list)
    measured_by: str = "builtin"
    """The load driver that measured: 'builtin' or 'vllm bench serve'."""

    def to_json(self) -> dict[str, Any]:
        p = self.prediction
        return {
            "measured_by": self.measured_by,
            "rows": [r.to_json() for r in self.rows],
            "predicted_estimated": p is not None,
            "prediction": None
            if p is None
            else {k: p.get(k) for k in ("tp", "pp", "input_len", "output_len", "concurrency", "calibration")},
            "notes": self.notes,
        }


def compare(
    prediction: Optional[dict[str, Any]], measured: Optional[dict[str, Any]], device: str, why_none: Optional[str]
) -> PerfCheck:
    """The rows of figures measured beside those predicted; `why_none` says why there is no prediction."""
    measured = measured or {}
    server = measured.get("server") or {}
    rows = []
    for name, key, rkey in FIGURES:
        m = measured.get(name)
        spread = m if isinstance(m, dict) else {}
        rows.append(
            PerfRow(
                name,
                None if prediction is None else prediction.get(key),
                None if prediction is None or rkey is None else prediction.get(rkey),
                spread.get("mean") if isinstance(m, dict) else m,
                spread.get("p50"),
                spread.get("p99"),
                server.get(name),
            )
        )
    notes = [CPU_NOTE] if device == "cpu" else []
    driver = measured.get("driver") or "builtin"
    notes += [BENCH_NOTE] if driver != "builtin" else []
    if prediction is None and why_none and device != "cpu":
        notes.append(f"no prediction: {why_none}")
    if prediction is not None:
        notes += list(prediction.get("notes") or [])
        n, rounds = prediction.get("concurrency") or 1, measured.get("rounds", 1)
        if rounds > 1 and driver != "builtin":
            notes.append(BENCH_LOOP_NOTE.format(n=n, total=n * rounds))
        elif rounds > 1:
            notes.append(LOOP_NOTE.format(n=n, r=rounds - 1))
        elif n > 1:
            notes.append(BURST_NOTE.format(n=n))
    return PerfCheck(rows, prediction, notes, driver)


def predict(req: Any, gpu: Any, plan: dict[str, Any], prompt: int, output: int, requests: int) -> dict[str, Any]:
    """perf's estimate of this load at the plan's layout (`perf --json`); PlannerError where it has none."""
    from planner.perf.api import estimate

    tp, pp = int(plan.get("tp") or 1), int(plan.get("pp") or 1)
    return estimate(req, gpu, prompt, output, concurrency=requests, tp=tp, pp=pp).to_json()


def of_load(
    load: Any, plan: dict[str, Any], device: str, request: Callable[[], tuple[Any, Any]]
) -> Optional[PerfCheck]:
    """The speed check of a finished load (a `LoadResult`); `request` gives the plan's (Request, GPU)
    for perf. None without a load."""
    if load is None or load.latency is None:
        return None
    if device == "cpu":
        return compare(None, load.latency, device, None)
    try:
        req, gpu = request()
        if gpu is None or gpu.name != plan.get("gpu"):
            raise PlannerError(f"the plan is for {plan.get('gpu')}; give verify its --gpu to estimate its speed")
        prediction = predict(req, gpu, plan, load.prompt_tokens, load.output_tokens, load.requests)
    except PlannerError as e:
        return compare(None, load.latency, device, str(e))
    return compare(prediction, load.latency, device, None)


def _num(v: Optional[float], digits: int) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(check: PerfCheck) -> str:
    from tabulate import tabulate

    digits = {"tpot_ms": 2, "itl_ms": 2, "e2e_latency_s": 3, "requests_per_s": 3}
    body = []
    for r in check.rows:
        d = digits.get(r.name, 1)
        span = "-" if r.predicted_range is None else f"{_num(r.predicted_range[0], d)}-{_num(r.predicted_range[1], d)}"
        inside = {True: "within", False: "OUTSIDE", None: "-"}[r.within_range]
        err = "-" if r.error is None else f"{r.error:+.0%}"
        body.append(
            [r.name, _num(r.predicted, d), span, _num(r.measured, d), _num(r.measured_p50, d), _num(r.measured_p99, d)]
            + [_num(r.measured_by_vllm, d), err, inside]
        )
    return tabulate(
        body,
        headers=["speed", "estimated", "range", "measured", "p50", "p99", "vLLM's own", "error", "in range"],
        disable_numparse=True,
        colalign=("left",) + ("right",) * 7 + ("left",),
    )
