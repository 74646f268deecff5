"""From steps to service: what a request sees under a load, from the step-time model.

vLLM's scheduler runs every admitted request's next token in each step and fills the rest of the
step's token budget K = `max_num_batched_tokens` - decodes with prompt chunks (chunked prefill).
In a steady state with fixed input length I and output length O, and `a` prompts arriving per mean
step (a = x tau for a throughput of x requests/s; the decode batch is a (O - 1) by Little's law):

- a prompt needs `n_c = ceil(I / K)` chunk steps (short prompts arriving together share one); a
  share `phi` of all steps carry a chunk; the mean step time `tau` mixes the two kinds of steps,
  and is the TPOT and mean ITL every running request sees;
- TTFT = request overhead + the residual of the step in flight (tau/2) + the prompt's own chunk
  steps + the wait behind other prompts' tokens: the steps' budget is the server, rho = prompt
  tokens arriving per second over what full-budget steps prefill, and the wait is Kingman's
  heavy-traffic mean rho / (2(1 - rho)) x I/K full steps (for I >= K the M/D/1 of one prompt's
  steps; for short prompts far less, as many share a step); a closed loop of C clients has at
  most C - 1 prompts ahead;
- end-to-end = TTFT + (O - 1) x tau; throughput by Little's law (closed loop: C / e2e).

Every figure is a function of `a` alone, and the equations are increasing in it: a closed loop
solves C = x e2e for `a`, an open loop x(a) = rate (no such `a`, or rho >= 1: saturated). One
root, found by regula falsi, so the figures are monotone in the concurrency and the rate. Pure.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

from planner.perf.shape import StepShape
from planner.perf.step import Coefficients, StepLoad, token_step_s

_MAX_ARRIVALS = 1e6


@dataclass(frozen=True)
class Service:
    """Mean figures of one replica at one load (seconds; tokens per second)."""

    ttft_s: float
    tpot_s: float
    """Mean time per output token after the first (= mean ITL for fixed output lengths)."""
    e2e_s: float
    requests_per_s: float
    output_tokens_per_s: float
    total_tokens_per_s: float
    running: float
    """Mean requests decoding at once (the decode batch)."""
    kv_tokens_in_use: float
    """Mean KV tokens the running requests hold."""
    prefill_utilization: float
    """Share of time a prompt is being prefilled (rho of the prefill queue)."""
    saturated: bool = False
    """The prefill queue is at or past 1 (open loop: the queue grows without bound)."""
    ttft_steady_s: float | None = None
    """Closed loop: the steady-state TTFT, without the benchmark's first wave (`ttft_s` blends the two)."""
    ttft_first_wave_s: float | None = None
    """Closed loop: mean TTFT of the first wave, all C prompts sent at once."""
    ttft_wait_s: float = 0.0
    """Of the steady TTFT, the mean wait behind other prompts' tokens (the rest is fixed parts)."""


@dataclass(frozen=True)
class Workload:
    input_len: int
    output_len: int
    max_num_batched_tokens: int


@dataclass(frozen=True)
class _State:
    """The steady state at `a` prompts arriving per mean step (a = x tau; the decode batch is
    a (O - 1) by Little's law)."""

    decoding: float
    tau: float
    x: float
    service: float
    """The prompt's own prefill: its chunk steps (or the one step it shares with others)."""
    queue_service: float
    """Time the prefill stream spends on one prompt when the queue is busy: I / K full-budget steps."""
    rho: float
    """Load of the prefill stream: prompt tokens arriving per second over what full steps prefill."""


