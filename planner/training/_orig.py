"""Training and fine-tuning memory per GPU: full fine-tuning, LoRA and QLoRA, with ZeRO sharding.

Pure functions over a `ModelSpec` and its tensor list; numbers in, numbers out, no I/O.

What is exact and what is estimated
-----------------------------------
Exact (storage rules applied tensor by tensor, before the caching allocator's rounding):
parameters (trainable and frozen), weights, the fp32 master copy, gradients, optimizer states,
LoRA adapters with their gradients and states, the NF4 base of QLoRA, and how a ZeRO stage
divides them. Estimated (a model of what autograd keeps, not a measurement): activations,
temporary buffers, the optimizer-step transient, and so the total, the fit and the largest
micro-batch / sequence. Every estimate is named in `TrainingEstimate.estimated`.

Bytes per parameter (model states)
----------------------------------
Mixed precision keeps the 16-bit copy the forward pass reads, an fp32 master copy the optimizer
updates, 16-bit gradients and fp32 optimizer states: 2 + 4 + 2 + 8 = 16 bytes per parameter with
AdamW (the ZeRO paper's `(2 + 2 + K) * params` with K = 12: master 4 + two moments 8). PyTorch AMP
keeps fp32 weights and fp32 gradients instead (4 + 4 + 8) and casts in autocast: the same 16.
Pure `bf16` training has no master copy and, as `torch.optim` creates states with `zeros_like`,
16-bit states; `fp32` training keeps everything in fp32.

Activations (per layer, from the architecture)
----------------------------------------------
Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", sec. 4.1)
count, for a GPT layer in 16-bit without recomputation, what each operation keeps for its backward:

- attention block 11sbh + 5as^2b: QKV input 2sbh, Q and K 4sbh, softmax output 2as^2b, its dropout
  mask as^2b and output 2as^2b, V 2sbh, output-projection input 2sbh, output dropout mask sbh;
- MLP 19sbh: input 2sbh, GeLU input 8sbh (4h wide), second-linear input 8sbh, dropout mask sbh;
- two LayerNorms, each keeping its input: 4sbh.

Total `s*b*h*(34 + 5*a*s/h)` bytes. `layer_terms` applies the same rule (an operation keeps the
inputs its backward needs; masks are 1 byte) to other architectures:

- SwiGLU (gated MLP, `act(gate(x)) * up(x)`): the input, the gate output (SiLU's input), the SiLU
  output and the up output (the product's backward needs each factor) and the down input:
  `e*(h + 4*I)` instead of `e*(h + 2*I)`.
- GQA: Q is `a*d` wide but K and V only `kv*d`: flash attention reads the grouped heads directly,
  eager attention in transformers first repeats K and V to every query head (`repeat_kv`), so it
  keeps `a*d` copies. Flash attention keeps no score matrix, only an fp32 log-sum-exp per head and
  query (`4*a` bytes per token): linear in s. Eager attention keeps the softmax output (fp32 in
  transformers, which upcasts the softmax) and the probabilities the value matmul reads: quadratic.
- MoE (the transformers expert loop): the router's fp32 softmax over the experts (`4*E` per token),
  and for each of the top-k experts a token goes through, its gathered input, the expert's SwiGLU
  terms and the expert output (kept by the multiplication with the routing weight).
- Frozen weights (LoRA, QLoRA): a linear whose weight needs no gradient does not keep its input
  (autograd saves an operand only for the other operand's gradient), unless a LoRA adapter on it
  does; each adapter keeps its `A` output (`e*r` per token). Activation-function inputs, Q, K, V and
  the attention probabilities stay: the gradient must flow back to earlier adapters.

Norms are counted as fused kernels that keep their input; dropout is off (as in current LLM
configs); the vision tower's activations are not counted (text batches).

With gradient checkpointing (one checkpoint per decoder layer, as transformers does) each layer
keeps only its input, `e*s*b*h`, and one layer is recomputed at a time during the backward pass
(Korthikanti's full recomputation: `2*s*b*h*L`, plus that layer).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from planner import accounting as acc
from planner.dtypes import SCALE_FORMATS, get_format
from planner.errors import PlannerError
from planner.models.spec import ModelSpec
from planner.models.tensors import Tensor

GIB = 2**30

Method = Literal["full", "lora", "qlora"]
Precision = Literal["bf16-mixed", "fp16-mixed", "bf16", "fp32"]
Optimizer = Literal["adamw", "adamw-8bit", "sgd-momentum", "adafactor"]
AttentionImpl = Literal["flash", "eager"]

METHODS: tuple[str, ...] = ("full", "lora", "qlora")
PRECISIONS_CHOICES: tuple[str, ...] = ("bf16-mixed", "fp16-mixed", "bf16", "fp32")
OPTIMIZERS: tuple[str, ...] = ("adamw", "adamw-8bit", "sgd-momentum", "adafactor")
ATTENTIONS: tuple[str, ...] = ("flash", "eager")
ZERO_STAGES: tuple[int, ...] = (0, 1, 2, 3)

DEFAULT_SEQ_LEN_TOKENS = 2048
"""--seq-len when none is given (capped at the model's context)."""

LORA_TARGET_ALIASES: dict[str, str] = {
    "q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
    "gate": "gate_proj", "up": "up_proj", "down": "down_proj",
}
"""Short `--lora-targets` names -> the module names PEFT matches. Any module name listed by the
error message (qkv_proj, gate_up_proj, fc1, kv_b_proj, ...) is accepted as is; `all-linear` takes
every linear module of the decoder layers (PEFT's name; lm_head excluded)."""

# bitsandbytes' 8-bit optimizers (`Optimizer2State.init_state`): tensors under min_8bit_size
# elements keep fp32 states; larger ones one uint8 per element plus an fp32 absmax per block.
BNB_MIN_8BIT_SIZE = 4096
BNB_OPTIM_BLOCK = 256


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

    adamw: two moments of the tensor's size; adamw-8bit: bitsandbytes' blockwise 8-bit states;
    sgd-momentum: one momentum buffer; adafactor (transformers, beta1=None): a row and a column
    factor for tensors of 2 or more dimensions (`shape[:-1]` and `shape[:-2] + shape[-1:]`), a full
    second moment for vectors."""
    n = math.prod(shape)
    if optimizer == "adamw":
        return 2 * n * state_bytes
    if optimizer == "adamw-8bit":
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
    """QLoRA: the NF4 linear weights with their double-quantized scales."""

    @property
    def adapter(self) -> int:
        return self.adapter_weights + self.adapter_gradients + self.adapter_optimizer

    @property
    def total(self) -> int:
        return self.weights + self.master_weights + self.gradients + self.optimizer + self.adapter + self.quantized_base


def zero_shard(states: ModelStates, stage: int, gpus: int) -> ModelStates:
    """Per-GPU model states under ZeRO (or FSDP's equivalent): stage 1 divides the optimizer states
    (the fp32 master copy is one of them: the paper's K), stage 2 also the gradients, stage 3 also
    the parameters, each by the data-parallel size. DeepSpeed's alignment padding is ignored."""
    if stage not in ZERO_STAGES:
        raise PlannerError(f"--zero {stage} is not a ZeRO stage: use 0, 1, 2 or 3")

    def div(nbytes: int, from_stage: int) -> int:
        return -(-nbytes // gpus) if stage >= from_stage else nbytes

    return ModelStates(
        weights=div(states.weights, 3), master_weights=div(states.master_weights, 1),
        gradients=div(states.gradients, 2), optimizer=div(states.optimizer, 1),
        adapter_weights=div(states.adapter_weights, 3), adapter_gradients=div(states.adapter_gradients, 2),
        adapter_optimizer=div(states.adapter_optimizer, 1), quantized_base=div(states.quantized_base, 3),
    )


def trainable_states(shapes: Iterable[tuple[int, ...]], rule: PrecisionRule, optimizer: str) -> ModelStates:
    """Weights, master copy, gradients and optimizer states of fully trained tensors."""
    shapes = list(shapes)
    n = sum(math.prod(s) for s in shapes)
    return ModelStates(
        weights=n * rule.weight_bytes, master_weights=n * rule.master_bytes, gradients=n * rule.grad_bytes,
        optimizer=sum(optimizer_state_bytes(s, optimizer, rule.state_bytes) for s in shapes),
    )


# ---- NF4 (QLoRA) -----------------------------------------------------------------------------

def nf4_double_quant_bytes(numel: int) -> int:
    """One weight as bitsandbytes stores it for QLoRA (`quant_type="nf4"`, `compress_statistics`):
    two 4-bit codes per byte, one 8-bit absmax per 64-element block, one fp32 scale per 256
    blocks, and one fp32 offset (the absmax mean) per tensor. The block sizes and scale formats come
    from `planner.dtypes` (nf4 with double quantization); the 16-entry code book is not counted."""
    fmt = get_format("nf4").with_double_quant()
    assert fmt.block_size and fmt.super_block_size and fmt.scale_format and fmt.super_scale_format
    blocks = -(-numel // fmt.block_size)
    super_blocks = -(-blocks // fmt.super_block_size)
    codes = -(-numel * fmt.bits // 8)
    return codes + blocks * _format_bytes(fmt.scale_format) + super_blocks * _format_bytes(fmt.super_scale_format) + 4


def _format_bytes(name: str) -> int:
    fmt = SCALE_FORMATS[name] if name in SCALE_FORMATS else get_format(name)
    return fmt.bits // 8


# ---- LoRA ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LinearModule:
    """One linear module of a decoder layer, as PEFT sees it."""

    name: str
    """Module name PEFT matches: q_proj, gate_up_proj, fc1, kv_b_proj, ..."""
    layer: int
    in_features: int
    out_features: int
    copies: int = 1
    """Routed experts stacked in one tensor [E, out, in]: one module per expert."""
    routed: bool = False
    """A routed expert: each token goes through `experts_per_token` of them, not all."""


def _modules_of(t: Tensor) -> list[LinearModule]:
    assert isinstance(t.stage, int)
    routed = t.component == "experts"
    if len(t.shape) == 3:  # stacked experts [E, out, in]; gate_up splits into PEFT's gate_proj and up_proj
        e, out_f, in_f = t.shape
        if "gate_up" in t.name:
            return [LinearModule(n, t.stage, in_f, out_f // 2, e, True) for n in ("gate_proj", "up_proj")]
        return [LinearModule(t.name.rsplit(".", 1)[-1], t.stage, in_f, out_f, e, True)]
    name = t.name.rsplit(".", 2)[-2] if t.name.endswith(".weight") else t.name.rsplit(".", 1)[-1]
    return [LinearModule(name, t.stage, t.shape[1], t.shape[0], 1, routed)]


def decoder_linear_modules(tensors: Iterable[Tensor]) -> list[LinearModule]:
    """Every linear module of the decoder layers (vision tower, MTP layers and lm_head excluded)."""
    out: list[LinearModule] = []
    for t in tensors:
        if t.linear and t.loaded and not t.runtime and isinstance(t.stage, int) and t.component not in ("vision", "mtp"):
            out += _modules_of(t)
    return out


def resolve_lora_targets(targets: Sequence[str] | None, modules: Sequence[LinearModule], architecture: str) -> tuple[str, ...]:
    """`--lora-targets` -> module names; a target the architecture lacks is an error naming the
    modules it has."""
    available = list(dict.fromkeys(m.name for m in modules))
    if targets is None or list(targets) == ["all-linear"]:
        return tuple(available)
    out: list[str] = []
    for t in targets:
        name = LORA_TARGET_ALIASES.get(t.strip().lower(), t.strip())
        if not name:
            raise PlannerError("--lora-targets has an empty entry: give a comma-separated list such as q,k,v,o")
        if name not in available:
            raise PlannerError(f"LoRA target {t!r} ({name}) is not a linear module of {architecture}: "
                               f"use some of {', '.join(available)} (or all-linear)")
        out.append(name)
    return tuple(dict.fromkeys(out))


def lora_adapter_shapes(modules: Iterable[LinearModule], targets: Iterable[str], rank: int) -> list[tuple[int, ...]]:
    """The A [r, in] and B [out, r] matrices PEFT adds to each targeted module (one pair per expert)."""
    wanted = set(targets)
    shapes: list[tuple[int, ...]] = []
    for m in modules:
        if m.name in wanted:
            shapes += [(rank, m.in_features), (m.out_features, rank)] * m.copies
    return shapes


def lora_trainable_params(modules: Iterable[LinearModule], targets: Iterable[str], rank: int) -> int:
    """r * (in + out) per targeted module: Llama-3-8B, r=16 on q,k,v,o,gate,up,down: 41,943,040."""
    return sum(math.prod(s) for s in lora_adapter_shapes(modules, targets, rank))


def adapter_states(shapes: list[tuple[int, ...]], rule: PrecisionRule, optimizer: str) -> ModelStates:
    """Adapters are trained in their own dtype (fp32 under autocast): no separate master copy."""
    n = sum(math.prod(s) for s in shapes)
    return ModelStates(adapter_weights=n * rule.adapter_bytes, adapter_gradients=n * rule.adapter_bytes,
                       adapter_optimizer=sum(optimizer_state_bytes(s, optimizer, rule.state_bytes) for s in shapes))


# ---- activations ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ActivationAssumptions:
    """How the forward pass runs, as far as what it keeps for the backward pass is concerned."""

    element_bytes: int = 2
    """Bytes of one activation element (2 in 16-bit and mixed precision, 4 in fp32)."""
    attention: str = "flash"
    dropout: bool = False
    """Attention and hidden dropout (GPT-2/Megatron); current LLM configs have none."""
    softmax_bytes: int = 4
    """Eager attention's softmax output: transformers upcasts it to fp32; Megatron keeps 16-bit."""
    repeat_kv: bool = True
    """Eager attention repeats grouped K/V to every query head before the matmuls (transformers)."""
    trainable: bool = True
    """Every weight is trained (full fine-tuning): every linear keeps its input."""
    adapted: frozenset[str] = frozenset()
    """LoRA-targeted module names: these keep their input (for A's gradient) and A's output."""
    lora_rank: int = 0

    def keeps_input(self, *modules: str) -> bool:
        return self.trainable or any(m in self.adapted for m in modules)


@dataclass(frozen=True)
class Terms:
    """Activation bytes of one block, per token: `per_token` terms scale with s*b, `per_token_ctx`
    terms (score matrices) with s*s*b."""

    per_token: dict[str, int] = field(default_factory=dict)
    per_token_ctx: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: Terms) -> Terms:
        return Terms(_merge(self.per_token, other.per_token), _merge(self.per_token_ctx, other.per_token_ctx))

    def coefficients(self) -> tuple[int, int]:
        return sum(self.per_token.values()), sum(self.per_token_ctx.values())

    def bytes(self, micro_batch: int, seq_len: int) -> int:
        lin, quad = self.coefficients()
        return micro_batch * seq_len * (lin + seq_len * quad)


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def korthikanti_layer_bytes(seq_len: int, micro_batch: int, hidden: int, heads: int) -> int:
    """Korthikanti et al. 2022, eq. (1): `s*b*h*(34 + 5*a*s/h)` bytes per GPT layer, 16-bit, no
    recomputation, no tensor or sequence parallelism."""
    return seq_len * micro_batch * (34 * hidden + 5 * heads * seq_len)


def _scores(heads: int, a: ActivationAssumptions) -> Terms:
    """What attention keeps of the score matrix: eager the softmax output and the probabilities the
    value matmul reads (per token, per key: quadratic); flash an fp32 log-sum-exp per head."""
    if a.attention == "flash":
        return Terms({"attention log-sum-exp (fp32)": 4 * heads})
    ctx = {"softmax output": a.softmax_bytes * heads}
    if a.dropout:
        ctx |= {"attention dropout mask": heads, "attention dropout output": a.element_bytes * heads}
    elif a.softmax_bytes != a.element_bytes:
        ctx["attention probabilities (cast)"] = a.element_bytes * heads
    return Terms({}, ctx)


def attention_terms(spec: ModelSpec, a: ActivationAssumptions) -> Terms:
    """Multi-head / grouped-query attention (Korthikanti's 11sbh + 5as^2b, generalized)."""
    if spec.mla is not None:
        return _mla_terms(spec, a)
    e, h = a.element_bytes, spec.hidden_size
    q_width, kv_width = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    kv_kept = q_width if a.attention == "eager" and a.repeat_kv else kv_width
    t = {"q": e * q_width, "k": e * kv_kept, "v": e * kv_kept}
    if a.keeps_input("q_proj", "k_proj", "v_proj", "qkv_proj"):
        t["qkv input"] = e * h
    if spec.qk_norm:
        t["q/k norm inputs"] = e * (q_width + kv_width)
    if a.attention == "flash" or a.keeps_input("o_proj"):  # flash keeps its output for its own backward
        t["attention output (o_proj input)"] = e * q_width
    if a.dropout:
        t["output dropout mask"] = h
    return Terms(t) + _scores(spec.num_heads, a)


def _mla_terms(spec: ModelSpec, a: ActivationAssumptions) -> Terms:
    """Multi-head latent attention (DeepSeek), same rule: the latent projections' inputs and norm
    inputs, then per-head Q, K (nope + rope) and V. An approximation: every projection input is
    counted as kept."""
    m, e, heads = spec.mla, a.element_bytes, spec.num_heads
    assert m is not None
    qk = m.qk_nope_head_dim + m.qk_rope_head_dim
    t = {"latent projection input": e * spec.hidden_size,
         "kv latent (norm and kv_b inputs)": e * (2 * m.kv_lora_rank + m.qk_rope_head_dim),
         "q": e * heads * qk, "k": e * heads * qk, "v": e * heads * m.v_head_dim,
         "attention output (o_proj input)": e * heads * m.v_head_dim}
    if m.q_lora_rank:
        t["q latent (norm and q_b inputs)"] = e * 2 * m.q_lora_rank
    return Terms(t) + _scores(heads, a)


def _swiglu(inter: int, a: ActivationAssumptions, label: str) -> dict[str, int]:
    e = a.element_bytes
    t = {f"{label} gate output (activation input)": e * inter, f"{label} activation output": e * inter,
         f"{label} up output": e * inter}
    if a.keeps_input("down_proj"):
        t[f"{label} down input"] = e * inter
    return t


def mlp_terms(spec: ModelSpec, a: ActivationAssumptions) -> Terms:
    """Dense feed-forward: Korthikanti's 19sbh for a 4h GeLU MLP; SwiGLU keeps two more I-wide
    tensors (the up output and the activation output are both factors of the product)."""
    e, inter = a.element_bytes, spec.intermediate_size
    t: dict[str, int] = {}
    if a.keeps_input("gate_proj", "up_proj", "gate_up_proj", "fc1"):
        t["mlp input"] = e * spec.hidden_size
    if spec.gated_mlp:
        t |= _swiglu(inter, a, "mlp")
    else:
        t["mlp activation input"] = e * inter
        if a.keeps_input("fc2"):
            t["mlp activation output (fc2 input)"] = e * inter
    if a.dropout:
        t["mlp dropout mask"] = spec.hidden_size
    return Terms(t)


def moe_terms(spec: ModelSpec, a: ActivationAssumptions) -> Terms:
    """Mixture of experts as the transformers expert loop runs it: the router's fp32 softmax, then
    per routed copy of a token (top-k) the gathered input, the expert's SwiGLU terms and the expert
    output (kept by the product with the routing weight); shared experts as a dense SwiGLU."""
    moe, e, h = spec.moe, a.element_bytes, spec.hidden_size
    assert moe is not None
    k = moe.experts_per_token
    t = {"router softmax (fp32)": 4 * moe.num_experts, "expert outputs (x routing weight)": k * e * h}
    if a.keeps_input("gate_proj", "up_proj"):
        t["expert inputs (gathered)"] = k * e * h
    t |= {name: k * v for name, v in _swiglu(moe.expert_intermediate_size, a, "expert").items()}
    if moe.num_shared_experts:
        t |= _swiglu(moe.shared_intermediate_size, a, "shared expert")
    if a.trainable or (moe.num_shared_experts and a.keeps_input("gate_proj", "up_proj")):
        t["mlp input"] = e * h
    if moe.shared_expert_gate:
        t["shared expert output (x gate)"] = e * h
    return Terms(t)


def lora_terms(modules: Iterable[LinearModule], a: ActivationAssumptions, experts_per_token: int) -> Terms:
    """Each adapter keeps its A output (B's input), e*r per token that passes through it."""
    n = sum(experts_per_token if m.routed else 1 for m in modules if m.name in a.adapted)
    return Terms({"LoRA A outputs": n * a.element_bytes * a.lora_rank} if n else {})


def layer_terms(spec: ModelSpec, index: int, a: ActivationAssumptions, modules: Iterable[LinearModule] = ()) -> Terms:
    """One decoder layer: its norms' inputs, attention, feed-forward and LoRA adapters."""
    norms = Terms({"norm inputs": spec.norms_per_layer * a.element_bytes * spec.hidden_size})
    is_moe = spec.layers[index].mlp == "moe" and spec.moe is not None
    ffn = moe_terms(spec, a) if is_moe else mlp_terms(spec, a)
    k = spec.moe.experts_per_token if spec.moe else 1
    return norms + attention_terms(spec, a) + ffn + lora_terms(modules, a, k)


def head_terms(spec: ModelSpec, a: ActivationAssumptions) -> Terms:
    """After the last layer: the final norm's input, lm_head's input (when lm_head is trained) and
    the fp32 log-probabilities the cross-entropy keeps (transformers upcasts the logits)."""
    e, h = a.element_bytes, spec.hidden_size
    t = {"final norm input": e * h, "log-probabilities (fp32)": 4 * spec.vocab_size}
    if a.trainable:
        t["lm_head input"] = e * h
    return Terms(t)


@dataclass(frozen=True)
class ActivationModel:
    """Activation bytes of the whole model as a function of micro-batch and sequence length."""

    layers: tuple[tuple[int, int], ...]
    """Per decoder layer: (bytes per token, bytes per token per sequence token)."""
    head: tuple[int, int]
    layer_input_bytes_per_token: int
    """What a checkpointed layer keeps: its input, e*h."""
    checkpointing: bool

    def layer_bytes(self, b: int, s: int) -> list[int]:
        return [b * s * (lin + s * quad) for lin, quad in self.layers]

    def breakdown(self, b: int, s: int) -> dict[str, int]:
        per_layer = self.layer_bytes(b, s)
        head = {"loss and final norm": b * s * (self.head[0] + s * self.head[1])}
        if not self.checkpointing:
            return {"decoder layers": sum(per_layer)} | head
        kept = len(self.layers) * b * s * self.layer_input_bytes_per_token
        return {"checkpointed layer inputs": kept, "recomputed layer": max(per_layer)} | head

    def bytes(self, b: int, s: int) -> int:
        return sum(self.breakdown(b, s).values())


def activation_model(spec: ModelSpec, a: ActivationAssumptions, modules: Sequence[LinearModule],
                     checkpointing: bool) -> ActivationModel:
    by_layer: dict[int, list[LinearModule]] = {}
    for m in modules:
        by_layer.setdefault(m.layer, []).append(m)
    layers = tuple(layer_terms(spec, i, a, by_layer.get(i, ())).coefficients() for i in range(spec.num_layers))
    return ActivationModel(layers, head_terms(spec, a).coefficients(), a.element_bytes * spec.hidden_size, checkpointing)


# ---- configuration and result -----------------------------------------------------------------

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

    def to_json(self) -> dict[str, Any]:
        skip = ("states", "states_unsharded", "activation_bytes")  # re-added below under the *_bytes / *_gib names
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        s = self.states
        gib = {"weights": s.weights, "master_weights": s.master_weights, "gradients": s.gradients,
               "optimizer": s.optimizer, "adapter": s.adapter, "adapter_weights": s.adapter_weights,
               "adapter_gradients": s.adapter_gradients, "adapter_optimizer": s.adapter_optimizer,
               "quantized_base": s.quantized_base, "activations": self.activation_bytes,
               "temporary": self.temporary_bytes, "optimizer_step": self.optimizer_step_bytes, "total": self.total_bytes}
        for k, v in gib.items():
            d[f"{k}_bytes"], d[f"{k}_gib"] = v, round(v / GIB, 4)
        d["gpu_memory_gib"] = None if self.gpu_memory_bytes is None else round(self.gpu_memory_bytes / GIB, 4)
        d["activation_breakdown_gib"] = {k: round(v / GIB, 4) for k, v in self.activation_breakdown.items()}
        d["tokens_per_step"] = self.effective_batch_size * self.seq_len
        d["lora_targets"] = list(self.lora_targets)
        return d


# ---- validation -------------------------------------------------------------------------------

def model_context_tokens(spec: ModelSpec) -> int:
    return spec.max_model_len_default or spec.max_position_embeddings


def _check_counts(c: TrainingConfig, context: int) -> int:
    for name, value in (("--micro-batch-size", c.micro_batch_size), ("--grad-accum", c.grad_accum), ("--gpus", c.gpus)):
        if value < 1:
            raise PlannerError(f"{name} must be at least 1 (got {value})")
    seq = c.seq_len if c.seq_len is not None else min(DEFAULT_SEQ_LEN_TOKENS, context)
    if seq < 1:
        raise PlannerError(f"--seq-len must be at least 1 (got {seq})")
    if seq > context:
        raise PlannerError(f"--seq-len {seq:,} exceeds the model's context of {context:,} tokens: use at most {context}")
    return seq


def _check_choices(c: TrainingConfig) -> None:
    for name, value, allowed in (("--method", c.method, METHODS), ("--precision", c.precision, PRECISIONS_CHOICES),
                                 ("--optimizer", c.optimizer, OPTIMIZERS), ("--attention", c.attention, ATTENTIONS)):
        if value not in allowed:
            raise PlannerError(f"unknown {name} {value!r}: use one of {', '.join(allowed)}")
    if c.zero not in ZERO_STAGES:
        raise PlannerError(f"--zero {c.zero} is not a ZeRO stage: use 0, 1, 2 or 3")
    if c.zero == 3 and c.gpus == 1:
        raise PlannerError("--zero 3 shards the parameters across data-parallel GPUs: give --gpus 2 or more, or use --zero 0")


def _check_lora(c: TrainingConfig) -> int | None:
    if c.method == "full":
        if c.lora_rank is not None or c.lora_alpha is not None or c.lora_targets is not None:
            raise PlannerError("--lora-rank, --lora-alpha and --lora-targets apply to --method lora or qlora, not full")
        return None
    rank = 16 if c.lora_rank is None else c.lora_rank
    if rank < 1:
        raise PlannerError(f"--lora-rank must be at least 1 (got {rank})")
    return rank


def _check_model(spec: ModelSpec, tensors: Sequence[Tensor], method: str) -> None:
    if not tensors:
        raise PlannerError(f"the weights of {spec.model_type} are not modelled yet: training memory needs them; "
                           "pass a checkpoint folder with safetensors")
    if any(l.attention in ("mamba", "linear") for l in spec.layers):
        raise PlannerError(f"training activations of {spec.model_type}'s Mamba/linear-attention layers are not modelled")
    if spec.quant is not None and method == "qlora":
        raise PlannerError(f"the checkpoint is already quantized ({spec.quant.method}): QLoRA quantizes a 16-bit "
                           "checkpoint to NF4; use the unquantized model, or --method lora on this one")
    if spec.quant is not None and method == "full":
        raise PlannerError(f"the checkpoint is quantized ({spec.quant.method}): full fine-tuning needs the 16-bit "
                           "checkpoint; use the unquantized model, or --method lora on this one")


# ---- the estimate -----------------------------------------------------------------------------

def _frozen_bytes(t: Tensor, spec: ModelSpec, method: str, rule: PrecisionRule) -> tuple[int, int]:
    """(plain bytes, NF4 bytes) of one frozen base tensor under LoRA or QLoRA."""
    if method == "qlora" and t.linear and isinstance(t.stage, int):
        per_matrix = math.prod(t.shape[-2:])
        copies = t.shape[0] if len(t.shape) == 3 else 1
        return 0, copies * nf4_double_quant_bytes(per_matrix)
    if spec.quant is not None and acc.is_quantized(t, spec.quant):
        return acc.quantized_bytes(spec.quant, t.shape), 0  # LoRA over a quantized checkpoint: as stored
    return t.numel * rule.weight_bytes, 0


def _base_tensors(tensors: Sequence[Tensor]) -> list[Tensor]:
    return [t for t in tensors if t.loaded and not t.runtime]


def _states(spec: ModelSpec, tensors: list[Tensor], c: TrainingConfig, rule: PrecisionRule,
            adapter_shapes: list[tuple[int, ...]]) -> ModelStates:
    if c.method == "full":
        return trainable_states((t.shape or (1,) for t in tensors), rule, c.optimizer)
    plain = nf4 = 0
    for t in tensors:
        p, q = _frozen_bytes(t, spec, c.method, rule)
        plain, nf4 = plain + p, nf4 + q
    return dataclasses.replace(adapter_states(adapter_shapes, rule, c.optimizer), weights=plain, quantized_base=nf4)


def _largest_unit_bytes(spec: ModelSpec, tensors: list[Tensor], c: TrainingConfig, rule: PrecisionRule) -> int:
    """The largest group ZeRO-3 gathers at once (a decoder layer, or the embeddings / head)."""
    units: dict[object, int] = {}
    for t in tensors:
        p, q = _frozen_bytes(t, spec, c.method, rule) if c.method != "full" else (t.numel * rule.weight_bytes, 0)
        units[t.stage] = units.get(t.stage, 0) + p + q
    return max(units.values())


def _constant_temporaries(spec: ModelSpec, tensors: list[Tensor], c: TrainingConfig, rule: PrecisionRule) -> int:
    """Temporaries that do not grow with the batch: QLoRA dequantizes one weight at a time to the
    compute dtype; ZeRO-3 gathers one unit and prefetches the next."""
    out = 0
    if c.method == "qlora":
        out += max(math.prod(t.shape[-2:]) for t in tensors if t.linear and isinstance(t.stage, int)) * rule.activation_bytes
    if c.zero == 3:
        out += 2 * _largest_unit_bytes(spec, tensors, c, rule)
    return out


def _optimizer_step_bytes(states: ModelStates, trainable_shapes: list[tuple[int, ...]], optimizer: str) -> int:
    """torch's foreach AdamW computes sqrt of the second moments for all tensors at once (one
    moment's worth); Adafactor builds a full fp32 update and an fp32 copy per tensor, one at a time;
    bitsandbytes and SGD update in place."""
    if optimizer == "adamw":
        return (states.optimizer + states.adapter_optimizer) // 2
    if optimizer == "adafactor" and trainable_shapes:
        return 8 * max(math.prod(s) for s in trainable_shapes)
    return 0


def _largest(fits: Callable[[int], bool], lo: int, hi: int) -> int:
    """Largest n in [lo, hi] with fits(n) (fits is monotone), or lo - 1 if none."""
    if not fits(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def _notes(spec: ModelSpec, c: TrainingConfig) -> list[str]:
    out = ["totals are what PyTorch allocates (max_memory_allocated): the CUDA context and allocator "
           "fragmentation come on top"]
    if spec.vision is not None:
        out.append("text batches: the vision tower's activations are not counted")
    if spec.mla is not None:
        out.append("MLA attention activations are approximated (every latent projection input counted)")
    if c.zero in (1, 2) and c.gpus == 1:
        out.append(f"ZeRO {c.zero} on one GPU shards nothing")
    if c.gpus > 1:
        out.append("communication buckets (DDP gradient buckets, ZeRO reduce/prefetch buckets) are not counted")
    if c.method != "full":
        out.append("LoRA dropout 0 (PEFT's default); adapters in fp32 under mixed precision (PEFT's autocast_adapter_dtype)")
    if c.optimizer == "adamw":
        out.append("optimizer step: torch's default foreach AdamW holds one moment-sized temporary; fused AdamW "
                   "(fused=True, DeepSpeed FusedAdam) does not")
    if c.method == "qlora":
        out.append("embeddings, norms and lm_head stay in the compute dtype "
                   "(prepare_model_for_kbit_training would upcast them to fp32)")
    if spec.quant is not None:
        out.append(f"LoRA over the {spec.quant.method} checkpoint: the frozen base is counted as stored")
    return out


def _estimated(spec: ModelSpec, has_gpu: bool) -> list[str]:
    out = ["activations_gib", "temporary_gib", "optimizer_step_gib", "total_gib"]
    if has_gpu:
        out += ["fits", "max_micro_batch_size", "max_seq_len"]
    if spec.quant is not None:
        out.append("weights_gib")  # LoRA kernels over a quantized base may repack it
    return out


def estimate_training(spec: ModelSpec, tensors: Sequence[Tensor], config: TrainingConfig, *,
                      gpu_memory_bytes: int | None = None, gpu_name: str | None = None, model_id: str = "") -> TrainingEstimate:
    """Per-GPU training memory for one configuration, the fit against `gpu_memory_bytes`, and the
    largest micro-batch and sequence that fit."""
    c = config
    _check_choices(c)
    _check_model(spec, tensors, c.method)
    context = model_context_tokens(spec)
    seq = _check_counts(c, context)
    rank = _check_lora(c)
    rule = precision_rule(c.precision)
    base = _base_tensors(tensors)
    modules = decoder_linear_modules(base)
    targets = resolve_lora_targets(c.lora_targets, modules, spec.architecture) if rank else ()
    adapter_shapes = lora_adapter_shapes(modules, targets, rank) if rank else []
    unsharded = _states(spec, base, c, rule, adapter_shapes)
    states = zero_shard(unsharded, c.zero, c.gpus)
    trainable_shapes = [t.shape or (1,) for t in base] if c.method == "full" else adapter_shapes
    assume = ActivationAssumptions(element_bytes=rule.activation_bytes, attention=c.attention, trainable=c.method == "full",
                                   adapted=frozenset(targets), lora_rank=rank or 0)
    act = activation_model(spec, assume, modules, c.gradient_checkpointing)
    fixed_temp = _constant_temporaries(spec, base, c, rule)
    step = _optimizer_step_bytes(states, trainable_shapes, c.optimizer)

    def temporary(b: int, s: int) -> int:
        loss = 8 * spec.vocab_size * b * s  # fp32 gradients of the log-probs and of the logits
        return max(loss, max(act.layer_bytes(b, s))) + fixed_temp

    def peak(b: int, s: int) -> int:
        return states.total + max(act.bytes(b, s) + temporary(b, s), step)

    mem = gpu_memory_bytes
    fits = None if mem is None else peak(c.micro_batch_size, seq) <= mem
    max_b = None if mem is None else _largest(lambda b: peak(b, seq) <= mem, 1, 1 << 24)
    max_s = None if mem is None else _largest(lambda s: peak(c.micro_batch_size, s) <= mem, 1, context)
    return TrainingEstimate(
        model=model_id or spec.architecture, method=c.method, precision=c.precision, optimizer=c.optimizer,
        micro_batch_size=c.micro_batch_size, seq_len=seq, grad_accum=c.grad_accum, gpus=c.gpus, zero=c.zero,
        gradient_checkpointing=c.gradient_checkpointing, attention=c.attention, lora_rank=rank,
        lora_alpha=(c.lora_alpha if c.lora_alpha is not None else 2 * rank) if rank else None, lora_targets=targets,
        params_total=sum(t.numel for t in base),
        params_trainable=sum(math.prod(s) for s in trainable_shapes),
        states=states, states_unsharded=unsharded,
        activation_bytes=act.bytes(c.micro_batch_size, seq), activation_breakdown=act.breakdown(c.micro_batch_size, seq),
        temporary_bytes=temporary(c.micro_batch_size, seq), optimizer_step_bytes=step,
        total_bytes=peak(c.micro_batch_size, seq), gpu=gpu_name, gpu_memory_bytes=mem, fits=fits,
        max_micro_batch_size=max_b, max_seq_len=max_s, context_tokens=context,
        effective_batch_size=c.micro_batch_size * c.grad_accum * c.gpus,
        total_bytes_without_accum=peak(c.micro_batch_size * c.grad_accum, seq) if c.grad_accum > 1 else None,
        estimated=_estimated(spec, mem is not None), notes=_notes(spec, c),
    )
