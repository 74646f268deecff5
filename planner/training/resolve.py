"""One training setup resolved: the framework's defaults applied, the model states per GPU (ZeRO,
offload), the activation model and the batch-independent buffers. Pure."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from planner import accounting as acc
from planner.errors import PlannerError
from planner.models.spec import ModelSpec
from planner.models.tensors import Tensor
from planner.training import config as cfg
from planner.training.activation_model import ActivationModel, activation_model
from planner.training.activations import ActivationAssumptions
from planner.training.framework import DTYPE_BYTES, Framework, LossImpl, TrainingProfile, check_framework_choice
from planner.training.lora import (
    LinearModule,
    adapter_states,
    decoder_linear_modules,
    lora_adapter_shapes,
    resolve_lora_targets,
)
from planner.training.reserved import FSDP_UNITS, CommInputs, comm_buffer_bytes
from planner.training.states import (
    PAGED_OPTIMIZERS,
    ModelStates,
    PrecisionRule,
    nf4_code_bytes,
    nf4_scale_bytes,
    precision_rule,
    trainable_states,
    zero_shard,
)
from planner.units import GIB

_CHECKPOINT_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass(frozen=True)
class Resolved:
    """Everything about one setup that does not depend on the micro-batch or the sequence length."""

    c: cfg.TrainingConfig
    spec: ModelSpec
    seq_len: int
    context: int
    rank: int | None
    rule: PrecisionRule
    framework: Framework
    loss: LossImpl
    profile: TrainingProfile
    base_dtype: str | None
    """The frozen base's dtype (LoRA; QLoRA: the parts outside NF4); None for full fine-tuning."""
    base_dtype_reason: str
    adapter_bytes: int
    targets: tuple[str, ...]
    modules: tuple[LinearModule, ...]
    trainable_shapes: tuple[tuple[int, ...], ...]
    params_total: int
    unsharded: ModelStates
    states: ModelStates
    """On the GPU: after ZeRO and offload."""
    host_offload_bytes: int
    host_activation_bytes: int
    act: ActivationModel
    assume: ActivationAssumptions
    comm: dict[str, int]
    fixed_temporary_bytes: int
    """QLoRA's dequantized weight and the communication buffers."""
    step_bytes: int
    head_grad_bytes: int
    backward_grad_bytes: int
    """Gradients alive at the end of the backward pass: all of them, or with optimizer-in-backward
    only the largest parameter's."""
    paged_bytes: int
    fsdp_unit_bytes: int = 0
    """One gathered decoder-layer unit under FSDP FULL_SHARD (0 otherwise): the layer backward holds
    `fsdp_units_in_flight` of them (the current and the prefetched), the end of the forward pass none
    (each layer is resharded after its forward, forward_prefetch off), the loss's backward one (the last
    layer, prefetched by BACKWARD_PRE) and the end of the backward pass one (the first layer: nothing
    is left to prefetch)."""


def base_tensors(tensors: Sequence[Tensor]) -> list[Tensor]:
    return [t for t in tensors if t.loaded and not t.runtime]


def _base_dtype(spec: ModelSpec, c: cfg.TrainingConfig, fw: Framework, rule: PrecisionRule) -> tuple[str | None, str]:
    if c.method == "full":
        return None, ""
    if fw.sharding == "deepspeed" and c.zero > 0 and c.precision in ("bf16-mixed", "fp16-mixed"):
        dt = c.precision.split("-")[0]
        return dt, f"the DeepSpeed engine casts the module to {dt} (bf16/fp16 enabled)"
    if c.base_dtype is not None:
        return c.base_dtype, "--base-dtype"
    default = fw.qlora_base_dtype if c.method == "qlora" else fw.lora_base_dtype
    if default == "model":
        return _CHECKPOINT_DTYPES.get(spec.dtype, "bf16"), f"{fw.name} default: the checkpoint's dtype"
    why = (
        " (prepare_model_for_kbit_training upcasts embeddings, norms and lm_head)"
        if c.method == "qlora" and default == "fp32"
        else ""
    )
    return default, f"{fw.name} default{why}"


def _frozen_bytes(t: Tensor, spec: ModelSpec, method: str, base_bytes: int) -> tuple[int, int, int]:
    """(plain bytes, NF4 code bytes, NF4 scale bytes) of one frozen base tensor under LoRA or QLoRA."""
    if method == "qlora" and t.linear and isinstance(t.stage, int):
        per_matrix = math.prod(t.shape[-2:])
        copies = t.shape[0] if len(t.shape) == 3 else 1
        return 0, copies * nf4_code_bytes(per_matrix), copies * nf4_scale_bytes(per_matrix)
    if spec.quant is not None and acc.is_quantized(t, spec.quant):
        return acc.quantized_bytes(spec.quant, t.shape), 0, 0  # LoRA over a quantized checkpoint: as stored
    return t.numel * base_bytes, 0, 0


