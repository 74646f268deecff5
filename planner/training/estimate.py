"""The estimate: the allocated peak, the reserved footprint the fit is judged on, the largest
micro-batch and sequence, what was assumed, and the fixes for a misfit. Pure.

The peak: model states without their gradients live all run; on top of them the largest of the
phases (`phase_bytes`): the end of the forward pass (autocast's cached weight casts under AMP with
checkpointing), the loss's backward (every held activation, the loss's tensors, lm_head's
gradient), the backward pass of the costliest layer (its recomputed activations and gradient
workspace), the end of the backward pass (every gradient) and the optimizer step; with gradient
accumulation past the first micro-batch every gradient is alive in every phase.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from planner.estimate import Estimate
from planner.models.spec import ModelSpec
from planner.models.tensors import Tensor
from planner.training import config as cfg
from planner.training.activations import adapter_copy_bytes
from planner.training.fixes import find_fixes
from planner.training.framework import TrainingProfile
from planner.training.reserved import Reserved, reserved_footprint
from planner.training.resolve import Resolved, amp_full, resolve
from planner.units import GIB


def persistent_bytes(r: Resolved) -> int:
    """The states that live all run: everything but the gradients (alive only in parts of a step)."""
    return r.states.total - r.states.gradients - r.states.adapter_gradients


def loss_transient_bytes(r: Resolved, b: int, s: int) -> int:
    return int(r.loss.transient_bytes_per_vocab * r.spec.vocab_size * b * s)


def temporary_bytes(r: Resolved, b: int, s: int) -> int:
    """Transients beside the activations: the loss's backward tensors or one layer's gradient
    workspace, QLoRA's dequantized weight, the communication buffers."""
    workspace = r.act.workspace_bytes_per_token * b * s
    return max(loss_transient_bytes(r, b, s), workspace) + r.fixed_temporary_bytes


def phase_bytes(r: Resolved, b: int, s: int, accumulating: bool | None = None) -> dict[str, int]:
    """What is alive beyond the persistent states in each phase of a step (see the module docstring)."""
    grads = r.backward_grad_bytes
    accum = r.c.grad_accum > 1 if accumulating is None else accumulating
    early = grads if accum else r.head_grad_bytes
    held, fixed = r.act.held_bytes(b, s), r.fixed_temporary_bytes
    workspace = r.act.workspace_bytes_per_token * b * s
    idle = r.fsdp_unit_bytes * (r.profile.reserved.fsdp_units_in_flight - 1)  # FSDP units not gathered
    out = {
        "end of forward": held + r.act.forward_cache_bytes + r.act.head_bytes(b, s) + fixed - idle - r.fsdp_unit_bytes
    }
    return out | {
        "loss backward": early + held + r.act.head_bytes(b, s) + loss_transient_bytes(r, b, s) + fixed - idle,
        "layer backward": early + held + r.act.backward_layer_bytes(b, s) + fixed,
        "end of backward": grads + r.act.layer_bytes(b, s)[0] + workspace + fixed - idle,
        "optimizer step": grads + r.step_bytes,
    }


def peak_allocated_bytes(r: Resolved, b: int, s: int, accumulating: bool | None = None) -> int:
    """`accumulating`: gradients carried over from earlier micro-batches (default: grad_accum > 1)."""
    return persistent_bytes(r) + max(phase_bytes(r, b, s, accumulating).values())


ACTIVATION_CHECK = 0.03
"""The activation model's bound: within 3% of what autograd keeps per layer, every combination of
the CPU check (tests/test_training_autograd.py)."""


def allocated_estimate(r: Resolved, b: int, s: int) -> Estimate:
    """The allocated peak with its range: the states exact, the rest within the CPU check's bound,
    the loss's transient down to its low figure."""
    peak = peak_allocated_bytes(r, b, s)
    varying = peak - persistent_bytes(r)
    loss_spread = int(
        (r.loss.transient_bytes_per_vocab - r.loss.transient_low_bytes_per_vocab) * r.spec.vocab_size * b * s
    )
    low = max(0, peak - int(varying * ACTIVATION_CHECK) - loss_spread)
    source = (
        "model states exact; activations within 3% of autograd on CPU; "
        f"{r.loss.name} cross-entropy transient {r.loss.transient_low_bytes_per_vocab:g}-"
        f"{r.loss.transient_bytes_per_vocab:g} B per token per vocabulary entry"
    )
    return Estimate(peak, min(low, peak), peak + int(varying * ACTIVATION_CHECK), "bytes", source)


