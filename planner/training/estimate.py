"""The estimate: the allocated peak, the reserved footprint the fit is judged on, the largest
micro-batch and sequence, what was assumed, and the fixes for a misfit. Pure.

The peak: model states without their gradients live all run; on top of them the larger of the
start of the backward pass (every activation, the loss's transient and only lm_head's gradient
so far) and its end (every gradient, one layer's workspace), or, with gradient accumulation past
the first micro-batch, every gradient and every activation at once; or the optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from planner.models.spec import ModelSpec
from planner.models.tensors import Tensor
from planner.training import config as cfg
from planner.training.fixes import find_fixes
from planner.training.framework import TrainingProfile
from planner.training.reserved import Reserved, reserved_footprint
from planner.training.resolve import Resolved, resolve


def loss_transient_bytes(r: Resolved, b: int, s: int) -> int:
    return int(r.loss.transient_bytes_per_vocab * r.spec.vocab_size * b * s)


def temporary_bytes(r: Resolved, b: int, s: int) -> int:
    """Transients beside the activations: the loss's backward tensors or one layer's gradient
    workspace, QLoRA's dequantized weight, the communication buffers."""
    workspace = r.act.workspace_bytes_per_token * b * s
    return max(loss_transient_bytes(r, b, s), workspace) + r.fixed_temporary_bytes


def phase_bytes(r: Resolved, b: int, s: int, accumulating: bool | None = None) -> dict[str, int]:
    """What is alive beyond the persistent states in each phase of a step. The loss's backward
    (every held activation, the loss's kept and transient tensors, lm_head's gradient); the
    backward pass of the costliest layer (held activations, its recomputed activations and
    gradient workspace); the end of the backward pass (every gradient); the optimizer step. With
    gradient accumulation past the first micro-batch, every gradient in every phase."""
    grads = r.backward_grad_bytes
    accum = r.c.grad_accum > 1 if accumulating is None else accumulating
    early = grads if accum else r.head_grad_bytes
    held, fixed = r.act.held_bytes(b, s), r.fixed_temporary_bytes
    first = r.act.layer_bytes(b, s)[0] if r.act.offload else 0
    return {
        "loss backward": early + held + r.act.head_bytes(b, s) + loss_transient_bytes(r, b, s) + fixed,
        "layer backward": early + held + r.act.backward_layer_bytes(b, s) + fixed,
        "end of backward": grads + r.act.layer_bytes(b, s)[0] + first + r.act.workspace_bytes_per_token * b * s + fixed,
        "optimizer step": grads + r.step_bytes,
    }


def peak_allocated_bytes(r: Resolved, b: int, s: int, accumulating: bool | None = None) -> int:
    """`accumulating`: gradients carried over from earlier micro-batches (default: grad_accum > 1)."""
    st = r.states
    persistent = st.total - st.gradients - st.adapter_gradients
    return persistent + max(phase_bytes(r, b, s, accumulating).values())


def reserved_at(r: Resolved, b: int, s: int) -> Reserved:
    return reserved_footprint(peak_allocated_bytes(r, b, s), r.c.gpus, r.profile.reserved)


def fits_at(r: Resolved, b: int, s: int, mem: int) -> bool:
    """Judged on the reserved footprint; paged optimizer states may be evicted to the host."""
    return reserved_at(r, b, s).total_bytes - r.paged_bytes <= mem