def _states(
    spec: ModelSpec,
    base: list[Tensor],
    c: cfg.TrainingConfig,
    rule: PrecisionRule,
    base_bytes: int,
    adapter_shapes: list[tuple[int, ...]],
    adapter_bytes: int,
) -> ModelStates:
    if c.method == "full":
        return trainable_states((t.shape or (1,) for t in base), rule, c.optimizer)
    plain = codes = scales = 0
    for t in base:
        p, q, r = _frozen_bytes(t, spec, c.method, base_bytes)
        plain, codes, scales = plain + p, codes + q, scales + r
    return dataclasses.replace(
        adapter_states(adapter_shapes, rule, c.optimizer, adapter_bytes),
        weights=plain,
        quantized_base=codes,
        quant_scales=scales,
    )


def _offload(states: ModelStates, c: cfg.TrainingConfig, fw: Framework) -> tuple[ModelStates, int]:
    """ZeRO-Offload / FSDP CPU offload: master weights, optimizer states and gradient partitions on
    the host (the step runs there); with parameters, the sharded weights too (QLoRA's NF4 scales stay:
    they are not parameters). Returns the GPU's states and the host bytes for all ranks."""
    if c.offload == "none":
        return states, 0
    if fw.sharding == "fsdp" and c.offload == "optimizer":
        raise PlannerError(
            f"{fw.label} uses FSDP, whose CPU offload moves parameters, gradients and optimizer "
            "states together: use --offload optimizer+params (with --zero 3)"
        )
    moved = dict(master_weights=0, optimizer=0, adapter_optimizer=0, gradients=0, adapter_gradients=0)
    if c.offload == "optimizer+params":
        moved |= dict(weights=0, quantized_base=0, adapter_weights=0)
    gpu = dataclasses.replace(states, **moved)
    return gpu, (states.total - gpu.total) * c.gpus


def _unit_params(base: list[Tensor], trainable: bool) -> tuple[int, int]:
    """(parameters, trainable parameters) of the largest group gathered at once."""
    units: dict[object, int] = {}
    for t in base:
        units[t.stage] = units.get(t.stage, 0) + t.numel
    biggest = max(units.values())
    return biggest, biggest if trainable else 0


def _step_bytes(states: ModelStates, shapes: Sequence[tuple[int, ...]], c: cfg.TrainingConfig, fused: bool) -> int:
    """torch's foreach AdamW computes sqrt of the second moments for all tensors at once (one
    moment's worth; fused=True does not); Adafactor builds a full fp32 update and an fp32 copy per
    tensor, one at a time; bitsandbytes and SGD update in place; offloaded states step on the CPU;
    optimizer-in-backward steps one parameter at a time (its temporary is one tensor's)."""
    optimizer = c.optimizer
    if c.offload != "none":
        return 0
    if c.optimizer_in_backward and shapes:
        per = (states.optimizer + states.adapter_optimizer) // max(1, _numel(shapes))
        return max(math.prod(x) for x in shapes) * per // 2 if optimizer in ("adamw", "paged-adamw") else 0
    if optimizer in ("adamw", "paged-adamw") and not fused:
        return (states.optimizer + states.adapter_optimizer) // 2
    if optimizer == "adafactor" and shapes:
        return 8 * max(math.prod(s) for s in shapes)
    return 0


def _lora_setup(spec: ModelSpec, base: list[Tensor], c: cfg.TrainingConfig, rank: int | None):
    modules = decoder_linear_modules(base)
    targets = resolve_lora_targets(c.lora_targets, modules, spec.architecture) if rank else ()
    return modules, targets, (lora_adapter_shapes(modules, targets, rank) if rank else [])


def _framework(c: cfg.TrainingConfig, profile: TrainingProfile) -> Framework:
    fw = profile.framework(c.framework)
    if c.sharding is not None:
        fw = dataclasses.replace(fw, sharding=c.sharding)
    check_framework_choice(fw, c.loss, c.base_dtype)
    if c.optimizer_in_backward and c.zero and fw.sharding == "deepspeed":
        raise PlannerError(
            f"--optimizer-in-backward runs on FSDP (torchtune), not under DeepSpeed ZeRO {c.zero}: "
            "add --sharding fsdp, use --zero 0, or drop the flag"
        )
    return fw


