"""Activations: the bytes autograd keeps for the backward pass, per decoder layer and after it.

A model of what each operation saves, checked against real transformers + PEFT code on CPU
(`tests/test_training_autograd.py` counts the storages `torch.autograd.graph.saved_tensors_hooks`
packs, layer by layer, for tiny Llama, Qwen3, Gemma, Gemma 2, Qwen3-MoE and Mixtral configs).

Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", sec.
4.1) count, for a GPT layer in 16-bit without recomputation, `s*b*h*(34 + 5*a*s/h)` bytes: an
operation keeps the inputs its backward needs, masks are 1 byte, LayerNorm keeps its input. The
same rule, applied to how transformers runs today's models (`norm_style="hf"`, the default):

- RMSNorm upcasts: `x.float()` is kept (4h, also in bf16 training), with the fp32 reciprocal RMS
  (4 bytes per token), and, when the norm's weight is trained, the normalized tensor the weight
  multiplies (e*h; fp32 for Gemma's `1 + weight` norms). Qwen3's per-head q/k norms alike.
- A linear keeps its input only when its weight is trained. Inputs several linears read (q, k and
  v; gate and up) are one tensor, kept once.
- A PEFT LoRA adapter casts its input to the adapter dtype (fp32 by default,
  `autocast_adapter_dtype`): each adapted module then keeps its own copy (4 * in); with adapters in
  the compute dtype the cast is a no-op and the shared input is kept once. LoRA dropout > 0 keeps a
  dropout output per adapted module and its mask (1 byte on CUDA; the CPU kernel keeps a mask in
  the input dtype). Each adapter also keeps its A output (r wide).
- SDPA / flash attention keeps q, k and v (grouped K/V not repeated), the fp32 log-sum-exp and its
  output (which is o_proj's input, no copy). Eager attention repeats K/V to every query head and
  keeps the fp32 softmax and its cast: quadratic in s.
- SwiGLU keeps the gate output (the activation's input), the activation output and the up output;
  the down projection's input when it is trained.
- MoE (transformers' grouped dispatch): the router's input (trained router), its fp32 softmax,
  int64 routing indices (four per routed copy of a token), the fp32 top-k normalization, each
  routed copy's gathered input (trained experts), gate-up output, activation output and down
  input, and the expert output the routing weight multiplies.
- After the last layer: the final norm, lm_head's input (trained lm_head), what the loss keeps
  (fp32 log-probabilities for the full cross-entropy), the int64 labels and, when the embedding is
  trained, the int64 input ids; Gemma 2's logit soft-capping keeps a tanh output.

With gradient checkpointing (one checkpoint per decoder layer, as transformers does) each layer
keeps only its input, `e*s*b*h`, and one layer is recomputed at a time during the backward pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from planner.models.spec import ModelSpec
from planner.training.lora import LinearModule

ATTENTIONS: tuple[str, ...] = ("flash", "eager")

_INPUT_GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    ("qkv input", frozenset({"q_proj", "k_proj", "v_proj", "qkv_proj"})),
    ("attention output (o_proj input)", frozenset({"o_proj"})),
    ("mlp input", frozenset({"gate_proj", "up_proj", "gate_up_proj", "fc1"})),
    ("mlp down input", frozenset({"down_proj", "fc2"})),
)
"""Linear modules that read one tensor (PEFT module names) and the label of that tensor."""


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
    """LoRA-targeted module names: these keep an input (for A's gradient) and A's output."""
    lora_rank: int = 0
    norm_style: str = "hf"
    """"hf": transformers' RMSNorm (fp32 copy, reciprocal RMS, normalized tensor); "fused": a
    fused norm kernel that keeps its input only (Megatron, Korthikanti's count)."""
    adapter_bytes: int = 4
    """LoRA adapter dtype: 4 under PEFT's default autocast_adapter_dtype, the compute dtype otherwise."""
    lora_dropout: bool = False
    dropout_mask_bytes: int = 1
    """Bytes per element of a dropout mask: 1 (bool) for CUDA's fused kernel."""
    moe_index_bytes: int = 32
    """Routing indices kept per routed copy of a token: four int64 (transformers 5's dispatch)."""
    loss_bytes_per_vocab: int = 4
    """What the loss keeps per token per vocabulary entry: 4 (fp32 log-probs) for the full
    cross-entropy, 0 for a fused linear + cross-entropy kernel."""

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
    return {k: v for k, v in out.items() if v}


def korthikanti_layer_bytes(seq_len: int, micro_batch: int, hidden: int, heads: int) -> int:
    """Korthikanti et al. 2022, eq. (1): `s*b*h*(34 + 5*a*s/h)` bytes per GPT layer, 16-bit, no
    recomputation, no tensor or sequence parallelism."""
    return seq_len * micro_batch * (34 * hidden + 5 * heads * seq_len)


# ---- norms -----------------------------------------------------------------------------------


def _fp32_weight_norm(spec: ModelSpec) -> bool:
    """Gemma's RMSNorm multiplies by `1 + weight` in fp32 and keeps the fp32 normalized tensor."""
    return spec.model_type.startswith("gemma")


def norm_bytes(spec: ModelSpec, width: int, groups: int, a: ActivationAssumptions) -> int:
    """Bytes per token one norm keeps over `width` elements split in `groups` rows (per-head
    q/k norms: one reciprocal RMS per head)."""
    e = a.element_bytes
    if a.norm_style == "fused":
        return e * width
    if spec.norm == "layer":
        return e * width + 8 * groups  # native_layer_norm: input, fp32 mean and rstd
    kept = 4 * width + 4 * groups  # x.float() and the fp32 reciprocal RMS
    if a.trainable:
        kept += (4 if _fp32_weight_norm(spec) else e) * width
    return kept


# ---- linear inputs and LoRA adapters ---------------------------------------------------------


def _adapter_own_copy(a: ActivationAssumptions) -> bool:
    """Each adapted module keeps its own input copy: a dtype cast or a dropout output."""
    return a.lora_dropout or a.adapter_bytes != a.element_bytes


def input_terms(
    label: str,
    modules: frozenset[str],
    width: int,
    a: ActivationAssumptions,
    already_kept: bool = False,
    copies: int = 1,
) -> dict[str, int]:
    """What the linears reading one tensor of `width` keep: the tensor once (a trained base
    linear, or adapters that share it), each adapter's own copy and mask, and A's outputs."""
    adapted = sorted(m for m in modules if m in a.adapted)
    out: dict[str, int] = {}
    shared = a.trainable or (adapted and not _adapter_own_copy(a))
    if shared and not already_kept:
        out[label] = copies * a.element_bytes * width
    if adapted and _adapter_own_copy(a):
        per = a.adapter_bytes + (a.dropout_mask_bytes if a.lora_dropout else 0)
        out[f"LoRA input copies ({label})"] = copies * len(adapted) * per * width
    if adapted:
        out[f"LoRA A outputs ({label})"] = copies * len(adapted) * a.adapter_bytes * a.lora_rank
    return out


def _group(label: str) -> frozenset[str]:
    return dict(_INPUT_GROUPS)[label]


# ---- attention -------------------------------------------------------------------------------


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
    t |= input_terms("qkv input", _group("qkv input"), h, a)
    if spec.qk_norm:
        t["q/k norms"] = norm_bytes(spec, q_width, spec.num_heads, a) + norm_bytes(spec, kv_width, spec.num_kv_heads, a)
    flash = a.attention == "flash"
    if flash:  # flash keeps its output for its own backward; o_proj reads a view of it
        t["attention output (o_proj input)"] = e * q_width
    t = _merge(
        t,
        input_terms(
            "attention output (o_proj input)", _group("attention output (o_proj input)"), q_width, a, already_kept=flash
        ),
    )
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
    t = {
        "latent projection input": e * spec.hidden_size,
        "kv latent (norm and kv_b inputs)": e * (2 * m.kv_lora_rank + m.qk_rope_head_dim),
        "q": e * heads * qk,
        "k": e * heads * qk,
        "v": e * heads * m.v_head_dim,
        "attention output (o_proj input)": e * heads * m.v_head_dim,
    }
    if m.q_lora_rank:
        t["q latent (norm and q_b inputs)"] = e * 2 * m.q_lora_rank
    return Terms(t) + _scores(heads, a)


# ---- feed-forward ----------------------------------------------------------------------------


def _swiglu(inter: int, a: ActivationAssumptions, label: str, copies: int = 1) -> dict[str, int]:
    e = a.element_bytes
    t = {
        f"{label} gate output (activation input)": copies * e * inter,
        f"{label} activation output": copies * e * inter,
        f"{label} up output": copies * e * inter,
    }
    return _merge(t, input_terms(f"{label} down input", _group("mlp down input"), inter, a, copies=copies))


def mlp_terms(spec: ModelSpec, a: ActivationAssumptions) -> Terms:
    """Dense feed-forward: Korthikanti's 19sbh for a 4h GeLU MLP; SwiGLU keeps two more I-wide
    tensors (the up output and the activation output are both factors of the product)."""
    e, inter = a.element_bytes, spec.intermediate_size
    t = input_terms("mlp input", _group("mlp input"), spec.hidden_size, a)
    if spec.gated_mlp:
        t = _merge(t, _swiglu(inter, a, "mlp"))
    else:
        t["mlp activation input"] = e * inter
        t = _merge(t, input_terms("mlp activation output (fc2 input)", _group("mlp down input"), inter, a))
    if a.dropout:
        t["mlp dropout mask"] = spec.hidden_size
    return Terms(t)


def moe_terms(spec: ModelSpec, a: ActivationAssumptions) -> Terms:
    """Mixture of experts as transformers' grouped dispatch runs it (see the module docstring);
    shared experts as a dense SwiGLU."""
    moe, e, h = spec.moe, a.element_bytes, spec.hidden_size
    assert moe is not None
    k = moe.experts_per_token
    t = {
        "router softmax (fp32)": 4 * moe.num_experts,
        "routing indices (int64)": a.moe_index_bytes * k,
        "top-k normalization (fp32)": 4 + 4 * k,
        "routing weights": e * k,
        "expert outputs (x routing weight)": k * e * h,
    }
    if a.trainable:
        t["router input"] = e * h
    t |= input_terms("expert inputs (gathered)", _group("mlp input"), h, a, copies=k)
    inter = moe.expert_intermediate_size
    t["expert gate-up outputs"] = k * 2 * e * inter
    t["expert activation outputs"] = k * e * inter
    t = _merge(t, input_terms("expert down inputs", _group("mlp down input"), inter, a, copies=k))
    if moe.num_shared_experts:
        t = _merge(t, _swiglu(moe.shared_intermediate_size, a, "shared expert"))
    if moe.shared_expert_gate:
        t["shared expert output (x gate)"] = e * h
    return Terms(t)


# ---- a layer, the head, the model ------------------------------------------------------------


def layer_terms(spec: ModelSpec, index: int, a: ActivationAssumptions, modules: Iterable[LinearModule] = ()) -> Terms:
    """One decoder layer: its norms, attention and feed-forward (with their LoRA adapters).
    `modules` is accepted for callers of the earlier signature; adapters follow `a.adapted`."""
    del modules
    norms = Terms({"norms": spec.norms_per_layer * norm_bytes(spec, spec.hidden_size, 1, a)})
    is_moe = spec.layers[index].mlp == "moe" and spec.moe is not None
    ffn = moe_terms(spec, a) if is_moe else mlp_terms(spec, a)
    return norms + attention_terms(spec, a) + ffn


def head_terms(spec: ModelSpec, a: ActivationAssumptions) -> Terms:
    """After the last layer: the final norm, lm_head's input (trained lm_head), the loss's kept
    tensors, the int64 labels (and input ids for a trained embedding), Gemma 2's soft-cap."""
    e, h, v = a.element_bytes, spec.hidden_size, spec.vocab_size
    t = {"final norm": norm_bytes(spec, h, 1, a), "labels (int64)": 8}
    if a.loss_bytes_per_vocab:
        t["loss (log-probabilities)"] = a.loss_bytes_per_vocab * v
    else:
        t["loss (fused kernel: input gradient)"] = e * h
    if a.trainable:
        t |= {"lm_head input": e * h, "input ids (int64)": 8}
    if spec.model_type == "gemma2":
        t["logit soft-cap (tanh output)"] = e * v
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
    checkpointed_layers: int = -1
    """Selective checkpointing: how many layers are checkpointed (-1: all when checkpointing)."""

    def layer_bytes(self, b: int, s: int) -> list[int]:
        return [b * s * (lin + s * quad) for lin, quad in self.layers]

    def _checkpointed(self) -> int:
        if not self.checkpointing:
            return 0
        return len(self.layers) if self.checkpointed_layers < 0 else min(self.checkpointed_layers, len(self.layers))

    def breakdown(self, b: int, s: int) -> dict[str, int]:
        per_layer = self.layer_bytes(b, s)
        head = {"loss and final norm": b * s * (self.head[0] + s * self.head[1])}
        n = self._checkpointed()
        if n == 0:
            return {"decoder layers": sum(per_layer)} | head
        out = {
            "checkpointed layer inputs": n * b * s * self.layer_input_bytes_per_token,
            "recomputed layer": max(per_layer[:n]),
        }
        if n < len(per_layer):
            out["layers kept whole (selective checkpointing)"] = sum(per_layer[n:])
        return out | head

    def bytes(self, b: int, s: int) -> int:
        return sum(self.breakdown(b, s).values())


def activation_model(
    spec: ModelSpec,
    a: ActivationAssumptions,
    modules: Sequence[LinearModule],
    checkpointing: bool,
    checkpointed_layers: int = -1,
) -> ActivationModel:
    del modules
    layers = tuple(layer_terms(spec, i, a).coefficients() for i in range(spec.num_layers))
    return ActivationModel(
        layers,
        head_terms(spec, a).coefficients(),
        a.element_bytes * spec.hidden_size,
        checkpointing,
        checkpointed_layers,
    )
