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

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

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
    linears: frozenset[str] = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
    """The decoder's linear module names (autocast casts an input once per linear reading it)."""
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
    autocast: bool = False
    """The forward pass runs under `torch.autocast` in the compute dtype (Trainer's bf16=True):
    each linear casts its own compute-dtype copy of a wider input, and of a wider frozen weight."""
    stream_bytes: int = 0
    """Bytes of the residual stream and the norm outputs (0: element_bytes): 4 when an fp32 base
    runs under autocast (the fp32 embeddings and norm weights keep the stream in fp32)."""
    linear_out_bytes: int = 0
    """Bytes of a frozen base linear's output (0: element_bytes): bitsandbytes' 4-bit linears cast
    their output back to their input's dtype (QLoRA over an fp32 stream: 4)."""
    weight_casts: bool = False
    """Decoder linears in a wider dtype than the compute dtype under autocast (an fp32 LoRA base,
    fp32 weights under AMP): each keeps its compute-dtype weight copy for the backward pass (autocast
    caches the casts of weights that require grad for the whole forward pass; the backward pass keeps
    the others too). bitsandbytes' 4-bit linears keep none. fp32 adapters under autocast alike."""
    head_weight_cast: bool = False
    """The same for a frozen lm_head in a wider dtype (QLoRA's fp32 lm_head under autocast)."""
    expert_bytes: int = 0
    """Bytes of the routed experts' activations (0: element_bytes). transformers' grouped_mm is not
    autocast-enabled and casts its input to the experts' weight dtype (integrations/moe.py
    `_grouped_mm`): under autocast over fp32 experts they run, and keep what they keep, in fp32."""

    @property
    def stream(self) -> int:
        return self.stream_bytes or self.element_bytes

    @property
    def linear_out(self) -> int:
        return self.linear_out_bytes or self.element_bytes

    def keeps_input(self, *modules: str) -> bool:
        return self.trainable or any(m in self.adapted for m in modules)


@dataclass(frozen=True)
class Terms:
    """Activation bytes of one block, per token: `per_token` terms scale with s*b, `per_token_ctx`
    terms (score matrices) with s*s*b."""

    per_token: dict[str, int] = field(default_factory=dict)
    per_token_ctx: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, int] = field(default_factory=dict)
    """Bytes independent of the batch: autocast's weight copies kept for the backward pass."""

    def __add__(self, other: Terms) -> Terms:
        return Terms(
            _merge(self.per_token, other.per_token),
            _merge(self.per_token_ctx, other.per_token_ctx),
            _merge(self.fixed, other.fixed),
        )

    def coefficients(self) -> tuple[int, int]:
        return sum(self.per_token.values()), sum(self.per_token_ctx.values())

    def bytes(self, micro_batch: int, seq_len: int) -> int:
        lin, quad = self.coefficients()
        return micro_batch * seq_len * (lin + seq_len * quad) + sum(self.fixed.values())


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


def norm_bytes(spec: ModelSpec, width: int, groups: int, a: ActivationAssumptions, in_bytes: int = 0) -> int:
    """Bytes per token one norm keeps over `width` elements split in `groups` rows (per-head
    q/k norms: one reciprocal RMS per head). A trained weight multiplies the normalized tensor cast
    back to the input's dtype (`in_bytes`, default the residual stream's)."""
    e = a.element_bytes
    if a.norm_style == "fused":
        return e * width
    if spec.norm == "layer":
        return e * width + 8 * groups  # native_layer_norm: input, fp32 mean and rstd
    kept = 4 * width + 4 * groups  # x.float() and the fp32 reciprocal RMS
    if a.trainable:
        kept += (4 if _fp32_weight_norm(spec) else in_bytes or a.stream) * width
    return kept


# ---- linear inputs and LoRA adapters ---------------------------------------------------------


def adapter_copy_bytes(a: ActivationAssumptions, in_bytes: int) -> int:
    """Bytes per element of the copy of its input each adapted module keeps, 0 when it shares the
    input: PEFT casts the input to the adapter dtype, LoRA dropout makes a new tensor, and under
    autocast lora_A casts whatever it reads to the compute dtype."""
    e = a.element_bytes
    if a.autocast:
        return e if a.lora_dropout or in_bytes != e or a.adapter_bytes != e else 0
    return a.adapter_bytes if a.lora_dropout or a.adapter_bytes != in_bytes else 0