def reserved_at(r: Resolved, b: int, s: int, card_bytes: int | None = None) -> Reserved:
    peak, rm = peak_allocated_bytes(r, b, s), r.profile.reserved
    return reserved_footprint(peak, r.c.gpus, rm, r.c.zero == 3, card_bytes, persistent_bytes(r), r.c.interconnect)


def reserved_estimate(r: Resolved, allocated: Estimate, card_bytes: int | None) -> Estimate:
    """The reserved footprint with its range: the allocated range through the reserved model's low
    and high fragmentation, CUDA context and NCCL figures."""
    rm, gpus, sharded, link = r.profile.reserved, r.c.gpus, r.c.zero == 3, r.c.interconnect
    kept = persistent_bytes(r)
    mid = reserved_footprint(int(allocated.value), gpus, rm, sharded, card_bytes, kept, link).total_bytes
    low = reserved_footprint(int(allocated.low), gpus, rm, sharded, None, kept, link).low_bytes
    high = reserved_footprint(int(allocated.high), gpus, rm, sharded, None, kept, link).high_bytes
    nccl = rm.nccl_for(link, gpus)
    f = (
        (rm.sharded_fragmentation_low, rm.sharded_fragmentation_high)
        if sharded
        else (rm.fragmentation_low, rm.fragmentation_high)
    )
    source = (
        f"allocated x (1 + fragmentation {f[0]:g}-{f[1]:g}{', sharded parameters' if sharded else ''}) + CUDA context "
        f"{rm.cuda_context_low_gib:g}-{rm.cuda_context_high_gib:g} GiB"
        + (f" + NCCL {nccl[1]:.2f}-{nccl[2]:.2f} GiB ({link or 'interconnect not known'})" if gpus > 1 else "")
        + " (profiles/training/frameworks.yaml); "
        + allocated.source
    )
    return Estimate(mid, min(low, mid), max(high, mid), "bytes", source)


def fits_at(r: Resolved, b: int, s: int, mem: int) -> bool:
    """Judged on the reserved footprint; paged optimizer states may be evicted to the host."""
    return reserved_at(r, b, s).fit_bytes - r.paged_bytes <= mem


