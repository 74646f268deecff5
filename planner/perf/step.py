"""The step-time model: how long one vLLM engine step takes on one GPU.

A step runs `decode` tokens (one per running request, each over its context) and `prefill` tokens
(a chunk of a prompt under chunked prefill, at most `max_num_batched_tokens` together). Its time is

    max(weight bytes, GEMM FLOPs) + max(KV bytes, attention FLOPs) + TP all-reduces + per-step floor

each max over the achievable bandwidth and compute: the GEMM kernels overlap the weights' reads with
their FLOPs and the attention kernels the KV's with theirs, but one kind runs after the other (a
step that prefills a chunk beside long-context decodes pays its GEMMs' compute and then the decodes'
KV reads; one max over the whole step would let them hide each other);

- bytes: the always-read weights, the routed experts the step's tokens touch (with E experts and
  top-k routing, t tokens touch E x (1 - (1 - k/E)^t) of them in expectation; the fused-MoE kernels
  read them at their own efficiency), and the KV of every context token read (sliding-window
  layers at most their window);
- FLOPs: two per active parameter per token (a prompt token skips the lm_head: vLLM takes logits
  only where it samples), plus attention's QK^T and PV over each token's context;
- all-reduces: two per layer under TP, each a fixed latency plus a ring's 2(tp-1)/tp x bytes over
  the link (and the latency of the small ones some families add, `StepShape.norm_allreduces`);
- floor: a fixed time per step plus a time per layer (scheduling, launches, sampling) and per MoE
  layer (routing), which is what dominates small batches at large TP.

The coefficients (achievable fractions, floor, all-reduce latency) are fitted per vLLM release
family and GPU family (`profiles/perf/coefficients.yaml`). Pure: numbers in, seconds out.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.perf.shape import StepShape


@dataclass(frozen=True)
class Coefficients:
    """The fitted constants of one release family x GPU family."""

    bandwidth_fraction: float
    """Achievable fraction of the datasheet HBM bandwidth (0, 1]."""
    compute_fraction: float
    """Achievable fraction of the datasheet dense tensor throughput (0, 1]."""
    step_floor_ms: float
    """Fixed time per engine step (scheduler, launch, sampling), ms."""
    layer_floor_us: float
    """Time per decoder layer per step that neither bytes nor FLOPs explain, microseconds."""
    allreduce_us: float
    """Latency of one TP all-reduce, microseconds."""
    request_overhead_ms: float
    """Time added to each request's first token outside the engine steps (API, tokenizer), ms."""
    link_fraction: float = 0.8
    """Achievable fraction of the scale-up link's one-way bandwidth in an all-reduce."""
    moe_gemm_efficiency: float = 1.0
    """Tensor efficiency of the routed experts' grouped GEMMs (vLLM's fused-MoE kernels) relative to
    the dense GEMMs' `compute_fraction`, (0, 1]: each expert multiplies only the few tokens routed to
    it, in tiles sized for that, so a prompt's expert FLOPs run slower than a dense layer's."""
    moe_read_efficiency: float = 1.0
    """Rate at which the fused-MoE kernels read a touched expert's weights, relative to the dense
    GEMMs' `bandwidth_fraction`, (0, 1] (fitted as a fraction: they stream no faster): vLLM pads
    each expert's few tokens to a tile of rows (moe_align_block_size) and runs one program per
    expert tile, which streams a small matrix less efficiently than a dense GEMM streams a large one."""
    moe_layer_floor_us: float = 0.0
    """Time per MoE layer per step beside `layer_floor_us`, microseconds: the routing kernels neither
    bytes nor FLOPs explain (top-k softmax, the sort of tokens by expert, the weighted sum of the
    top-k outputs)."""
    burst_share: float = 0.0
    """Share of a closed-loop benchmark's requests that are its first wave: all C clients send at
    once at the start, so those prompts queue behind each other's prefill (C / number of prompts
    of the measuring runs; 0: steady state only). A property of how the calibration rows were
    measured, fitted with the rest; open-loop (Poisson) loads have no such wave."""


@dataclass(frozen=True)
class StepLoad:
    """The tokens of one step."""

    decode: float
    """Decode tokens (running requests), possibly a mean."""
    decode_context: float
    """Mean context length (tokens) of the decoding requests."""
    prefill: float = 0.0
    """Prefill tokens in this step (chunks of one or more prompts)."""
    prefill_attended: float = 0.0
    """Mean number of tokens each prefill token attends to (causal: prefix + half the chunk)."""
    prefill_prefix: float = 0.0
    """KV tokens of earlier chunks read from the cache for this step's chunks."""


