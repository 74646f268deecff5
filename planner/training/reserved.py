"""What a training process holds beyond the model's tensors (pure; the sizes are framework data):
DeepSpeed / FSDP / DDP communication buffers inside PyTorch's allocations, and the reserved
footprint an out-of-memory error is judged on: allocated x (1 + fragmentation), the CUDA context
and NCCL's own buffers. All estimates, with ranges from `profiles/training/frameworks.yaml`."""

from __future__ import annotations

from dataclasses import dataclass

from planner.training.framework import Framework, ReservedModel
from planner.units import GIB

FSDP_UNITS = "FSDP gathered units (current + prefetch)"


@dataclass(frozen=True)
class CommInputs:
    """The sizes the buffers depend on (per GPU, bytes unless named otherwise)."""

    gpus: int
    zero: int
    largest_unit_params: int
    """Parameters of the largest group gathered at once (a decoder layer, or embeddings / head)."""
    compute_bytes: int
    """Bytes of one gathered element (the compute dtype; QLoRA's codes are packed in it)."""
    trainable_params: int
    grad_bytes: int
    largest_unit_trainable_params: int
    weights_unsharded_bytes: int
    largest_unit_bytes: int = 0
    """Gathered bytes of the largest unit (0: largest_unit_params x compute_bytes). QLoRA gathers
    the 4-bit codes (half a byte per parameter), not a 16-bit copy, and never the NF4 scales."""
    layer_unit_bytes: int = 0
    """Gathered bytes of the largest decoder layer (0: largest_unit_bytes)."""
    root_unit_bytes: int = 0
    """Gathered bytes of what no decoder layer holds (embeddings, final norm, lm_head): FSDP's root unit."""
    offload_params: bool = False
    """Parameters offloaded to the CPU (FSDP CPUOffload(offload_params=True), ZeRO-3 offload_param)."""

    @property
    def unit_bytes(self) -> int:
        return self.largest_unit_bytes or self.largest_unit_params * self.compute_bytes