def _largest(fits: Callable[[int], bool], lo: int, hi: int) -> int:
    """Largest n in [lo, hi] with fits(n) (fits is monotone), or lo - 1 if none."""
    if not fits(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def _assumptions(r: Resolved) -> list[str]:
    c, fw, rm, loss = r.c, r.framework, r.profile.reserved, r.loss
    out = [f"framework: {fw.label} ({fw.name})"]
    if r.base_dtype:
        out.append(f"frozen base in {r.base_dtype}: {r.base_dtype_reason}")
    if c.method != "full":
        a = r.assume
        own = adapter_copy_bytes(a, a.stream)
        out.append(
            f"LoRA adapters in {'fp32' if a.adapter_bytes == 4 else 'the compute dtype'}"
            f"{' (PEFT autocast_adapter_dtype)' if a.adapter_bytes == 4 else ''}; each adapted module keeps "
            f"{f'its own {own}-byte input copy' if own else 'the shared input'}; LoRA dropout {c.lora_dropout:g}"
        )
    out.append(
        f"loss: {loss.name} cross-entropy ({'--loss' if c.loss else fw.name + ' default'}): keeps "
        f"{loss.kept_bytes_per_vocab} B and adds {loss.transient_bytes_per_vocab:g} B per token per vocabulary entry"
    )
    out.append(
        "optimizer step: "
        + (
            "on the CPU (offload)"
            if c.offload != "none"
            else "fused AdamW, no temporary"
            if fw.fused_optimizer
            else "torch foreach (one moment-sized temporary)"
        )
    )
    out.append(f"attention: {c.attention}; activations as transformers keeps them (fp32 RMSNorm copies); {_regime(r)}")
    if c.activation_offload:
        out.append("activation offload: what each layer keeps waits in pinned host RAM; two layers' worth on the GPU")
    if c.optimizer_in_backward:
        out.append("gradients at the peak: one parameter's (optimizer-in-backward steps and frees each as it arrives)")
    elif c.grad_accum == 1:
        out.append("gradients at the peak: only lm_head's during the loss's backward, all of them at its end")
    else:
        out.append("gradients at the peak: all of them (accumulated over micro-batches)")
    if c.gpus > 1 or c.zero:
        ds = fw.sharding == "deepspeed"
        out.append(
            f"sharding: {'DeepSpeed ZeRO' if ds else 'FSDP'} stage {c.zero}, default buffer sizes "
            + (
                f"(reduce bucket {rm.deepspeed_reduce_bucket_elements:.0e} elements allocated whole, prefetch "
                f"{rm.deepspeed_prefetch_bucket_elements:.0e})"
                if ds
                else f"({rm.fsdp_units_in_flight} units in flight"
                + ("; the root unit (embeddings, norm, lm_head) kept gathered)" if not fw.fsdp_root_resharded else ")")
            )
            + ("; NF4 scales whole on every GPU (not parameters)" if c.method == "qlora" and c.zero == 3 else "")
            + (
                "; the 4-bit codes packed in bnb_4bit_quant_storage=bfloat16, as PEFT's FSDP and ZeRO-3 QLoRA scripts "
                "set it (with the default uint8, accelerate's FSDP2 leaves them unsharded on every GPU)"
                if c.method == "qlora" and c.zero == 3
                else ""
            )
        )
    out.append(_reserved_assumption(r))
    return out


def _reserved_assumption(r: Resolved) -> str:
    c, rm = r.c, r.profile.reserved
    link = c.interconnect or "interconnect not known"
    nccl = f" + NCCL {rm.nccl_for(c.interconnect, c.gpus)[0]:.2f} GiB ({link})" if c.gpus > 1 else ""
    offload = (
        "; FSDP CPU offload copies each gathered unit's shard to the GPU before its all-gather"
        if c.offload == "optimizer+params" and c.zero == 3 and r.framework.sharding == "fsdp"
        else ""
    )
    return (
        f"reserved = allocated x (1 + {rm.fragmentation:g}) + CUDA context {rm.cuda_context_gib:g} GiB{nccl}{offload}"
    )


def _regime(r: Resolved) -> str:
    a = r.assume
    if not a.autocast:
        return "one dtype throughout (no autocast" + (
            "; the DeepSpeed/FSDP engine casts every parameter, adapters included)" if r.c.zero else ")"
        )
    if a.stream == 4:
        out = "torch.autocast over an fp32 base: residual stream and norm outputs in fp32"
        return out + (
            "; 4-bit linears cast their outputs back to fp32" if a.linear_out == 4 else "; weight copies kept"
        )
    return "torch.autocast over a 16-bit base" + ("; fp32 adapters keep compute-dtype input casts" if a.adapted else "")


def _notes(r: Resolved) -> list[str]:
    spec, c = r.spec, r.c
    out = []
    if spec.vision is not None:
        out.append("text batches: the vision tower's activations are not counted")
    if spec.mla is not None and spec.moe is not None:
        out.append(
            "MoE layers of an MLA model (DeepSeek's group-limited routing) are counted as transformers' grouped "
            "dispatch; the CPU check covers its latent attention and dense layers"
        )
    if spec.moe is not None and c.method != "full" and {"gate_proj", "up_proj", "down_proj"} & set(r.targets):
        out.append(
            "LoRA on routed experts: PEFT's target_parameters over fused expert tensors (transformers 5) "
            "materializes each layer's merged expert weights, which is not counted"
        )
    if c.zero in (1, 2) and c.gpus == 1:
        out.append(f"ZeRO {c.zero} on one GPU shards nothing")
    if r.paged_bytes:
        out.append(
            f"paged optimizer: {r.paged_bytes / GIB:,.2f} GiB of states may be evicted to host RAM; "
            "the fit does not count them (eviction costs speed)"
        )
    if c.offload != "none":
        out.append(
            f"offload: {r.host_offload_bytes / GIB:,.1f} GiB of host RAM for {c.gpus} GPU(s), plus pinned buffers"
        )
    if c.activation_offload:
        out.append(
            f"activation offload: {r.host_activation_bytes / GIB:,.1f} GiB of pinned host RAM for {c.gpus} GPU(s); "
            "the copies cost PCIe time"
        )
    if amp_full(c, r.framework):
        out.append(
            "torch AMP (Trainer's bf16=True over fp32-loaded weights): fp32 weights and gradients, a 16-bit cast of "
            "every linear's input and weight kept; a bf16-loaded model is --precision bf16, DeepSpeed's --zero 1-3"
        )
    if spec.quant is not None:
        out.append(f"LoRA over the {spec.quant.method} checkpoint: the frozen base is counted as stored")
    return out


def _estimated(spec: ModelSpec, has_gpu: bool) -> list[str]:
    out = ["activations_gib", "temporary_gib", "optimizer_step_gib", "total_gib", "reserved_gib", "comm_buffer_gib"]
    if has_gpu:
        out += ["fits", "max_micro_batch_size", "max_seq_len", "fixes"]
    if spec.quant is not None:
        out.append("weights_gib")  # LoRA kernels over a quantized base may repack it
    return out


def _fit_search(r: Resolved, mem: int | None) -> tuple[bool | None, int | None, int | None]:
    if mem is None:
        return None, None, None
    c = r.c
    return (
        fits_at(r, c.micro_batch_size, r.seq_len, mem),
        _largest(lambda b: fits_at(r, b, r.seq_len, mem), 1, 1 << 24),
        _largest(lambda s: fits_at(r, c.micro_batch_size, s, mem), 1, r.context),
    )


def estimate(
    spec: ModelSpec,
    tensors: Sequence[Tensor],
    config: cfg.TrainingConfig,
    profile: TrainingProfile,
    *,
    gpu_memory_bytes: int | None = None,
    gpu_name: str | None = None,
    model_id: str = "",
    with_fixes: bool = True,
) -> cfg.TrainingEstimate:
    """Per-GPU training memory for one configuration, the fit of its reserved footprint against
    `gpu_memory_bytes`, the largest micro-batch and sequence that fit, and fixes for a misfit."""
    r = resolve(spec, tensors, config, profile)
    mem = gpu_memory_bytes
    fits, max_b, max_s = _fit_search(r, mem)
    fixes: list[dict[str, Any]] = []
    if fits is False and with_fixes and mem is not None:
        fixes = find_fixes(lambda k: _evaluate(spec, tensors, k, profile, mem), config, r, max_b, max_s)
    return cfg.TrainingEstimate(
        model=model_id or spec.architecture,
        **_setting_fields(r),
        **_memory_fields(r, mem),
        gpu=gpu_name,
        gpu_memory_bytes=mem,
        fits=fits,
        max_micro_batch_size=max_b,
        max_seq_len=max_s,
        estimated=_estimated(spec, mem is not None),
        notes=_notes(r),
        assumptions=_assumptions(r),
        fixes=fixes,
    )


def _setting_fields(r: Resolved) -> dict[str, Any]:
    """The setup as resolved (the framework's defaults applied)."""
    c = r.c
    return dict(
        method=c.method,
        precision=c.precision,
        optimizer=c.optimizer,
        micro_batch_size=c.micro_batch_size,
        seq_len=r.seq_len,
        grad_accum=c.grad_accum,
        gpus=c.gpus,
        zero=c.zero,
        gradient_checkpointing=c.gradient_checkpointing,
        attention=c.attention,
        lora_rank=r.rank,
        lora_alpha=(c.lora_alpha if c.lora_alpha is not None else 2 * r.rank) if r.rank else None,
        lora_targets=r.targets,
        context_tokens=r.context,
        effective_batch_size=c.micro_batch_size * c.grad_accum * c.gpus,
        framework=r.framework.name,
        loss=r.loss.name,
        base_dtype=r.base_dtype,
        offload=c.offload,
        activation_offload=c.activation_offload,
        optimizer_in_backward=c.optimizer_in_backward,
    )


def _memory_fields(r: Resolved, mem: int | None) -> dict[str, Any]:
    """Every figure in bytes at the setup's micro-batch and sequence length."""
    c, b, s = r.c, r.c.micro_batch_size, r.seq_len
    res = reserved_at(r, b, s, mem)
    allocated = allocated_estimate(r, b, s)
    reserved = reserved_estimate(r, allocated, mem)
    return dict(
        params_total=r.params_total,
        params_trainable=sum(_prod(x) for x in r.trainable_shapes),
        states=r.states,
        states_unsharded=r.unsharded,
        activation_bytes=r.act.bytes(b, s),
        activation_breakdown=r.act.breakdown(b, s),
        temporary_bytes=temporary_bytes(r, b, s),
        optimizer_step_bytes=r.step_bytes,
        total_bytes=peak_allocated_bytes(r, b, s),
        total_bytes_without_accum=peak_allocated_bytes(r, b * c.grad_accum, s, False) if c.grad_accum > 1 else None,
        reserved_bytes=res.total_bytes,
        reserved_range_bytes=(int(reserved.low), int(reserved.high)),
        reserved_breakdown=res.breakdown,
        comm_buffer_bytes=sum(r.comm.values()),
        paged_optimizer_bytes=r.paged_bytes,
        host_offload_bytes=r.host_offload_bytes,
        host_activation_bytes=r.host_activation_bytes,
        phase_bytes=phase_bytes(r, b, s),
        estimates={"allocated": allocated, "reserved": reserved},
    )


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _evaluate(
    spec: ModelSpec, tensors: Sequence[Tensor], c: cfg.TrainingConfig, profile: TrainingProfile, mem: int
) -> tuple[bool, int]:
    """(fits, reserved bytes) of a candidate setup, without the searches."""
    r = resolve(spec, tensors, c, profile)
    return fits_at(r, c.micro_batch_size, r.seq_len, mem), reserved_at(
        r, c.micro_batch_size, r.seq_len, mem
    ).total_bytes