def input_terms(
    label: str,
    modules: frozenset[str],
    width: int,
    a: ActivationAssumptions,
    already_kept: bool = False,
    copies: int = 1,
    in_bytes: int = 0,
) -> dict[str, int]:
    """What the linears reading one tensor of `width` (in `in_bytes`, default the compute dtype)
    keep: the tensor once (a trained base linear, or adapters that share it), or under autocast
    over a wider tensor one compute-dtype cast per trained linear; each adapter's own copy and
    mask; and A's outputs."""
    e = a.element_bytes
    in_bytes = in_bytes or e
    adapted = sorted(m for m in modules if m in a.adapted)
    out: dict[str, int] = {}
    own = adapter_copy_bytes(a, in_bytes) if adapted else 0
    if a.trainable and a.autocast and in_bytes != e:
        out[f"{label} (autocast copies)"] = copies * len(modules & a.linears) * e * width
    elif (a.trainable or (adapted and not own)) and not already_kept:
        out[label] = copies * in_bytes * width
    if own:
        per = own + (a.dropout_mask_bytes if a.lora_dropout else 0)
        out[f"LoRA input copies ({label})"] = copies * len(adapted) * per * width
    if adapted:
        out[f"LoRA A outputs ({label})"] = copies * len(adapted) * (e if a.autocast else a.adapter_bytes) * a.lora_rank
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
    t |= input_terms("qkv input", _group("qkv input"), h, a, in_bytes=a.stream)
    if spec.qk_norm:
        lo = a.linear_out  # the q/k projections' outputs
        t["q/k norms"] = norm_bytes(spec, q_width, spec.num_heads, a, lo) + norm_bytes(
            spec, kv_width, spec.num_kv_heads, a, lo
        )
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
    """Multi-head latent attention as transformers' DeepseekV3Attention runs it: the hidden state
    q_a_proj (or q_proj) and kv_a_proj_with_mqa read, each latent's RMSNorm (q_a_layernorm over
    q_lora_rank, kv_a_layernorm over kv_lora_rank) and the up-projection's input (q_b_proj,
    kv_b_proj); RoPE keeps nothing per token. Attention keeps the query (a new tensor: the nope and
    rope parts concatenated), the key (a new tensor: k_nope beside the shared k_rot), the value as
    a view of kv_b_proj's whole output (nope + v per head), the fp32 log-sum-exp and its output.
    The concatenated query puts the output in [b, heads, s, d] memory, so o_proj reads a copy."""
    m, e, heads = spec.mla, a.element_bytes, spec.num_heads
    assert m is not None
    qk, lo = m.qk_nope_head_dim + m.qk_rope_head_dim, a.linear_out
    a = replace(a, linears=a.linears | _MLA_LINEARS)  # under autocast each casts its own input copy
    reads = frozenset({"q_a_proj" if m.q_lora_rank else "q_proj", "kv_a_proj_with_mqa"})
    t = input_terms("latent projection input", reads, spec.hidden_size, a, in_bytes=a.stream)
    t["kv latent norm"] = norm_bytes(spec, m.kv_lora_rank, 1, a, lo)
    t = _merge(t, input_terms("kv latent (kv_b input)", frozenset({"kv_b_proj"}), m.kv_lora_rank, a))
    if m.q_lora_rank:
        t["q latent norm"] = norm_bytes(spec, m.q_lora_rank, 1, a, lo)
        t = _merge(t, input_terms("q latent (q_b input)", frozenset({"q_b_proj"}), m.q_lora_rank, a))
    t |= {
        "q (nope + rope, concatenated)": e * heads * qk,
        "k (nope + shared rope)": e * heads * qk,
        "v (kv_b output, nope + v)": e * heads * (m.qk_nope_head_dim + m.v_head_dim),
    }
    if a.attention == "flash":
        t["attention output"] = e * heads * m.v_head_dim
    o = input_terms(
        "attention output (o_proj input)", _group("attention output (o_proj input)"), heads * m.v_head_dim, a
    )
    return Terms(_merge(t, o)) + _scores(heads, a)


