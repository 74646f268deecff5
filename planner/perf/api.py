"""The performance step's Python API: `estimate` (one load) and `curve` (throughput against
latency over concurrency), built on a plan's exact budget. The CLI is a thin layer over these.

    >>> from planner.perf.api import estimate
    >>> r = estimate(req, gpu, input_len=1024, output_len=256, concurrency=32)   # req: planner.plan.Request
    >>> r.to_json()["tpot_ms"], r.to_json()["tpot_ms_range"]
"""

from __future__ import annotations

import dataclasses
import math

from planner.budget import Budget
from planner.errors import PlannerError
from planner.hardware import GPU
from planner.perf import coefficients as coef
from planner.perf.capacity import admission
from planner.perf.result import Figures, PerfResult
from planner.perf.service import Workload, closed_loop, open_loop
from planner.perf.shape import inspection_of, step_shape
from planner.plan import Request, choose_layout, evaluate, unusable, why_not


def check_load(input_len: int, output_len: int, concurrency: int | None, request_rate: float | None) -> None:
    """One-line errors for a load that means nothing."""
    for name, v in (("--input-len", input_len), ("--output-len", output_len)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise PlannerError(f"{name} {v!r} must be a whole number of tokens >= 1")
    if (concurrency is None) == (request_rate is None):
        raise PlannerError(
            "give exactly one load: --concurrency C (closed loop) or --request-rate R (Poisson, requests/s)"
        )
    if concurrency is not None and (
        not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
    ):
        raise PlannerError(f"--concurrency {concurrency!r} must be a whole number >= 1")
    if request_rate is not None and not (
        isinstance(request_rate, (int, float)) and math.isfinite(request_rate) and request_rate > 0
    ):
        raise PlannerError(f"--request-rate {request_rate!r} must be a number of requests per second above 0")


def budget_for(req: Request, gpu: GPU, tp: int | None, pp: int | None) -> Budget:
    """The plan's budget: the given layout, or the smallest that fits."""
    req = dataclasses.replace(req, concurrency=None)  # the load is checked against the KV pool below
    why = unusable(req, gpu)
    if why is not None:
        raise PlannerError(why)
    if tp is None and pp is None:
        b, rejected = choose_layout(req, gpu)
        if b is None:
            raise PlannerError(
                f"{req.model.id} fits no layout of {gpu.name} ({rejected[-1].reason if rejected else 'no layout'}):"
                " run `vllm-planner plan` for the fixes"
            )
        return b
    b = evaluate(req, gpu, tp or 1, pp or 1)
    if not b.fits:
        raise PlannerError(
            f"TP {b.tp} x PP {b.pp} does not fit on {gpu.name}: {why_not(b)}; run `vllm-planner plan` for the fixes"
        )
    return b


def estimate(
    req: Request,
    gpu: GPU,
    input_len: int,
    output_len: int,
    *,
    concurrency: int | None = None,
    request_rate: float | None = None,
    tp: int | None = None,
    pp: int | None = None,
    sets: tuple[coef.CoefficientSet, ...] | None = None,
) -> PerfResult:
    """TTFT, TPOT/ITL, e2e latency and throughput of one replica at a closed-loop concurrency or an
    open-loop Poisson rate, or "over KV capacity" with the admissible concurrency."""
    check_load(input_len, output_len, concurrency, request_rate)
    b = budget_for(req, gpu, tp, pp)
    if input_len + output_len > b.max_model_len:
        raise PlannerError(
            f"--input-len {input_len} + --output-len {output_len} exceeds max_model_len {b.max_model_len:,}:"
            " raise --max-model-len or shorten the request"
        )
    choice = coef.choose(sets or coef.bundled(), req.release.version, gpu)
    shape = step_shape(req.model.spec, inspection_of(req, b.tp, b.pp), gpu)
    work = Workload(input_len, output_len, b.max_num_batched_tokens)
    adm = admission(b.num_blocks, b.block_size, b.max_num_seqs, input_len, output_len)
    c = choice.set.coefficients
    s = closed_loop(shape, c, work, concurrency) if concurrency else open_loop(shape, c, work, request_rate)
    running = concurrency if concurrency else s.running
    limited = running > adm.steady
    notes = _notes(concurrency, running, adm, s.saturated, b)
    over = limited or s.saturated
    if s.ttft_steady_s is not None and c.burst_share > 0 and not over:
        notes.append(
            f"TTFT is the mean of a closed-loop benchmark whose {concurrency} clients start at once: "
            f"{c.burst_share:.0%} of its requests (as in the calibration runs) are that first wave, mean "
            f"{s.ttft_first_wave_s * 1e3:,.0f} ms; the steady state alone gives {s.ttft_steady_s * 1e3:,.1f} ms"
        )
    at_adm = Figures.of(closed_loop(shape, c, work, max(adm.steady, 1)), output_len) if over else None
    return PerfResult(
        req.model.id,
        gpu.name,
        req.release.version,
        b.tp,
        b.pp,
        input_len,
        output_len,
        concurrency,
        request_rate,
        Figures.of(None if over else s, output_len),
        limited,
        s.saturated,
        adm.steady,
        adm.strict,
        b.kv_cache_tokens,
        b.max_num_seqs,
        b.max_num_batched_tokens,
        choice,
        at_adm,
        notes,
    )


def _notes(concurrency: int | None, running: float, adm, saturated: bool, b: Budget) -> list[str]:
    notes = []
    load = f"{concurrency} concurrent requests" if concurrency else f"about {running:.0f} running requests"
    if running > adm.steady:
        why = "max_num_seqs" if adm.steady == adm.max_num_seqs else f"the KV pool ({b.kv_cache_tokens:,} tokens)"
        notes.append(
            f"over KV capacity: {load} exceed what {why} holds at their mean length; admissible "
            f"concurrency {adm.steady} (figures given for it); requests beyond it queue or are preempted"
        )
    elif running > adm.strict:
        notes.append(
            f"{load} fit the KV pool on average but not all at full length (no preemption up to "
            f"{adm.strict}): some may be preempted near the end of their output"
        )
    if saturated:
        notes.append(
            "the request rate exceeds what one replica prefills: the queue grows without bound; "
            "lower the rate or add replicas"
        )
    return notes


def curve(
    req: Request,
    gpu: GPU,
    input_len: int,
    output_len: int,
    tp: int | None = None,
    pp: int | None = None,
    concurrencies: list[int] | None = None,
) -> list[PerfResult]:
    """`estimate` over concurrency (default 1, 2, 4, ... up to the admissible one, and one step past)."""
    first = estimate(req, gpu, input_len, output_len, concurrency=1, tp=tp, pp=pp)
    if concurrencies is None:
        top, concurrencies, n = first.max_concurrency_kv, [], 1
        while n <= top:
            concurrencies.append(n)
            n *= 2
        concurrencies += [top] if top not in concurrencies else []
        concurrencies.append(n)
    return [
        estimate(req, gpu, input_len, output_len, concurrency=c, tp=first.tp, pp=first.pp)
        for c in sorted(set(concurrencies))
    ]
