"""Model states: bytes per parameter by precision and optimizer, ZeRO sharding, NF4 (QLoRA).

Exact, given the inputs: storage rules applied tensor by tensor, before the caching allocator's
rounding. Mixed precision keeps the 16-bit copy the forward pass reads, an fp32 master copy the
optimizer updates, 16-bit gradients and fp32 optimizer states: 2 + 4 + 2 + 8 = 16 bytes per
parameter with AdamW (the ZeRO paper's `(2 + 2 + K) * params` with K = 12: master 4 + two moments
8). PyTorch AMP keeps fp32 weights and fp32 gradients instead (4 + 4 + 8) and casts in autocast:
the same 16. Pure `bf16` training has no master copy and, as `torch.optim` creates states with
`zeros_like`, 16-bit states; `fp32` training keeps everything in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from planner.dtypes import SCALE_FORMATS, get_format
from planner.errors import PlannerError

PRECISIONS_CHOICES: tuple[str, ...] = ("bf16-mixed", "fp16-mixed", "bf16", "fp32")
OPTIMIZERS: tuple[str, ...] = ("adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit", "sgd-momentum", "adafactor")
ZERO_STAGES: tuple[int, ...] = (0, 1, 2, 3)

# bitsandbytes' 8-bit optimizers (`Optimizer2State.init_state`): tensors under min_8bit_size
# elements keep fp32 states; larger ones one uint8 per element plus an fp32 absmax per block.
BNB_MIN_8BIT_SIZE = 4096
BNB_OPTIM_BLOCK = 256

PAGED_OPTIMIZERS = frozenset({"paged-adamw", "paged-adamw-8bit"})
"""bitsandbytes' paged optimizers keep their states in CUDA unified memory: under memory pressure
the driver evicts them to host RAM instead of failing, so they do not decide the fit."""

# ---- precision --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionRule:
    """Bytes of one element of each training state under a precision setting."""

    name: str
    weight_bytes: int
    """The copy of the weights the forward pass reads (and the frozen base of LoRA)."""
    master_bytes: int
    """The fp32 master copy the optimizer updates (mixed precision only; 0 otherwise)."""
    grad_bytes: int
    state_bytes: int
    """One optimizer-state element (AdamW moment, momentum, Adafactor factor)."""
    activation_bytes: int
    adapter_bytes: int
    """LoRA A/B weights and their gradients: PEFT keeps adapters in fp32 under autocast."""


PRECISIONS: dict[str, PrecisionRule] = {
    "bf16-mixed": PrecisionRule("bf16-mixed", 2, 4, 2, 4, 2, 4),
    "fp16-mixed": PrecisionRule("fp16-mixed", 2, 4, 2, 4, 2, 4),
    "bf16": PrecisionRule("bf16", 2, 0, 2, 2, 2, 2),
    "fp32": PrecisionRule("fp32", 4, 0, 4, 4, 4, 4),
}


def precision_rule(name: str) -> PrecisionRule:
    if name not in PRECISIONS:
        raise PlannerError(f"unknown --precision {name!r}: use one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


# ---- optimizer states ------------------------------------------------------------------------


def optimizer_state_bytes(shape: tuple[int, ...], optimizer: str, state_bytes: int) -> int:
    """Optimizer-state bytes of one trainable tensor.

    adamw (and paged-adamw): two moments of the tensor's size; adamw-8bit (and paged-adamw-8bit):
    bitsandbytes' blockwise 8-bit states;
    sgd-momentum: one momentum buffer; adafactor (transformers, beta1=None): a row and a column
    factor for tensors of 2 or more dimensions (`shape[:-1]` and `shape[:-2] + shape[-1:]`), a full
    second moment for vectors."""
    n = math.prod(shape)
    if optimizer in ("adamw", "paged-adamw"):
        return 2 * n * state_bytes
    if optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        if n < BNB_MIN_8BIT_SIZE:
            return 2 * n * 4
        return 2 * (n + 4 * -(-n // BNB_OPTIM_BLOCK))
    if optimizer == "sgd-momentum":
        return n * state_bytes
    if optimizer == "adafactor":
        if len(shape) < 2:
            return n * state_bytes
        return (math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1]) * state_bytes
    raise PlannerError(f"unknown --optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")


# ---- model states and ZeRO --------------------------------------------------------------------


@dataclass(frozen=True)
class ModelStates:
    """Bytes of everything that lives for the whole run, on one GPU (or unsharded)."""

    weights: int = 0
    """Weights in the training dtype (full), or the frozen base outside the quantized linears."""
    master_weights: int = 0
    gradients: int = 0
    optimizer: int = 0
    adapter_weights: int = 0
    adapter_gradients: int = 0
    adapter_optimizer: int = 0
    quantized_base: int = 0
    """QLoRA: the NF4 codes of the linear weights (the 4-bit parameters ZeRO-3 / FSDP shard)."""
    quant_scales: int = 0
    """QLoRA: the NF4 block scales (bitsandbytes' QuantState: absmax, double-quantized). Not a
    parameter: every GPU keeps them whole (ZeRO-3 and FSDP shard and offload parameters only)."""

    @property
    def adapter(self) -> int:
        return self.adapter_weights + self.adapter_gradients + self.adapter_optimizer

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.master_weights
            + self.gradients
            + self.optimizer
            + self.adapter
            + self.quantized_base
            + self.quant_scales
        )


def zero_shard(states: ModelStates, stage: int, gpus: int) -> ModelStates:
    """Per-GPU model states under ZeRO (or FSDP's equivalent): stage 1 divides the optimizer states
    (the fp32 master copy is one of them: the paper's K), stage 2 also the gradients, stage 3 also
    the parameters, each by the data-parallel size; QLoRA's NF4 scales stay whole (bitsandbytes
    keeps them on the module, outside every parameter). DeepSpeed's alignment padding is ignored."""
    if stage not in ZERO_STAGES:
        raise PlannerError(f"--zero {stage} is not a ZeRO stage: use 0, 1, 2 or 3")

    def div(nbytes: int, from_stage: int) -> int:
        return -(-nbytes // gpus) if stage >= from_stage else nbytes

    return ModelStates(
        weights=div(states.weights, 3),
        master_weights=div(states.master_weights, 1),
        gradients=div(states.gradients, 2),
        optimizer=div(states.optimizer, 1),
        adapter_weights=div(states.adapter_weights, 3),
        adapter_gradients=div(states.adapter_gradients, 2),
        adapter_optimizer=div(states.adapter_optimizer, 1),
        quantized_base=div(states.quantized_base, 3),
        quant_scales=states.quant_scales,
    )


def trainable_states(shapes: Iterable[tuple[int, ...]], rule: PrecisionRule, optimizer: str) -> ModelStates:
    """Weights, master copy, gradients and optimizer states of fully trained tensors."""
    shapes = list(shapes)
    n = sum(math.prod(s) for s in shapes)
    return ModelStates(
        weights=n * rule.weight_bytes,
        master_weights=n * rule.master_bytes,
        gradients=n * rule.grad_bytes,
        optimizer=sum(optimizer_state_bytes(s, optimizer, rule.state_bytes) for s in shapes),
    )


# ---- NF4 (QLoRA) -----------------------------------------------------------------------------


def nf4_double_quant_bytes(numel: int) -> int:
    """One weight as bitsandbytes stores it for QLoRA (`quant_type="nf4"`, `compress_statistics`):
    the 4-bit codes (`nf4_code_bytes`) and their scales (`nf4_scale_bytes`)."""
    return nf4_code_bytes(numel) + nf4_scale_bytes(numel)


def nf4_code_bytes(numel: int) -> int:
    """Two 4-bit codes per byte: the Params4bit tensor (packed in bnb_4bit_quant_storage)."""
    fmt = get_format("nf4")
    return -(-numel * fmt.bits // 8)


def nf4_scale_bytes(numel: int) -> int:
    """bitsandbytes' QuantState of one weight with double quantization: one 8-bit absmax per
    64-element block, one fp32 scale per 256 blocks and one fp32 offset (the absmax mean) per tensor.
    The block sizes and scale formats come from `planner.dtypes`; the 16-entry code book is not
    counted. `quantize_4bit` keeps these on the module (`Linear4bit.quant_state`), not in the parameter."""
    fmt = get_format("nf4").with_double_quant()
    assert fmt.block_size and fmt.super_block_size and fmt.scale_format and fmt.super_scale_format
    blocks = -(-numel // fmt.block_size)
    super_blocks = -(-blocks // fmt.super_block_size)
    return blocks * _format_bytes(fmt.scale_format) + super_blocks * _format_bytes(fmt.super_scale_format) + 4


def _format_bytes(name: str) -> int:
    fmt = SCALE_FORMATS[name] if name in SCALE_FORMATS else get_format(name)
    return fmt.bits // 8
