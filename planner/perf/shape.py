"""What one decode or prefill step moves and computes on one GPU, from the planner's exact figures.

Bytes: the weights each GPU holds (`Inspection.weight_bytes_per_gpu`, split into the always-read
part and the routed experts), and the KV bytes per token per GPU by attention kind (sliding-window
layers read at most their window). FLOPs: two per active parameter per token on this GPU (the
active count is the planner's, MoE top-k included) plus attention's QK^T and PV over the context.
Hardware: bandwidth, dense tensor throughput and the scale-up link from the GPU catalogue.
Pure: numbers in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from planner.hardware import GPU
from planner.inspection import Inspection, inspect
from planner.models.spec import ModelSpec

# W8A8 schemes whose GEMMs run at the FP8 tensor rate on a GPU with native FP8
_FP8_GEMM = ("fp8", "modelopt", "compressed-tensors", "fbgemm_fp8")
# Families whose q/k RMSNorm spans the whole projection, which TP splits with the heads: vLLM
# all-reduces the variance of q and of k in every layer (MiniMaxText01RMSNormTP), two more
# all-reduces per layer beside attention's and the MLP's
_WHOLE_QK_NORM = ("minimax_m2",)


@dataclass(frozen=True)
class KVKind:
    """KV read per token of context for one attention kind, per GPU."""

    bytes_per_token: int
    window: int | None
    """Tokens a layer of this kind attends to at most (None: the whole context)."""
    layers: int
    """Layers of this kind on the binding pipeline stage."""


@dataclass(frozen=True)
class StepShape:
    """One GPU of the binding pipeline stage (all TP ranks of a stage do the same work)."""

    dense_weight_bytes: int
    """Weights read every step: everything but the routed experts."""
    expert_weight_bytes: int
    """Routed-expert weights on this GPU (0 for dense models)."""
    num_experts: int
    experts_per_token: int
    kv_kinds: tuple[KVKind, ...]
    gemm_flops_per_token: float
    """2 x active parameters on this GPU (embedding lookups excluded)."""
    attn_flops_per_pair: float
    """QK^T + PV FLOPs per (query token, context token) pair per attention layer on this GPU."""
    hidden_size: int
    layers: int
    """Decoder layers on the binding stage."""
    tp: int
    pp: int
    bandwidth_bytes_per_s: float
    gemm_flops_per_s: float
    attn_flops_per_s: float
    link_bytes_per_s: float
    """Scale-up bandwidth per GPU, one direction (0 where the GPU has none: PCIe)."""
    act_bytes: int = 2
    moe_layers: int = 0
    """Of `layers`, those with routed experts (dense-first and interleaved layers excluded)."""
    norm_allreduces: int = 0
    """All-reduces per layer of a few bytes per token (whole-projection q/k norms under TP)."""
    expert_flops_per_token: float = 0.0
    """Of `gemm_flops_per_token`, the routed experts' (top-k of E experts' parameters, on this GPU)."""
    expert_flops_per_s: float = 0.0
    """Peak rate of the routed experts' grouped GEMMs: the 16-bit dense rate (0: `gemm_flops_per_s`).
    vLLM's fused-MoE kernels on Hopper (Triton's block-scaled FP8, MXFP4 dequantized to bf16) do not
    reach the FP8 rate; held out, the gpt-oss-120b (MXFP4) and MiniMax-M2.5 (FP8 block) rows agree
    on one expert efficiency only at this rate (leave-one-model-out TTFT 49% and 74% at the FP8
    rate, 23% and 29% at this one)."""
    head_flops_per_token: float = 0.0
    """Of `gemm_flops_per_token`, the lm_head's (vocabulary-parallel under TP): a decode token pays
    it, a prompt token does not (vLLM computes logits at the positions it samples only)."""


def _stage_layers(spec: ModelSpec, pp: int) -> int:
    return -(-spec.num_layers // pp)


def _kv_kinds(spec: ModelSpec, insp: Inspection, pp: int) -> tuple[KVKind, ...]:
    out = []
    for kind, per_token in insp.kv_bytes_per_token_by_kind.items():
        layers = [ly for ly in spec.layers if ly.attention == kind]
        windows = {ly.window for ly in layers}
        window = windows.pop() if len(windows) == 1 else None
        out.append(KVKind(per_token, window if kind in ("sliding", "chunked") else None, -(-len(layers) // pp)))
    return tuple(out)


def _expert_flops(spec: ModelSpec, insp: Inspection) -> float:
    """2 x the routed-expert parameters one token runs through (k of E experts), all GPUs together."""
    if not spec.moe or not spec.moe.num_experts:
        return 0.0
    return 2.0 * insp.params_breakdown.get("experts", 0) * spec.moe.experts_per_token / spec.moe.num_experts


def gemm_peak_tflops(gpu: GPU, insp: Inspection) -> float:
    """The dense tensor rate the model's GEMMs run at: FP8 for W8A8 FP8 on native-FP8 GPUs,
    otherwise the 16-bit rate (weight-only 4-bit formats dequantize to 16-bit)."""
    half = gpu.fp16_tflops if insp.dtype == "float16" and gpu.fp16_tflops else gpu.bf16_tflops or gpu.fp16_tflops
    if insp.quantization in _FP8_GEMM and gpu.fp8_native and gpu.fp8_tflops:
        return gpu.fp8_tflops
    return half or 1.0


def step_shape(spec: ModelSpec, insp: Inspection, gpu: GPU) -> StepShape:
    """The per-GPU step quantities for one layout (`insp` carries TP and PP)."""
    tp, pp = insp.tp, insp.pp
    experts = insp.weight_breakdown_per_gpu.get("experts", 0)
    embed = insp.params_breakdown.get("embeddings", 0)
    active = max(insp.params_active - embed, 1)
    kinds = _kv_kinds(spec, insp, pp)
    heads = max(spec.num_heads // tp, 1)
    head_dim = spec.head_dim or spec.hidden_size // spec.num_heads
    attn_flops = 2.0 * heads * (head_dim + (spec.v_head_dim or head_dim))  # QK^T and PV
    half = gpu.bf16_tflops or gpu.fp16_tflops or 1.0
    return StepShape(
        dense_weight_bytes=insp.weight_bytes_per_gpu - experts,
        expert_weight_bytes=experts,
        num_experts=spec.moe.num_experts if spec.moe else 0,
        experts_per_token=spec.moe.experts_per_token if spec.moe else 0,
        kv_kinds=kinds,
        gemm_flops_per_token=2.0 * active / (tp * pp),
        attn_flops_per_pair=attn_flops,
        hidden_size=spec.hidden_size,
        layers=_stage_layers(spec, pp),
        moe_layers=-(-sum(ly.mlp == "moe" for ly in spec.layers) // pp),
        tp=tp,
        pp=pp,
        bandwidth_bytes_per_s=gpu.bandwidth_tbs * 1e12,
        gemm_flops_per_s=gemm_peak_tflops(gpu, insp) * 1e12,
        attn_flops_per_s=half * 1e12,
        link_bytes_per_s=(gpu.nvlink_gbs or gpu.scaleup_gbs) * 1e9 / 2,
        norm_allreduces=2 if tp > 1 and spec.qk_norm and spec.model_type in _WHOLE_QK_NORM else 0,
        head_flops_per_token=2.0 * insp.params_breakdown.get("lm_head", 0) / (tp * pp),
        expert_flops_per_token=_expert_flops(spec, insp) / (tp * pp),
        expert_flops_per_s=half * 1e12,
    )


def inspection_of(req: Any, tp: int, pp: int) -> Inspection:
    """The accounting of a plan request (`planner.plan.Request`) at one layout, as the budget uses it."""
    return inspect(
        req.model,
        tp=tp,
        pp=pp,
        dtype=req.dtype,
        quantization=req.quantization,
        kv_cache_dtype=req.settings.kv_cache_dtype,
        kv_auto_from_checkpoint=req.release.kv_cache_dtype_auto_from_checkpoint,
    )
