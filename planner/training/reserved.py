"""What a training process holds beyond the model's tensors (pure; the sizes are framework data):
DeepSpeed / FSDP / DDP communication buffers inside PyTorch's allocations, and the reserved
footprint an out-of-memory error is judged on: allocated x (1 + fragmentation), the CUDA context
and NCCL's own buffers. All estimates, with ranges from `profiles/training/frameworks.yaml`."""

from __future__ import annotations

from dataclasses import dataclass

from planner.training.framework import Framework, ReservedModel
from planner.units import GIB


@dataclass(frozen=True)
class CommInputs:
    """The sizes the buffers depend on (per GPU, bytes unless named otherwise)."""

    gpus: int
    zero: int
    largest_unit_params: int
    """Parameters of the largest group gathered at once (a decoder layer, or embeddings / head)."""
    compute_bytes: int
    """Bytes of one gathered parameter (the compute dtype)."""
    trainable_params: int
    grad_bytes: int
    largest_unit_trainable_params: int
    weights_unsharded_bytes: int


def comm_buffer_bytes(c: CommInputs, fw: Framework, rm: ReservedModel) -> dict[str, int]:
    """Buffers by name. DDP (no ZeRO, several GPUs): gradient buckets, one more copy of the
    gradients (gradient_as_bucket_view=False). DeepSpeed: the reduce and all-gather buckets (5e8
    elements each by default, capped by what there is to reduce), and under ZeRO-3 the gathered
    layer plus the prefetch bucket, capped by stage3_max_live_parameters. FSDP: two units gathered
    (current and prefetched) and one unit's unsharded gradients for the reduce-scatter; SHARD_GRAD_OP
    (--zero 1/2) keeps the parameters gathered from forward to backward."""
    if c.gpus == 1 and c.zero == 0:
        return {}
    if c.zero == 0:
        return {"DDP gradient buckets": c.trainable_params * c.grad_bytes}
    if fw.sharding == "deepspeed":
        out = {"ZeRO reduce bucket": min(rm.deepspeed_reduce_bucket_elements, c.trainable_params) * c.grad_bytes}
        if c.zero in (1, 2):
            out["ZeRO all-gather bucket"] = (
                min(rm.deepspeed_allgather_bucket_elements, c.trainable_params) * c.compute_bytes
            )
        else:
            live = min(rm.deepspeed_max_live_parameters, c.largest_unit_params + rm.deepspeed_prefetch_bucket_elements)
            out["ZeRO-3 gathered and prefetched parameters"] = live * c.compute_bytes
        return out
    out = {"FSDP reduce-scatter (one unit's gradients)": c.largest_unit_trainable_params * 4}
    if c.zero == 3:
        out["FSDP gathered units (current + prefetch)"] = (
            rm.fsdp_units_in_flight * c.largest_unit_params * c.compute_bytes
        )
    else:
        out["FSDP SHARD_GRAD_OP: parameters kept gathered"] = c.weights_unsharded_bytes
    return out


@dataclass(frozen=True)
class Reserved:
    """The footprint at the peak, by part, with its range."""

    total_bytes: int
    low_bytes: int
    high_bytes: int
    breakdown: dict[str, int]


def reserved_footprint(allocated_peak_bytes: int, gpus: int, rm: ReservedModel) -> Reserved:
    nccl = (rm.nccl_gib, rm.nccl_low_gib, rm.nccl_high_gib) if gpus > 1 else (0.0, 0.0, 0.0)

    def total(frag: float, ctx_gib: float, nccl_gib: float) -> int:
        return int(allocated_peak_bytes * (1 + frag) + (ctx_gib + nccl_gib) * GIB)

    breakdown = {
        "allocated peak (est.)": allocated_peak_bytes,
        "allocator cache and fragmentation (est.)": int(allocated_peak_bytes * rm.fragmentation),
        "CUDA context (est.)": int(rm.cuda_context_gib * GIB),
    }
    if gpus > 1:
        breakdown["NCCL buffers (est.)"] = int(rm.nccl_gib * GIB)
    return Reserved(
        total(rm.fragmentation, rm.cuda_context_gib, nccl[0]),
        total(rm.fragmentation_low, rm.cuda_context_low_gib, nccl[1]),
        total(rm.fragmentation_high, rm.cuda_context_high_gib, nccl[2]),
        breakdown,
    )
