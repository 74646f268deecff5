"""The `train` command's configuration, its checks (one-line errors naming the fix) and the result."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from planner.errors import PlannerError
from planner.estimate import Estimate
from planner.models.spec import ModelSpec
from planner.models.tensors import Tensor
from planner.training.activations import ATTENTIONS
from planner.training.framework import BASE_DTYPES, INTERCONNECTS, LOSSES
from planner.training.states import OPTIMIZERS, PAGED_OPTIMIZERS, PRECISIONS_CHOICES, ZERO_STAGES, ModelStates
from planner.units import GIB

METHODS: tuple[str, ...] = ("full", "lora", "qlora")
OFFLOADS: tuple[str, ...] = ("none", "optimizer", "optimizer+params")
DEFAULT_SEQ_LEN_TOKENS = 2048
"""--seq-len when none is given (capped at the model's context)."""


@dataclass(frozen=True)
class TrainingConfig:
    """One training setup (the `train` command's options)."""

    method: str = "full"
    precision: str = "bf16-mixed"
    optimizer: str = "adamw"
    micro_batch_size: int = 1
    seq_len: int | None = None
    """Tokens per sequence; None: DEFAULT_SEQ_LEN_TOKENS capped at the model's context."""
    grad_accum: int = 1
    gpus: int = 1
    """Data-parallel GPUs (ZeRO shards over them)."""
    zero: int = 0
    gradient_checkpointing: bool = False
    attention: str = "flash"
    lora_rank: int | None = None
    """LoRA rank (default 16 for lora/qlora); must stay None for full fine-tuning."""
    lora_alpha: float | None = None
    """LoRA scaling numerator (default 2 x rank); does not change memory."""
    lora_targets: tuple[str, ...] | None = None
    """Module names or short names (q,k,v,o,gate,up,down); None: every decoder linear."""
    lora_dropout: float = 0.0
    """LoRA dropout probability; above 0 each adapted module keeps a dropout output and mask."""
    framework: str = "hf"
    """hf (Trainer / TRL + PEFT), torchtune, axolotl, pytorch: picks the defaults below."""
    base_dtype: str | None = None
    """Frozen base dtype for LoRA (QLoRA: the parts left out of NF4); None: the framework's."""
    loss: str | None = None
    """Cross-entropy implementation: full, chunked, fused; None: the framework's."""
    sharding: str | None = None
    """What --zero means: deepspeed or fsdp; None: the framework's."""
    offload: str = "none"
    """CPU offload: none, optimizer (ZeRO-Offload / FSDP), optimizer+params (ZeRO-3 / FSDP)."""
    host_memory_bytes: int | None = None
    """Host RAM of one node for offload (the check), None: not checked."""
    checkpointed_layers: int | None = None
    """Selective checkpointing: checkpoint this many decoder layers (None: all, with checkpointing)."""
    activation_offload: bool = False
    """Activation offloading (torch's save_on_cpu, torchtune's enable_activation_offloading): what
    the layers keep for the backward pass waits in pinned host memory."""
    optimizer_in_backward: bool = False
    """Optimizer step fused into the backward pass (torchtune's optimizer_in_bwd): each gradient is
    applied and freed as soon as it is accumulated; only one parameter's gradient is alive."""
    interconnect: str | None = None
    """How the GPUs talk (nvls, nvlink, pcie_p2p, pcie: the catalogue GPU's class), for NCCL's
    device memory; None: not known (a default range)."""


@dataclass(frozen=True)
class TrainingEstimate:
    """Training memory on one GPU (the busiest data-parallel rank; all ranks are alike)."""

    model: str
    method: str
    precision: str
    optimizer: str
    micro_batch_size: int
    seq_len: int
    grad_accum: int
    gpus: int
    zero: int
    gradient_checkpointing: bool
    attention: str
    lora_rank: int | None
    lora_alpha: float | None
    lora_targets: tuple[str, ...]
    params_total: int
    params_trainable: int
    states: ModelStates
    """Per GPU, after ZeRO sharding (exact)."""
    states_unsharded: ModelStates
    activation_bytes: int
    activation_breakdown: dict[str, int]
    temporary_bytes: int
    """Transients beside the activations at the backward peak: the loss's fp32 gradients or one
    layer's gradient workspace, QLoRA's dequantized weight, ZeRO-3's gathered layers."""
    optimizer_step_bytes: int
    """Transient of the optimizer step, when the activations are gone."""
    total_bytes: int
    gpu: str | None
    gpu_memory_bytes: int | None
    fits: bool | None
    max_micro_batch_size: int | None
    """Largest micro-batch that fits at `seq_len` (0: not even 1)."""
    max_seq_len: int | None
    """Longest sequence (up to the model's context) that fits at `micro_batch_size` (0: none)."""
    context_tokens: int
    effective_batch_size: int
    """micro-batch x grad-accum x data-parallel GPUs (sequences per optimizer step)."""
    total_bytes_without_accum: int | None
    """Total at micro-batch x grad-accum in one pass: what gradient accumulation saves."""
    estimated: list[str]
    notes: list[str]
    framework: str = "hf"
    loss: str = "full"
    base_dtype: str | None = None
    offload: str = "none"
    reserved_bytes: int = 0
    """The process's whole footprint at the peak (est.): allocated x (1 + fragmentation), the CUDA
    context and NCCL's buffers. `fits` compares this with the card."""
    reserved_range_bytes: tuple[int, int] = (0, 0)
    reserved_breakdown: dict[str, int] = field(default_factory=dict)
    comm_buffer_bytes: int = 0
    """DeepSpeed / FSDP buffers inside the allocated peak: buckets, gathered and prefetched units."""
    paged_optimizer_bytes: int = 0
    """Optimizer states in CUDA unified memory (paged optimizers): evicted to host under pressure."""
    host_offload_bytes: int = 0
    """Host RAM the offloaded states (and offloaded activations) need for all `gpus` ranks."""
    activation_offload: bool = False
    optimizer_in_backward: bool = False
    host_activation_bytes: int = 0
    """Pinned host memory the offloaded activations need for all `gpus` ranks (in host_offload_bytes)."""
    phase_bytes: dict[str, int] = field(default_factory=dict)
    """Beyond the persistent states, what each phase of a step holds; the peak is the largest."""
    estimates: dict[str, Estimate] = field(default_factory=dict)
    """The allocated peak and the reserved footprint with their ranges and sources (bytes)."""
    assumptions: list[str] = field(default_factory=list)
    fixes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        skip = ("states", "states_unsharded", "activation_bytes", "estimates")  # re-added below
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        s = self.states
        gib = {
            "weights": s.weights,
            "master_weights": s.master_weights,
            "gradients": s.gradients,
            "optimizer": s.optimizer,
            "adapter": s.adapter,
            "adapter_weights": s.adapter_weights,
            "adapter_gradients": s.adapter_gradients,
            "adapter_optimizer": s.adapter_optimizer,
            "quantized_base": s.quantized_base,
            "quant_scales": s.quant_scales,
            "activations": self.activation_bytes,
            "temporary": self.temporary_bytes,
            "optimizer_step": self.optimizer_step_bytes,
            "total": self.total_bytes,
        }
        for k, v in gib.items():
            d[f"{k}_bytes"], d[f"{k}_gib"] = v, round(v / GIB, 4)
        d["gpu_memory_gib"] = None if self.gpu_memory_bytes is None else round(self.gpu_memory_bytes / GIB, 4)
        d["activation_breakdown_gib"] = {k: round(v / GIB, 4) for k, v in self.activation_breakdown.items()}
        d["tokens_per_step"] = self.effective_batch_size * self.seq_len
        d["lora_targets"] = list(self.lora_targets)
        d["reserved_gib"] = round(self.reserved_bytes / GIB, 4)
        d["reserved_range_gib"] = [round(x / GIB, 4) for x in self.reserved_range_bytes]
        d["reserved_breakdown_gib"] = {k: round(v / GIB, 4) for k, v in self.reserved_breakdown.items()}
        for k in ("comm_buffer", "paged_optimizer", "host_offload"):
            d[f"{k}_gib"] = round(getattr(self, f"{k}_bytes") / GIB, 4)
        d["reserved_range_bytes"] = list(self.reserved_range_bytes)
        d["host_activation_gib"] = round(self.host_activation_bytes / GIB, 4)
        d["phase_gib"] = {k: round(v / GIB, 4) for k, v in self.phase_bytes.items()}
        d["estimates"] = {
            k: {
                "value_gib": round(e.value / GIB, 4),
                "range_gib": [round(x / GIB, 4) for x in e.range()],
                "source": e.source,
            }
            for k, e in self.estimates.items()
        }
        return d


# ---- validation -------------------------------------------------------------------------------


def model_context_tokens(spec: ModelSpec) -> int:
    return spec.max_model_len_default or spec.max_position_embeddings


def check_counts(c: TrainingConfig, context: int) -> int:
    for name, value in (("--micro-batch-size", c.micro_batch_size), ("--grad-accum", c.grad_accum), ("--gpus", c.gpus)):
        if value < 1:
            raise PlannerError(f"{name} must be at least 1 (got {value})")
    seq = c.seq_len if c.seq_len is not None else min(DEFAULT_SEQ_LEN_TOKENS, context)
    if seq < 1:
        raise PlannerError(f"--seq-len must be at least 1 (got {seq})")
    if seq > context:
        raise PlannerError(
            f"--seq-len {seq:,} exceeds the model's context of {context:,} tokens: use at most {context}"
        )
    return seq


def check_choices(c: TrainingConfig) -> None:
    for name, value, allowed in (
        ("--method", c.method, METHODS),
        ("--precision", c.precision, PRECISIONS_CHOICES),
        ("--optimizer", c.optimizer, OPTIMIZERS),
        ("--attention", c.attention, ATTENTIONS),
    ):
        if value not in allowed:
            raise PlannerError(f"unknown {name} {value!r}: use one of {', '.join(allowed)}")
    if c.zero not in ZERO_STAGES:
        raise PlannerError(f"--zero {c.zero} is not a ZeRO stage: use 0, 1, 2 or 3")
    if c.zero == 3 and c.gpus == 1:
        raise PlannerError(
            "--zero 3 shards the parameters across data-parallel GPUs: give --gpus 2 or more, or use --zero 0"
        )
    for name, value, allowed in (
        ("--offload", c.offload, OFFLOADS),
        ("--loss", c.loss, LOSSES),
        ("--base-dtype", c.base_dtype, BASE_DTYPES),
        ("--sharding", c.sharding, ("deepspeed", "fsdp")),
        ("interconnect", c.interconnect, INTERCONNECTS),
    ):
        if value is not None and value not in allowed:
            raise PlannerError(f"unknown {name} {value!r}: use one of {', '.join(allowed)}")
    _check_levers(c)


def _check_levers(c: TrainingConfig) -> None:
    """Offload, paged optimizers, selective checkpointing and the base dtype: flags that conflict."""
    if c.offload != "none" and c.zero == 0:
        raise PlannerError(
            f"--offload {c.offload} runs under DeepSpeed ZeRO or FSDP: add --zero 2 (ZeRO-Offload, "
            "one GPU is enough) or --zero 3"
        )
    if c.offload == "optimizer+params" and c.zero != 3:
        raise PlannerError("--offload optimizer+params needs sharded parameters: use --zero 3 (and --gpus 2 or more)")
    if c.offload != "none" and c.optimizer in PAGED_OPTIMIZERS:
        raise PlannerError(
            f"--optimizer {c.optimizer} pages its states to the host itself: drop --offload, or use adamw"
        )
    if c.checkpointed_layers is not None and not c.gradient_checkpointing:
        raise PlannerError(
            "--checkpoint-layers selects layers for gradient checkpointing: add --gradient-checkpointing"
        )
    if c.checkpointed_layers is not None and c.checkpointed_layers < 1:
        raise PlannerError(f"--checkpoint-layers must be at least 1 (got {c.checkpointed_layers})")
    if c.base_dtype is not None and c.method == "full":
        raise PlannerError(
            "--base-dtype sets the frozen base of --method lora or qlora; full fine-tuning trains "
            "every weight in --precision: drop --base-dtype"
        )
    if not 0 <= c.lora_dropout < 1:
        raise PlannerError(f"--lora-dropout must be in [0, 1) (got {c.lora_dropout:g})")
    if c.host_memory_bytes is not None and c.offload == "none" and not c.activation_offload:
        raise PlannerError(
            "--host-memory-gib checks the host RAM of --offload or --activation-offload: add one, or drop it"
        )
    _check_optimizer_in_backward(c)


def _check_optimizer_in_backward(c: TrainingConfig) -> None:
    """torchtune's optimizer_in_bwd steps each parameter inside the backward pass: no gradient
    survives it, so nothing can accumulate, be reduced by a DeepSpeed engine or step on the host."""
    if not c.optimizer_in_backward:
        return
    if c.grad_accum > 1:
        raise PlannerError(
            "--optimizer-in-backward applies each gradient as soon as it exists, so gradients cannot "
            f"accumulate: drop --grad-accum {c.grad_accum} (use a larger --micro-batch-size) or the flag"
        )
    if c.offload != "none":
        raise PlannerError(
            f"--optimizer-in-backward steps on the GPU inside the backward pass; --offload {c.offload} "
            "steps on the host: use one of them"
        )


def check_lora(c: TrainingConfig) -> int | None:
    if c.method == "full":
        if c.lora_rank is not None or c.lora_alpha is not None or c.lora_targets is not None or c.lora_dropout:
            raise PlannerError(
                "--lora-rank, --lora-alpha, --lora-targets and --lora-dropout apply to --method lora or qlora, not full"
            )
        return None
    rank = 16 if c.lora_rank is None else c.lora_rank
    if rank < 1:
        raise PlannerError(f"--lora-rank must be at least 1 (got {rank})")
    return rank


def check_model(spec: ModelSpec, tensors: Sequence[Tensor], method: str) -> None:
    if not tensors:
        raise PlannerError(
            f"the weights of {spec.model_type} are not modelled yet: training memory needs them; "
            "pass a checkpoint folder with safetensors"
        )
    if any(l.attention in ("mamba", "linear") for l in spec.layers):
        raise PlannerError(
            f"training activations of {spec.model_type}'s Mamba/linear-attention layers are not modelled"
        )
    if spec.quant is not None and method == "qlora":
        raise PlannerError(
            f"the checkpoint is already quantized ({spec.quant.method}): QLoRA quantizes a 16-bit "
            "checkpoint to NF4; use the unquantized model, or --method lora on this one"
        )
    if spec.quant is not None and method == "full":
        raise PlannerError(
            f"the checkpoint is quantized ({spec.quant.method}): full fine-tuning needs the 16-bit "
            "checkpoint; use the unquantized model, or --method lora on this one"
        )