def experts_touched_fraction(shape: StepShape, tokens: float) -> float:
    """Expected share of the routed experts at least one of `tokens` tokens is sent to."""
    if not shape.num_experts:
        return 0.0
    miss = max(0.0, 1.0 - shape.experts_per_token / shape.num_experts)
    return 1.0 - miss ** max(tokens, 0.0)


def _context_pairs(shape: StepShape, load: StepLoad) -> tuple[float, float]:
    """(KV bytes read, attention FLOPs) of the step, over every attention layer."""
    kv_bytes = flops = 0.0
    for k in shape.kv_kinds:
        w = k.window or float("inf")
        dec = load.decode * min(load.decode_context, w)
        chunk = load.prefill * min(load.prefill_attended, w)
        kv_bytes += k.bytes_per_token * (dec + min(load.prefill_prefix, w))
        flops += shape.attn_flops_per_pair * k.layers * (dec + chunk)
    return kv_bytes, flops


def _weight_read_bytes(shape: StepShape, c: Coefficients, tokens: float) -> float:
    """Weight bytes a step of `tokens` tokens reads, the routed experts' scaled by their kernels'
    read efficiency (bytes at the dense GEMMs' rate)."""
    experts = shape.expert_weight_bytes * experts_touched_fraction(shape, tokens)
    return shape.dense_weight_bytes + experts / c.moe_read_efficiency


def memory_s(shape: StepShape, c: Coefficients, load: StepLoad) -> float:
    kv_bytes, _ = _context_pairs(shape, load)
    weights = _weight_read_bytes(shape, c, load.decode + load.prefill)
    return (weights + kv_bytes) / (shape.bandwidth_bytes_per_s * c.bandwidth_fraction)


def _gemm_s(shape: StepShape, c: Coefficients, load: StepLoad) -> float:
    """GEMM seconds of the step at the peak rates, the routed experts' at `moe_gemm_efficiency` of
    theirs: prompt tokens skip the lm_head."""
    tokens = load.decode + load.prefill
    dense = (
        shape.gemm_flops_per_token - shape.expert_flops_per_token
    ) * tokens - shape.head_flops_per_token * load.prefill
    experts = shape.expert_flops_per_token * tokens / c.moe_gemm_efficiency
    return dense / shape.gemm_flops_per_s + experts / (shape.expert_flops_per_s or shape.gemm_flops_per_s)


def compute_s(shape: StepShape, c: Coefficients, load: StepLoad) -> float:
    _, attn = _context_pairs(shape, load)
    return (_gemm_s(shape, c, load) + attn / shape.attn_flops_per_s) / c.compute_fraction


def allreduce_s(shape: StepShape, c: Coefficients, tokens: float) -> float:
    if shape.tp <= 1:
        return 0.0
    ring = 2.0 * (shape.tp - 1) / shape.tp * tokens * shape.hidden_size * shape.act_bytes
    link = shape.link_bytes_per_s * c.link_fraction
    per = c.allreduce_us * 1e-6 + (ring / link if link > 0 else 0.0)
    return 2 * shape.layers * per + shape.norm_allreduces * shape.layers * c.allreduce_us * 1e-6


def floor_s(shape: StepShape, c: Coefficients) -> float:
    per_layer_us = c.layer_floor_us * shape.layers + c.moe_layer_floor_us * shape.moe_layers
    return c.step_floor_ms * 1e-3 + per_layer_us * 1e-6


def step_s(shape: StepShape, c: Coefficients, load: StepLoad) -> float:
    """Seconds for one engine step of one pipeline stage: the GEMMs (weights' reads or FLOPs), then
    the attention (KV reads or FLOPs), then the all-reduces and the floor."""
    tokens = load.decode + load.prefill
    kv_bytes, attn = _context_pairs(shape, load)
    weights = _weight_read_bytes(shape, c, tokens)
    bw = shape.bandwidth_bytes_per_s * c.bandwidth_fraction
    gemm = max(weights / bw, _gemm_s(shape, c, load) / c.compute_fraction)
    attention = max(kv_bytes / bw, attn / shape.attn_flops_per_s / c.compute_fraction)
    return gemm + attention + allreduce_s(shape, c, tokens) + floor_s(shape, c)


def token_step_s(shape: StepShape, c: Coefficients, load: StepLoad) -> float:
    """Seconds between two tokens of a running request. Under PP the requests are split into `pp`
    micro-batches in flight, and a token passes every stage once: pp x the stage time of 1/pp of
    the load (stages hold equal layer counts, up to one). Without PP: one step."""
    if shape.pp == 1:
        return step_s(shape, c, load)
    part = StepLoad(
        load.decode / shape.pp, load.decode_context, load.prefill / shape.pp, load.prefill_attended, load.prefill_prefix
    )
    return shape.pp * step_s(shape, c, part)