def _assumptions(
    c: cfg.TrainingConfig, fw: Framework, rule: PrecisionRule, base_dtype: str | None, targets, rank, loss: LossImpl
) -> ActivationAssumptions:
    """How the forward pass runs. DeepSpeed's bf16/fp16 engine and FSDP's mixed precision cast every
    parameter, adapters included, to the compute dtype: one dtype throughout. Otherwise mixed
    precision is torch.autocast over the weights as loaded: an fp32 base keeps the residual stream
    and the norm outputs in fp32, QLoRA's 4-bit linears cast their outputs back to it, and frozen
    fp32 linears (a LoRA base, QLoRA's lm_head) keep compute-dtype weight copies. Full fine-tuning
    under torch AMP (`amp_full`) trains fp32 weights the same way: the casts of trained weights are
    cached for the forward pass and kept for the backward pass."""
    e = rule.activation_bytes
    engine_casts = c.zero > 0 and c.precision in ("bf16-mixed", "fp16-mixed")
    autocast = c.precision in ("bf16-mixed", "fp16-mixed") and not engine_casts
    fp32_base = autocast and (base_dtype == "fp32" if c.method != "full" else amp_full(c, fw))
    adapter_bytes = e if engine_casts or fw.adapter_dtype != "fp32" else 4
    return ActivationAssumptions(
        element_bytes=e,
        attention=c.attention,
        trainable=c.method == "full",
        adapted=frozenset(targets),
        lora_rank=rank or 0,
        adapter_bytes=adapter_bytes,
        lora_dropout=c.lora_dropout > 0,
        loss_bytes_per_vocab=loss.kept_bytes_per_vocab,
        autocast=autocast,
        stream_bytes=4 if fp32_base else e,
        linear_out_bytes=4 if fp32_base and c.method == "qlora" else e,
        weight_casts=fp32_base and c.method != "qlora",
        head_weight_cast=fp32_base,
        expert_bytes=(4 if fp32_base else e) if autocast else 0,
    )


def amp_full(c: cfg.TrainingConfig, fw: Framework) -> bool:
    """Full fine-tuning in bf16/fp16-mixed under torch AMP: fp32 weights and gradients under
    torch.autocast (the framework's `mixed_precision: amp`, no DeepSpeed / FSDP engine)."""
    mixed = c.precision in ("bf16-mixed", "fp16-mixed")
    return c.method == "full" and mixed and c.zero == 0 and fw.mixed_precision == "amp"


def _gathered_units(spec: ModelSpec, base: list[Tensor], c: cfg.TrainingConfig, rule: PrecisionRule) -> dict:
    """Gathered bytes per unit (a decoder layer by index, "first" / "last" outside them): a
    compute-dtype copy of every parameter, or under QLoRA the 4-bit codes of the NF4 linears (packed
    in bnb_4bit_quant_storage; their scales are not parameters and are never gathered)."""
    units: dict[object, int] = {}
    for t in base:
        plain, codes, _ = _frozen_bytes(t, spec, "qlora", rule.activation_bytes)
        nbytes = plain + codes if c.method == "qlora" else t.numel * rule.activation_bytes
        units[t.stage] = units.get(t.stage, 0) + nbytes
    return units


def _comm(c: cfg.TrainingConfig, fw: Framework, profile: TrainingProfile, spec, base, rule, n_trainable, unsharded):
    unit, unit_trainable = _unit_params(base, c.method == "full")
    units = _gathered_units(spec, base, c, rule)
    layers = [b for k, b in units.items() if isinstance(k, int)]
    inputs = CommInputs(
        c.gpus,
        c.zero,
        unit,
        rule.activation_bytes,
        n_trainable,
        rule.grad_bytes,
        unit_trainable,
        unsharded.weights + unsharded.quantized_base,
        largest_unit_bytes=max(units.values()),
        layer_unit_bytes=max(layers, default=0),
        root_unit_bytes=sum(b for k, b in units.items() if not isinstance(k, int)),
        offload_params=c.offload == "optimizer+params",
    )
    return comm_buffer_bytes(inputs, fw, profile.reserved)


def _check_host(c: cfg.TrainingConfig, host: int) -> None:
    if c.host_memory_bytes is not None and host > c.host_memory_bytes:
        what = " and ".join(
            x
            for x in (
                f"--offload {c.offload}" if c.offload != "none" else "",
                "--activation-offload" if c.activation_offload else "",
            )
            if x
        )
        raise PlannerError(
            f"{what} needs {host / GIB:,.1f} GiB of host RAM for {c.gpus} GPU(s), more than "
            f"--host-memory-gib {c.host_memory_bytes / GIB:,.1f}: add host RAM or GPUs, or offload less"
        )