_MLA_LINEARS = frozenset({"q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj"})
"""The projections of multi-head latent attention (o_proj aside)."""


# ---- feed-forward ----------------------------------------------------------------------------


def _swiglu(inter: int, a: ActivationAssumptions, label: str, copies: int = 1) -> dict[str, int]:
    lo = a.linear_out
    t = {
        f"{label} gate output (activation input)": copies * lo * inter,
        f"{label} activation output": copies * lo * inter,
        f"{label} up output": copies * lo * inter,
    }
    down = input_terms(f"{label} down input", _group("mlp down input"), inter, a, copies=copies, in_bytes=lo)
    return _merge(t, down)


def mlp_terms(spec: ModelSpec, a: ActivationAssumptions) -> Terms:
    """Dense feed-forward: Korthikanti's 19sbh for a 4h GeLU MLP; SwiGLU keeps two more I-wide
    tensors (the up output and the activation output are both factors of the product)."""
    e, inter = a.element_bytes, spec.intermediate_size
    t = input_terms("mlp input", _group("mlp input"), spec.hidden_size, a, in_bytes=a.stream)
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
    shared experts as a dense SwiGLU. The routed experts run in their weights' dtype, outside
    autocast (`a.expert_bytes`)."""
    moe, e, h = spec.moe, a.element_bytes, spec.hidden_size
    assert moe is not None
    k, x = moe.experts_per_token, a.expert_bytes or e
    ax = replace(a, element_bytes=x, autocast=False, stream_bytes=x, linear_out_bytes=x)
    t = {
        "router softmax (fp32)": 4 * moe.num_experts,
        "routing indices (int64)": a.moe_index_bytes * k,
        "top-k normalization (fp32)": 4 + 4 * k,
        "routing weights": e * k,
        "expert outputs (x routing weight)": k * x * h,
    }
    if a.trainable:
        t["router input"] = e * h
    t |= input_terms("expert inputs (gathered)", _group("mlp input"), h, ax, copies=k)
    inter = moe.expert_intermediate_size
    t["expert gate-up outputs"] = k * 2 * x * inter
    t["expert activation outputs"] = k * x * inter
    t = _merge(t, input_terms("expert down inputs", _group("mlp down input"), inter, ax, copies=k))
    if moe.num_shared_experts:
        t = _merge(t, _swiglu(moe.shared_intermediate_size, a, "shared expert"))
    if moe.shared_expert_gate:
        t["shared expert output (x gate)"] = e * h
    return Terms(t)


# ---- a layer, the head, the model ------------------------------------------------------------


def layer_terms(spec: ModelSpec, index: int, a: ActivationAssumptions, modules: Iterable[LinearModule] = ()) -> Terms:
    """One decoder layer: its norms, attention and feed-forward (with their LoRA adapters), and
    with `a.weight_casts` the compute-dtype copies of its frozen linears' weights (`modules`: the
    decoder's linear modules; adapters follow `a.adapted`)."""
    norms = Terms({"norms": spec.norms_per_layer * norm_bytes(spec, spec.hidden_size, 1, a)})
    is_moe = spec.layers[index].mlp == "moe" and spec.moe is not None
    ffn = moe_terms(spec, a) if is_moe else mlp_terms(spec, a)
    casts, mine = {}, [m for m in modules if m.layer == index]
    if a.weight_casts:  # routed experts' grouped_mm casts no weight (see moe_terms)
        params = sum(m.in_features * m.out_features * m.copies for m in mine if not (m.routed and a.expert_bytes))
        casts["autocast weight copies (linears)"] = a.element_bytes * params
    if a.autocast and a.adapted and a.adapter_bytes != a.element_bytes:  # cached casts of trained leaves
        params = sum(a.lora_rank * (m.in_features + m.out_features) * m.copies for m in mine if m.name in a.adapted)
        casts["autocast copies of the adapter weights"] = a.element_bytes * params
    return norms + attention_terms(spec, a) + ffn + Terms(fixed=casts)


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
    casts = {"autocast weight copy (lm_head)": e * v * h} if a.head_weight_cast else {}
    return Terms(t, fixed=casts)
