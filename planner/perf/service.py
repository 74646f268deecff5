"""From steps to service: what a request sees under a load, from the step-time model.

vLLM's scheduler runs every admitted request's next token in each step and fills the rest of the
step's token budget (`max_num_batched_tokens`) with prompt chunks (chunked prefill). In a steady
state with fixed input length I and output length O:

- a prompt needs `n_c = ceil(I / (budget - decodes))` chunk steps; a share `phi` of all steps carry
  a chunk (prompts started per step x n_c); the mean step time `tau` mixes the two kinds of steps,
  and is the TPOT and mean ITL every running request sees;
- TTFT = request overhead + the residual of the step in flight (tau/2) + the prompt's own chunk
  steps + the wait behind other prompts; prompts are served one stream at a time, so that wait is
  an M/D/1 queue's rho / (2(1 - rho)) x service (open loop, Poisson arrivals), capped at C - 1
  services in a closed loop of C clients;
- end-to-end = TTFT + (O - 1) x tau; throughput by Little's law (closed loop: C / e2e).

The running decode batch itself depends on the times (a request decodes for (O-1) tau of its
e2e), so the state is solved by damped fixed-point iteration. Pure.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from planner.perf.shape import StepShape
from planner.perf.step import Coefficients, StepLoad, token_step_s

_ITERATIONS = 200


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


@dataclass(frozen=True)
class Workload:
    input_len: int
    output_len: int
    max_num_batched_tokens: int


def _steps(
    shape: StepShape, c: Coefficients, w: Workload, decoding: float, group: float
) -> tuple[int, float, float, float]:
    """(chunk steps per prompt, prompts sharing a chunk step, decode-only step s, step-with-chunks s)
    at a mean decode batch. Short prompts that arrive together share a step, as many as the token
    budget left by the decodes holds; a long prompt is cut into chunks, one stream at a time."""
    budget = max(w.max_num_batched_tokens - decoding, 1.0)
    ctx = w.input_len + w.output_len / 2
    t_d = token_step_s(shape, c, StepLoad(decoding, ctx))
    if w.input_len <= budget:
        g = max(1.0, min(group, budget // w.input_len))
        t_m = token_step_s(shape, c, StepLoad(decoding, ctx, g * w.input_len, w.input_len / 2))
        return 1, g, t_d, t_m
    n_c = math.ceil(w.input_len / budget)
    chunk = w.input_len / n_c
    prefix = (n_c - 1) * chunk / 2
    t_m = token_step_s(shape, c, StepLoad(decoding, ctx, chunk, prefix + chunk / 2, prefix))
    return n_c, 1.0, t_d, t_m


def _solve(shape: StepShape, c: Coefficients, w: Workload, clients: float | None, rate: float | None) -> Service:
    O = w.output_len
    decoding = clients if clients is not None else 1.0
    n_c, g, t_d, t_m = _steps(shape, c, w, decoding, 1.0)
    tau, e2e = t_d, n_c * t_m + (O - 1) * t_d
    rho = 0.0
    for _ in range(_ITERATIONS):
        x = rate if rate is not None else clients / e2e
        # the prompts that arrive during one step share it (the clients of a closed loop spread
        # out; starting them as one group fits the measured TTFTs worse: 62% vs 26% median error)
        group = x * tau
        n_c, g, t_d, t_m = _steps(shape, c, w, decoding, group)
        phi = min(1.0, x * tau * n_c / g)
        tau = phi * t_m + (1 - phi) * t_d
        service = n_c * t_m
        rho = x * service / g
        if rate is not None and rho >= 1.0:  # prefill cannot keep up: no steady state
            return Service(
                math.inf,
                tau,
                math.inf,
                x,
                x * O,
                x * (O + w.input_len),
                decoding,
                decoding * (w.input_len + O / 2),
                1.0,
                saturated=True,
            )
        wait = _queue_wait(rho, service, None if clients is None else math.ceil(clients / g))
        ttft = c.request_overhead_ms * 1e-3 + tau / 2 + service + wait
        new_e2e = ttft + (O - 1) * tau
        decoding = 0.5 * decoding + 0.5 * max(x * (O - 1) * tau, 1.0 if O > 1 else 0.0)
        if abs(new_e2e - e2e) < 1e-6 * e2e:
            e2e = new_e2e
            break
        e2e += 0.3 * (new_e2e - e2e)  # damped: near a full prefill queue the undamped map oscillates
    x = rate if rate is not None else clients / e2e
    ctx = w.input_len + w.output_len / 2
    return Service(
        ttft,
        tau,
        e2e,
        x,
        x * O,
        x * (O + w.input_len),
        decoding,
        decoding * ctx,
        min(rho, 1.0),
        saturated=rate is not None and rho >= 1.0,
    )


def _queue_wait(rho: float, service: float, groups: int | None) -> float:
    """Mean wait for the prefill stream: M/D/1 for Poisson arrivals; in a closed loop whose clients
    form `groups` groups at most groups - 1 are ahead."""
    cap = (groups - 1) * service if groups is not None else math.inf
    if rho >= 1.0:
        return cap
    return min(rho / (2 * (1 - rho)) * service, cap)


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