def _head_grad(c: cfg.TrainingConfig, spec: ModelSpec, base, rule, states: ModelStates) -> int:
    if c.method != "full":
        return 0
    head = sum(t.numel for t in base if t.component == "lm_head") or spec.vocab_size * spec.hidden_size
    return min(states.gradients, head * rule.grad_bytes // (c.gpus if c.zero >= 2 else 1))


def _grads_in_backward(c: cfg.TrainingConfig, states: ModelStates, shapes, rule) -> int:
    """Optimizer-in-backward: only the largest parameter's gradient is alive at once."""
    grads = states.gradients + states.adapter_gradients
    if not c.optimizer_in_backward or not shapes:
        return grads
    per = rule.grad_bytes if c.method == "full" else (states.adapter_gradients // max(1, _numel(shapes)))
    return min(grads, max(math.prod(x) for x in shapes) * per)


def _numel(shapes) -> int:
    return sum(math.prod(x) for x in shapes)


def _dequant_bytes(c: cfg.TrainingConfig, base: Sequence[Tensor], rule: PrecisionRule) -> int:
    """QLoRA dequantizes one 4-bit linear at a time to the compute dtype: the largest is the temporary."""
    if c.method != "qlora":
        return 0
    linears = (math.prod(t.shape[-2:]) for t in base if t.linear and isinstance(t.stage, int))
    return max(linears) * rule.activation_bytes


def resolve(spec: ModelSpec, tensors: Sequence[Tensor], c: cfg.TrainingConfig, profile: TrainingProfile) -> Resolved:
    cfg.check_choices(c)
    cfg.check_model(spec, tensors, c.method)
    fw = _framework(c, profile)
    context = cfg.model_context_tokens(spec)
    seq, rank, rule = cfg.check_counts(c, context), cfg.check_lora(c), precision_rule(c.precision)
    if amp_full(c, fw):  # fp32 weights and gradients, fp32 moments: the same 16 bytes with AdamW
        rule = dataclasses.replace(rule, weight_bytes=4, master_bytes=0, grad_bytes=4)
    if c.checkpointed_layers is not None and c.checkpointed_layers > spec.num_layers:
        raise PlannerError(f"--checkpoint-layers {c.checkpointed_layers} exceeds the model's {spec.num_layers} layers")
    base = base_tensors(tensors)
    modules, targets, adapter_shapes = _lora_setup(spec, base, c, rank)
    base_dtype, why = _base_dtype(spec, c, fw, rule)
    loss = profile.loss(c.loss or fw.loss)
    assume = _assumptions(c, fw, rule, base_dtype, targets, rank, loss)
    adapter_bytes = 4 if fw.adapter_dtype == "fp32" else rule.activation_bytes  # the states (engines keep fp32 masters)
    unsharded = _states(
        spec, base, c, rule, DTYPE_BYTES[base_dtype] if base_dtype else 0, adapter_shapes, adapter_bytes
    )
    states, host = _offload(zero_shard(unsharded, c.zero, c.gpus), c, fw)
    ckpt_layers = -1 if c.checkpointed_layers is None else c.checkpointed_layers
    act = activation_model(spec, assume, modules, c.gradient_checkpointing, ckpt_layers, c.activation_offload)
    host_act = act.host_bytes(c.micro_batch_size, seq) * c.gpus
    _check_host(c, host + host_act)
    shapes = tuple(t.shape or (1,) for t in base) if c.method == "full" else tuple(adapter_shapes)
    comm = _comm(c, fw, profile, spec, base, rule, _numel(shapes), unsharded)
    dequant = _dequant_bytes(c, base, rule)
    paged = unsharded.optimizer + unsharded.adapter_optimizer if c.optimizer in PAGED_OPTIMIZERS else 0
    return Resolved(
        c=c,
        spec=spec,
        seq_len=seq,
        context=context,
        rank=rank,
        rule=rule,
        framework=fw,
        loss=loss,
        profile=profile,
        base_dtype=base_dtype,
        base_dtype_reason=why,
        adapter_bytes=adapter_bytes,
        targets=targets,
        modules=tuple(modules),
        trainable_shapes=shapes,
        params_total=sum(t.numel for t in base),
        unsharded=unsharded,
        states=states,
        host_offload_bytes=host + host_act,
        host_activation_bytes=host_act,
        act=act,
        assume=assume,
        comm=comm,
        fixed_temporary_bytes=dequant + sum(comm.values()),
        step_bytes=_step_bytes(states, shapes, c, fw.fused_optimizer),
        head_grad_bytes=_head_grad(c, spec, base, rule, states),
        backward_grad_bytes=_grads_in_backward(c, states, shapes, rule),
        paged_bytes=min(paged, states.optimizer + states.adapter_optimizer),
        fsdp_unit_bytes=comm.get(FSDP_UNITS, 0) // profile.reserved.fsdp_units_in_flight,
    )