def _state(shape: StepShape, c: Coefficients, w: Workload, a: float) -> _State:
    I, O = w.input_len, w.output_len
    decoding = a * max(O - 1, 0)
    free = max(w.max_num_batched_tokens - decoding, 1.0)
    ctx = I + O / 2
    t_d = token_step_s(shape, c, StepLoad(decoding, ctx))
    if I <= free:
        g = max(1.0, min(a, free // I))
        t_m = token_step_s(shape, c, StepLoad(decoding, ctx, g * I, I / 2))
        n_c, full = 1, StepLoad(decoding, ctx, free, I / 2)
    else:
        n_c = math.ceil(I / free)
        chunk = I / n_c
        prefix = (n_c - 1) * chunk / 2
        t_m = token_step_s(shape, c, StepLoad(decoding, ctx, chunk, prefix + chunk / 2, prefix))
        g, full = 1.0, StepLoad(decoding, ctx, free, prefix + free / 2, prefix)
    phi = min(1.0, a * n_c / g)
    tau = phi * t_m + (1 - phi) * t_d
    x = a / tau
    queue_service = I / free * token_step_s(shape, c, full)
    return _State(decoding, tau, x, n_c * t_m, queue_service, x * queue_service)


def _ttft(c: Coefficients, s: _State, clients: float | None) -> float:
    """Request overhead + the residual of the step in flight + the prompt's own prefill + the wait
    behind other prompts (tokens queue for the step budget: Kingman's heavy-traffic mean for
    Poisson arrivals, rho / (2 (1 - rho)) x I / K full steps; a closed loop of C clients has at
    most C - 1 prompts ahead)."""
    return c.request_overhead_ms * 1e-3 + s.tau / 2 + s.service + _wait(s, clients)


def _wait(s: _State, clients: float | None) -> float:
    wait = s.rho / (2 * (1 - s.rho)) * s.queue_service if s.rho < 1 else math.inf
    return wait if clients is None else min(wait, max(clients - 1, 0) * s.queue_service)


def _bisect(f: Callable[[float], float], hi: float) -> float:
    """The root of an increasing f on (0, hi] (f(0) < 0 <= f(hi)), to a relative 1e-6: regula falsi
    with the Illinois step (the stale end's value halved), a few evaluations for these smooth f."""
    lo, f_lo, f_hi, side = 0.0, f(0.0), f(hi), 0
    for _ in range(100):
        if hi - lo <= 1e-6 * hi or f_hi == f_lo:
            break
        mid = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        if not lo < mid < hi:
            mid = (lo + hi) / 2
        f_mid = f(mid)
        if f_mid < 0:
            lo, f_lo = mid, f_mid
            f_hi, side = (f_hi / 2, side) if side == -1 else (f_hi, -1)
        else:
            hi, f_hi = mid, f_mid
            f_lo, side = (f_lo / 2, side) if side == 1 else (f_lo, 1)
        if abs(f_mid) < 1e-9:
            return mid
    return hi


def _solve(shape: StepShape, c: Coefficients, w: Workload, clients: float | None, rate: float | None) -> Service:
    O, I = w.output_len, w.input_len
    if clients is not None:  # C = x e2e: increasing in a

        def excess(a: float) -> float:
            s = _state(shape, c, w, a)
            return s.x * (_ttft(c, s, clients) + (O - 1) * s.tau) - clients

        hi = clients / max(O - 1, 1)  # O > 1: all C decoding, so x e2e >= C
        while excess(hi) < 0:
            hi *= 2
        s = _state(shape, c, w, _bisect(excess, hi))
    else:
        hi = 1.0
        while _state(shape, c, w, hi).x < rate and hi < _MAX_ARRIVALS:
            hi *= 2
        s = _state(shape, c, w, _bisect(lambda a: _state(shape, c, w, a).x - rate, hi))
    saturated = rate is not None and (s.rho >= 1 or s.x < rate * (1 - 1e-6))
    ttft = math.inf if saturated else _ttft(c, s, clients)
    x = s.x if rate is None else rate
    running = max(s.decoding, 1.0 if O > 1 else 0.0)
    return Service(
        ttft,
        s.tau,
        ttft + (O - 1) * s.tau,
        x,
        x * O,
        x * (O + I),
        running,
        running * (I + O / 2),
        min(s.rho, 1.0),
        saturated=saturated,
        ttft_wait_s=math.inf if saturated else _wait(s, clients),
    )


def closed_loop(shape: StepShape, c: Coefficients, w: Workload, concurrency: float) -> Service:
    """`concurrency` clients, each sending its next request when the previous one ends. A benchmark
    of this shape starts all C clients at once: that first wave's TTFT (`first_wave_s`) weighs in the
    measured mean by the set's `burst_share`; the rest of the run is the steady state."""
    s = _solve(shape, c, w, float(concurrency), None)
    if math.isinf(s.ttft_s):
        return s
    wave = c.request_overhead_ms * 1e-3 + first_wave_s(shape, c, w, int(concurrency))
    ttft = (1 - c.burst_share) * s.ttft_s + c.burst_share * wave
    e2e = s.e2e_s + ttft - s.ttft_s
    x = concurrency / e2e
    return dataclasses.replace(
        s,
        ttft_s=ttft,
        e2e_s=e2e,
        requests_per_s=x,
        output_tokens_per_s=x * w.output_len,
        total_tokens_per_s=x * (w.output_len + w.input_len),
        ttft_steady_s=s.ttft_s,
        ttft_first_wave_s=wave,
    )


def first_wave_s(shape: StepShape, c: Coefficients, w: Workload, clients: int) -> float:
    """Mean engine time to the first token of `clients` prompts that arrive together: each step runs
    the decodes of the prompts already done first and fills the rest of the token budget with the
    waiting prompts' chunks in arrival order (vLLM's scheduler); a prompt's first token comes at the
    end of the step that holds its last chunk. The k-th prompt waits about k x I / budget steps."""
    left, done, t, total = w.input_len, 0, 0.0, 0.0
    while done < clients:
        budget = max(w.max_num_batched_tokens - done, 1)
        chunk, finished = 0, 0
        while budget > 0 and done + finished < clients:
            take = min(left, budget)
            chunk, budget, left = chunk + take, budget - take, left - take
            if left == 0:
                finished, left = finished + 1, w.input_len
        t += token_step_s(shape, c, StepLoad(done, w.input_len, chunk, w.input_len / 2))
        total += finished * t
        done += finished
    return total / max(clients, 1)


def open_loop(shape: StepShape, c: Coefficients, w: Workload, request_rate: float) -> Service:
    """Poisson arrivals at `request_rate` requests per second."""
    return _solve(shape, c, w, None, float(request_rate))


def static_batch_s(
    shape: StepShape, c: Coefficients, batch: int, input_len: int, output_len: int, prefill_tokens_per_step: int
) -> float:
    """Wall time of one offline `generate()` over `batch` prompts (all start together): the prompts
    prefilled whole, as many per step as the token budget holds, then output_len - 1 decode steps
    whose context grows from input_len (midpoint rule over 8 spans)."""
    per_step = max(1, prefill_tokens_per_step // input_len)
    steps = math.ceil(batch / per_step)
    prefill = sum(
        token_step_s(shape, c, StepLoad(0.0, 0.0, n * input_len, input_len / 2)) for n in _split(batch, per_step, steps)
    )
    spans = 8
    decode = 0.0
    for i in range(spans):
        ctx = input_len + (i + 0.5) * output_len / spans
        decode += token_step_s(shape, c, StepLoad(batch, ctx)) * (output_len - 1) / spans
    return prefill + decode


def _split(batch: int, per_step: int, steps: int) -> list[int]:
    return [min(per_step, batch - i * per_step) for i in range(steps)]