def comm_buffer_bytes(c: CommInputs, fw: Framework, rm: ReservedModel) -> dict[str, int]:
    """Buffers by name. DDP (no ZeRO, several GPUs): gradient buckets, one more copy of the
    gradients (gradient_as_bucket_view=False). DeepSpeed: the reduce bucket, allocated whole
    (`reduce_bucket_size` elements of the engine's dtype whatever the trainable count: stage3.py
    `__ipg_bucket_flat_buffer`, stage_1_and_2.py `ipg_buffer`, contiguous_gradients on by default), the
    all-gather bucket under ZeRO 1/2, and under ZeRO-3 the gathered unit plus the prefetch bucket,
    capped by stage3_max_live_parameters. FSDP: two units gathered (current and prefetched), one
    unit's unsharded gradients for the reduce-scatter, and the root unit (embeddings, norm, lm_head)
    kept gathered from its forward to the end of the backward pass where the framework's FSDP does not
    reshard the root after forward; SHARD_GRAD_OP (--zero 1/2) keeps the parameters gathered. FSDP with
    CPU offload copies each unit's shard to the GPU before its all-gather (FlatParamHandle.pre_unshard:
    `flat_param_to(self.device, non_blocking=True)`, a tensor of its own beside the gathered one). The copy
    is the all-gather's input and is freed once the gathered flat parameter replaces it; the next unit's
    copy is made on the same (unshard) stream, so one shard-sized block serves them all."""
    if c.gpus == 1 and c.zero == 0:
        return {}
    if c.zero == 0:
        return {"DDP gradient buckets": c.trainable_params * c.grad_bytes}
    if fw.sharding == "deepspeed":
        out = {"ZeRO reduce bucket": rm.deepspeed_reduce_bucket_elements * c.grad_bytes}
        if c.zero in (1, 2):
            out["ZeRO all-gather bucket"] = (
                min(rm.deepspeed_allgather_bucket_elements, c.trainable_params) * c.compute_bytes
            )
        else:
            live = min(
                rm.deepspeed_max_live_parameters * c.compute_bytes,
                c.unit_bytes + rm.deepspeed_prefetch_bucket_elements * c.compute_bytes,
            )
            out["ZeRO-3 gathered and prefetched parameters"] = int(live)
        return out
    out = {"FSDP reduce-scatter (one unit's gradients)": c.largest_unit_trainable_params * 4}
    if c.zero == 3 and not fw.fsdp_root_resharded and c.root_unit_bytes:
        out[FSDP_UNITS] = rm.fsdp_units_in_flight * (c.layer_unit_bytes or c.unit_bytes)
        out["FSDP root unit kept gathered (embeddings, norm, lm_head)"] = c.root_unit_bytes
    elif c.zero == 3:
        out[FSDP_UNITS] = rm.fsdp_units_in_flight * c.unit_bytes
    if c.zero == 3 and c.offload_params:
        shard = -(-(c.layer_unit_bytes or c.unit_bytes) // c.gpus)
        out["FSDP CPU offload: the gathered unit's shard copied to the GPU"] = shard
    if c.zero != 3:
        out["FSDP SHARD_GRAD_OP: parameters kept gathered"] = c.weights_unsharded_bytes
    return out


@dataclass(frozen=True)
class Reserved:
    """The footprint at the peak, by part, with its range, and the footprint the fit is judged on."""

    total_bytes: int
    low_bytes: int
    high_bytes: int
    breakdown: dict[str, int]
    fit_bytes: int = 0
    """What must fit on the card: allocated x (1 + fragmentation) + context (+ NCCL). The extra cache
    of sharded runs (per-stream pools of gathered parameters) is flushed under pressure before an
    out-of-memory error, so it shows where memory is free but does not decide the fit."""


def reserved_footprint(
    allocated_peak_bytes: int,
    gpus: int,
    rm: ReservedModel,
    sharded: bool = False,
    card_bytes: int | None = None,
    persistent_bytes: int = 0,
    interconnect: str | None = None,
) -> Reserved:
    """`sharded`: parameters gathered and freed per unit (ZeRO-3, FSDP FULL_SHARD), whose all-gather
    buffers live in their own stream's cached pool: the cache there is `sharded_fragmentation` of
    what churns (the peak beyond the `persistent_bytes` allocated once at the start). `card_bytes`:
    the footprint shown grows into free memory only up to the card when it fits. `interconnect`: the
    GPUs' class, which prices NCCL's device memory (`ReservedModel.nccl_for`)."""
    nccl = rm.nccl_for(interconnect, gpus)
    frag = (
        (rm.sharded_fragmentation, rm.sharded_fragmentation_low, rm.sharded_fragmentation_high)
        if sharded
        else (rm.fragmentation, rm.fragmentation_low, rm.fragmentation_high)
    )
    churn = allocated_peak_bytes - (min(persistent_bytes, allocated_peak_bytes) if sharded else 0)

    def total(f: float, ctx_gib: float, nccl_gib: float) -> int:
        return int(allocated_peak_bytes + churn * f + (ctx_gib + nccl_gib) * GIB)

    fit = int(allocated_peak_bytes * (1 + rm.fragmentation) + (rm.cuda_context_gib + nccl[0]) * GIB)
    mid = total(frag[0], rm.cuda_context_gib, nccl[0])
    if card_bytes is not None and fit <= card_bytes:
        mid = max(fit, min(mid, card_bytes))
    breakdown = {
        "allocated peak (est.)": allocated_peak_bytes,
        "allocator cache and fragmentation (est.)": mid - total(0.0, rm.cuda_context_gib, nccl[0]),
        "CUDA context (est.)": int(rm.cuda_context_gib * GIB),
    }
    if gpus > 1:
        breakdown["NCCL buffers (est.)"] = int(nccl[0] * GIB)
    low, high = total(frag[1], rm.cuda_context_low_gib, nccl[1]), total(frag[2], rm.cuda_context_high_gib, nccl[2])
    return Reserved(mid, min(low, mid), max(high, mid), breakdown, fit)