def _largest(fits: Callable[[int], bool], lo: int, hi: int) -> int:
    """Largest n in [lo, hi] with fits(n) (fits is monotone), or lo - 1 if none."""
    if not fits(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def _assumptions(r: Resolved) -> list[str]:
    c, fw, rm = r.c, r.framework, r.profile.reserved
    out = [f"framework: {fw.label} ({fw.name})"]
    if r.base_dtype:
        out.append(f"frozen base in {r.base_dtype}: {r.base_dtype_reason}")
    if c.method != "full":
        out.append(
            f"LoRA adapters in {'fp32' if r.adapter_bytes == 4 else 'the compute dtype'}"
            f"{' (PEFT autocast_adapter_dtype)' if fw.adapter_dtype == 'fp32' else ''}; each adapted module keeps "
            f"{'its own input copy' if r.adapter_bytes != r.rule.activation_bytes or c.lora_dropout else 'the shared input'}; "
            f"LoRA dropout {c.lora_dropout:g}"
        )
    out.append(
        f"loss: {r.loss.name} cross-entropy ({'--loss' if c.loss else fw.name + ' default'}): keeps "
        f"{r.loss.kept_bytes_per_vocab} B and adds {r.loss.transient_bytes_per_vocab:g} B per token per vocabulary entry"
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
    out.append(f"attention: {c.attention}; activations as transformers keeps them (fp32 RMSNorm copies)")
    out.append(
        "gradients at the peak: only lm_head's at the start of the backward pass"
        if c.grad_accum == 1
        else "gradients at the peak: all of them (accumulated over micro-batches)"
    )
    if c.gpus > 1 or c.zero:
        out.append(
            f"sharding: {'DeepSpeed ZeRO' if fw.sharding == 'deepspeed' else 'FSDP'} stage {c.zero}, default buffer "
            f"sizes (reduce bucket {rm.deepspeed_reduce_bucket_elements:.0e}, prefetch "
            f"{rm.deepspeed_prefetch_bucket_elements:.0e} elements; FSDP {rm.fsdp_units_in_flight} units in flight)"
        )
    out.append(
        f"reserved = allocated x (1 + {rm.fragmentation:g}) + CUDA context {rm.cuda_context_gib:g} GiB"
        + (f" + NCCL {rm.nccl_gib:g} GiB" if c.gpus > 1 else "")
    )
    return out


def _notes(r: Resolved) -> list[str]:
    spec, c = r.spec, r.c
    out = []
    if spec.vision is not None:
        out.append("text batches: the vision tower's activations are not counted")
    if spec.mla is not None:
        out.append("MLA attention activations are approximated (every latent projection input counted)")
    if spec.moe is not None and c.method != "full" and {"gate_proj", "up_proj", "down_proj"} & set(r.targets):
        out.append(
            "LoRA on routed experts: PEFT's target_parameters over fused expert tensors (transformers 5) "
            "materializes each layer's merged expert weights, which is not counted"
        )
    if c.zero in (1, 2) and c.gpus == 1:
        out.append(f"ZeRO {c.zero} on one GPU shards nothing")
    if r.paged_bytes:
        out.append(
            f"paged optimizer: {r.paged_bytes / 2**30:,.2f} GiB of states may be evicted to host RAM; "
            "the fit does not count them (eviction costs speed)"
        )
    if c.offload != "none":
        out.append(
            f"offload: {r.host_offload_bytes / 2**30:,.1f} GiB of host RAM for {c.gpus} GPU(s), plus pinned buffers"
        )
    if c.precision in ("bf16-mixed", "fp16-mixed") and r.base_dtype == "fp32":
        out.append("an fp32 base under autocast: activations are counted in 16-bit; the residual stream stays fp32")
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
    c, b, s, mem = config, config.micro_batch_size, r.seq_len, gpu_memory_bytes
    fits, max_b, max_s = _fit_search(r, mem)
    res = reserved_at(r, b, s)
    fixes: list[dict[str, Any]] = []
    if fits is False and with_fixes and mem is not None:
        fixes = find_fixes(lambda k: _evaluate(spec, tensors, k, profile, mem), c, r, max_b, max_s)
    return cfg.TrainingEstimate(
        model=model_id or spec.architecture,
        method=c.method,
        precision=c.precision,
        optimizer=c.optimizer,
        micro_batch_size=b,
        seq_len=s,
        grad_accum=c.grad_accum,
        gpus=c.gpus,
        zero=c.zero,
        gradient_checkpointing=c.gradient_checkpointing,
        attention=c.attention,
        lora_rank=r.rank,
        lora_alpha=(c.lora_alpha if c.lora_alpha is not None else 2 * r.rank) if r.rank else None,
        lora_targets=r.targets,
        params_total=r.params_total,
        params_trainable=sum(_prod(x) for x in r.trainable_shapes),
        states=r.states,
        states_unsharded=r.unsharded,
        activation_bytes=r.act.bytes(b, s),
        activation_breakdown=r.act.breakdown(b, s),
        temporary_bytes=temporary_bytes(r, b, s),
        optimizer_step_bytes=r.step_bytes,
        total_bytes=peak_allocated_bytes(r, b, s),
        gpu=gpu_name,
        gpu_memory_bytes=mem,
        fits=fits,
        max_micro_batch_size=max_b,
        max_seq_len=max_s,
        context_tokens=r.context,
        effective_batch_size=b * c.grad_accum * c.gpus,
        total_bytes_without_accum=peak_allocated_bytes(r, b * c.grad_accum, s, False) if c.grad_accum > 1 else None,
        estimated=_estimated(spec, mem is not None),
        notes=_notes(r),
        framework=r.framework.name,
        loss=r.loss.name,
        base_dtype=r.base_dtype,
        offload=c.offload,
        reserved_bytes=res.total_bytes,
        reserved_range_bytes=(res.low_bytes, res.high_bytes),
        reserved_breakdown=res.breakdown,
        comm_buffer_bytes=sum(r.comm.values()),
        paged_optimizer_bytes=r.paged_bytes,
        host_offload_bytes=r.host_offload_bytes,
        assumptions=_assumptions(r),
        fixes=fixes,
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
    return fits_at(r, c.micro_batch_size, r.seq_len, mem), reserved_at(r, c.micro_batch_size, r.seq_len).total_bytes
