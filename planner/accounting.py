"""Parameters, weight bytes per GPU and KV-cache bytes per token per GPU: pure functions over a
`ModelSpec` and its tensor list (`planner.models.tensors`). Numbers in, numbers out; no I/O.

The rules are vLLM's: vocabulary padded to a multiple of 64 and split over TP; K/V projections and
KV heads replicated when there are fewer KV heads than TP ranks; MLA's latent cache stored whole on
every rank; layers split over pipeline stages by `get_pp_indices`.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from dataclasses import dataclass

from planner.dtypes import torch_dtype_bytes
from planner.expert_split import busiest_expert_rank_shape
from planner.models.spec import ModelSpec, QuantSpec
from planner.models.tensors import Tensor

VOCAB_PADDING = 64  # vocab_parallel_embedding.DEFAULT_VOCAB_PADDING_SIZE


def pp_layer_ranges(num_layers: int, pp: int) -> list[range]:
    """vLLM's `get_pp_indices`: L // pp layers each, the remainder one each to stages -2, -3, ..."""
    per = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        per[-i] += 1
    out, start = [], 0
    for n in per:
        out.append(range(start, start + n))
        start += n
    return out


# Gemma models build embed_tokens on every pipeline rank (models/gemma*.py), not only the first.
_EMBEDDINGS_ON_EVERY_STAGE = ("gemma", "gemma2", "gemma3_text", "gemma4_text", "gemma4_text_v")


def stage_of(tensor: Tensor, ranges: list[range], spec: ModelSpec | None = None) -> list[int]:
    """Pipeline stages that hold a tensor (embeddings: first; final norm and lm_head: last; a vision
    tower: every stage). With tied embeddings the last stage keeps its own copy of the embedding as lm_head."""
    if tensor.stage == "first":
        if tensor.component == "vision":
            # the VLMs modelled here (gemma3_mm, mllama4, llava, mistral3, qwen2(.5)_vl, kimi_vl) build their
            # vision tower on every PP rank: no pp_group gating in vLLM's model files
            return list(range(len(ranges)))
        if spec is not None and tensor.component == "embeddings" and "embed_tokens" in tensor.name:
            if spec.model_type in _EMBEDDINGS_ON_EVERY_STAGE:
                return list(range(len(ranges)))
            if spec.tie_word_embeddings:
                return sorted({0, len(ranges) - 1})
        return [0]
    if tensor.stage == "last":
        return [len(ranges) - 1]
    return [s for s, r in enumerate(ranges) if tensor.stage in r]


def kv_heads_per_rank(num_kv_heads: int, tp: int) -> int:
    """`max(1, total_kv_heads // tp)`: ranks replicate KV heads when there are fewer than TP."""
    return max(1, num_kv_heads // tp)


def _padded_vocab(rows: int) -> int:
    return -(-rows // VOCAB_PADDING) * VOCAB_PADDING


def rank_shape(t: Tensor, spec: ModelSpec, tp: int) -> tuple[int, ...]:
    """The tensor's shape on one TP rank."""
    s = t.shape
    if t.shard == "replicated" or not s:
        return s
    if t.shard == "vocab":
        return (_padded_vocab(s[0]) // tp, *s[1:])
    if t.shard in ("column", "q_heads", "heads"):
        return (-(-s[0] // tp), *s[1:])
    if t.shard == "row":
        return s if len(s) == 1 else (s[0], -(-s[1] // tp))
    if t.shard == "kv_heads":
        heads = (spec.layers[t.stage].kv_heads if isinstance(t.stage, int) and t.stage < spec.num_layers else 0) or (
            spec.num_kv_heads
        )
        return (s[0] // heads * kv_heads_per_rank(heads, tp), *s[1:])
    if t.shard == "qkv_fused":
        hd = spec.head_dim
        rows = spec.num_heads // tp * hd + 2 * kv_heads_per_rank(spec.num_kv_heads, tp) * hd
        return (rows, *s[1:])
    if t.shard == "experts":
        # Without EP the intermediate dimension is split; with EP whole experts are: same bytes.
        down = bool(re.search(r"down|w2", t.name.rsplit("experts", 1)[-1]))
        if len(s) == 3:  # stacked [experts, out, in]
            return (s[0], s[1], -(-s[2] // tp)) if down else (s[0], -(-s[1] // tp), s[2])
        if re.search(r"\.experts\.\d+\.", t.name):  # one expert's own tensor (experts.N.w1, gate_proj...)
            if len(s) == 1:
                return s if down else (-(-s[0] // tp),)
            return (s[0], -(-s[1] // tp)) if down else (-(-s[0] // tp), s[1])
        return s if down else (s[0], -(-s[1] // tp))  # stacked biases [experts, out]
    raise ValueError(f"unknown shard rule {t.shard!r}")


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


# ---- parameters -------------------------------------------------------------------------------


def params_by_component(tensors: list[Tensor], *, loaded_only: bool = True) -> dict[str, int]:
    """Parameter count per component; runtime buffers are never parameters."""
    out: dict[str, int] = {}
    for t in tensors:
        if t.runtime or (loaded_only and not t.loaded):
            continue
        out[t.component] = out.get(t.component, 0) + t.numel
    return out


def active_params(spec: ModelSpec, tensors: list[Tensor]) -> int:
    """Parameters one token passes through: routed experts count `experts_per_token` of `num_experts`."""
    total = 0
    for t in tensors:
        if t.runtime or not t.loaded:
            continue
        if t.component == "experts" and spec.moe:
            total += t.numel * spec.moe.experts_per_token // spec.moe.num_experts
        elif t.component == "vision":
            continue
        else:
            total += t.numel
    return total


# ---- quantization -----------------------------------------------------------------------------


_GLOB = re.compile(r"[*?\[]")


@functools.lru_cache(maxsize=64)
def _ignore_matcher(
    patterns: tuple[str, ...],
) -> tuple[frozenset[str], re.Pattern[str] | None, tuple[re.Pattern[str], ...]]:
    """A scheme's ignore list, prepared once (a ModelOpt list can name hundreds of modules): the
    literal names, one compiled regex for the glob entries, and the `re:` entries, searched as given.
    An entry matches the module itself, anything under it, or a module whose name ends with it."""
    literal = frozenset(p for p in patterns if not p.startswith("re:") and not _GLOB.search(p))
    globs = [p for p in patterns if not p.startswith("re:") and p not in literal]
    alternatives = [
        alt for p in globs for alt in (fnmatch.translate(p), fnmatch.translate(p + ".*"), rf"(?s:.*\.{re.escape(p)})\Z")
    ]
    combined = re.compile("|".join(f"(?:{a})" for a in alternatives)) if alternatives else None
    return literal, combined, tuple(re.compile(p[3:]) for p in patterns if p.startswith("re:"))


def is_ignored(name: str, quant: QuantSpec) -> bool:
    module = re.sub(r"\.(weight|bias|qweight)$", "", name)
    literal, globs, searched = _ignore_matcher(quant.ignored_modules)
    if literal:
        parts = module.split(".")
        heads = (".".join(parts[:i]) for i in range(1, len(parts) + 1))  # the module and what holds it
        tails = (".".join(parts[i:]) for i in range(1, len(parts)))  # names it ends with
        if any(h in literal for h in heads) or any(t in literal for t in tails):
            return True
    return bool(globs is not None and globs.match(module)) or any(r.search(module) for r in searched)


def scheme_of(t: Tensor, quant: QuantSpec | None) -> QuantSpec | None:
    """The scheme that compresses this tensor (linear weights outside the ignore list), or None.
    MXFP4 checkpoints (gpt-oss) quantize only the routed experts; a MIXED_PRECISION checkpoint
    names each module's own scheme."""
    if quant is None or not t.linear:
        return None
    if (experts_only_mxfp4(quant) and t.component != "experts") or is_ignored(t.name, quant):
        return None
    if quant.per_module:
        from planner.models.quantization import module_scheme

        return module_scheme(quant, re.sub(r"\.(weight|bias|qweight)$", "", t.name))
    return quant


def experts_only_mxfp4(quant: QuantSpec) -> bool:
    """vLLM's `mxfp4` method (gpt-oss, Kimi-K3's hook): routed experts only, in the MoE kernels' own
    layout; compressed-tensors MXFP4 quantizes every targeted linear, packed as stored."""
    return quant.method == "mxfp4" and quant.vllm_name != "compressed-tensors"


def is_quantized(t: Tensor, quant: QuantSpec | None) -> bool:
    return scheme_of(t, quant) is not None


def quantized_bytes(quant: QuantSpec, shape: tuple[int, ...]) -> int:
    """Bytes of one quantized linear weight with its scales, zeros and index tensors, as vLLM holds
    it on one rank. `shape` is [out, in] or [experts, out, in] on that rank."""
    experts = shape[0] if len(shape) == 3 else 1
    out_f, in_f = shape[-2], shape[-1]
    n = out_f * in_f
    m = quant.method
    if m in ("fp8", "int8"):
        if quant.scale_granularity == "block" and quant.block_shape:
            bo, bi = quant.block_shape
            scales = -(-out_f // bo) * -(-in_f // bi)
        elif quant.scale_granularity == "channel":
            scales = out_f
        else:
            scales = 2  # weight scale and input scale, one fp32 each
        return experts * (n + 4 * scales)
    if m in ("awq", "gptq", "w4a16"):
        g = quant.group_size if quant.group_size and quant.group_size > 0 else in_f
        groups = -(-in_f // g)
        extra = 2 * out_f * groups  # fp16/bf16 scales
        if quant.zero_points:
            extra += out_f * groups // 2  # packed 4-bit zeros
        if quant.desc_act:
            extra += 4 * in_f  # g_idx
        return experts * (n * quant.weight_bits // 8 + extra)
    if m == "mxfp4":
        return experts * (n // 2 + n // 32)  # e2m1 pairs per byte + one e8m0 scale per 32
    if m == "nvfp4":
        return experts * (n // 2 + n // 16 + 8)  # + one fp8 scale per 16, two fp32 global scales
    if m == "mxfp8":
        return experts * (n + n // 32)  # e4m3 values + one e8m0 scale (uint8) per 32
    if m == "bitsandbytes":
        return experts * (n // 2 + 4 * (n // 64))  # nf4 + fp32 absmax per 64
    raise ValueError(f"no byte rule for quantization {m!r}")


def scale_elements(quant: QuantSpec, shape: tuple[int, ...]) -> int:
    """Scale (and zero-point) elements a checkpoint stores beside one quantized weight; published
    parameter counts (safetensors totals) include them."""
    experts = shape[0] if len(shape) == 3 else 1
    out_f, in_f = shape[-2], shape[-1]
    if quant.scale_granularity == "block" and quant.block_shape:
        bo, bi = quant.block_shape
        return experts * -(-out_f // bo) * -(-in_f // bi)
    if quant.scale_granularity == "channel":
        return experts * out_f
    if quant.scale_granularity == "group" and quant.group_size:
        groups = -(-in_f // quant.group_size)
        return experts * out_f * groups * (2 if quant.zero_points else 1)
    return experts


def checkpoint_params(tensors: list[Tensor], quant: QuantSpec | None) -> int:
    """What a published (safetensors) count adds up: every stored tensor, loaded or not, plus the
    scale tensors of a quantized checkpoint. Runtime buffers are not stored."""
    total = sum(t.numel for t in tensors if not t.runtime)
    # The Hub's total for MXFP4 checkpoints (gpt-oss) counts each packed 4-bit value as one
    # parameter and leaves the e8m0 scales out: BF16 1,804,459,584 + U8 19,110,297,600 for 20b.
    if (
        quant is not None
        and not experts_only_mxfp4(quant)
        and quant.scale_dtype != "ue8m0"
        and quant.source.startswith(("config.json", "hf_quant"))
    ):
        schemes = [(t, scheme_of(t, quant)) for t in tensors if not t.runtime]
        total += sum(scale_elements(s, t.shape) for t, s in schemes if s is not None)
        # NVFP4 weights are stored packed, two e2m1 values per U8 element (the fp8 scales counted above;
        # ModelOpt's scalar weight_scale_2 / input_scale are buffers its export leaves out of the total),
        # as are MXFP4 weights of a mixed checkpoint (DeepSeek-V4-Flash-NVFP4's MTP experts)
        total -= sum(t.numel // 2 for t, s in schemes if s is not None and s.method in ("nvfp4", "mxfp4"))
    return total


# ---- weights ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightBytes:
    """Weight bytes as vLLM holds them, per GPU."""

    per_stage: tuple[int, ...]
    """Bytes on one TP rank of each pipeline stage (all TP ranks of a stage hold the same)."""
    by_component_max_stage: dict[str, int]
    """Breakdown of the largest stage, by component."""
    runtime_buffers: int
    """Part of the largest stage that vLLM creates at load time (rotary cache, MLA weight copies)."""

    @property
    def max_per_gpu(self) -> int:
        return max(self.per_stage)


_FLOAT_PARAM_DTYPES = frozenset({"BF16", "F16", "F32", "F64", "bfloat16", "float16", "float32"})
_SCALE_NAME = re.compile(r"(scale|scales|scale_inv|zeros|qzeros|g_idx|absmax|blocks)(\.|$|_)")


def _stored_as_is(t: Tensor) -> bool:
    """Tensors a checkpoint stores already packed or as scales, which vLLM keeps in their stored
    dtype (fp8/int weights, fp32 scales); other float tensors are cast to the model dtype."""
    if t.stored_dtype is None:
        return False
    return t.stored_dtype not in _FLOAT_PARAM_DTYPES or bool(_SCALE_NAME.search(t.name.rsplit(".", 1)[-1]))


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def mxfp4_triton_bytes(t: Tensor, shape: tuple[int, ...]) -> int:
    """gpt-oss MXFP4 experts as vLLM (0.19, Hopper) holds them with the OpenAI triton_kernels
    backend (`fused_moe/oracle/mxfp4.py`, `quantization/mxfp4.py`): the per-rank intermediate size
    padded to 64; weights re-laid-out (HopperMXValueLayout: both dims to multiples of 64);
    scales re-laid-out (rows to 256, columns to 2) while the loaded scales stay allocated too;
    biases converted to fp32. Other GPUs pick other kernels (Marlin, TRT-LLM) with other padding."""
    e = shape[0]
    if "down" in t.name:  # [E, H, I/tp] (+ bias [E, H])
        h, i_p = shape[1], _round_up(shape[-1], 64) if len(shape) == 3 else 0
        if len(shape) == 2:
            return e * shape[1] * 4
        return e * (h * _round_up(i_p // 2, 64) + _round_up(h, 256) * _round_up(i_p // 32, 2) + h * i_p // 32)
    if len(shape) == 2:  # gate_up bias [E, 2I/tp]
        return e * 2 * _round_up(shape[1] // 2, 64) * 4
    i_p, h = _round_up(shape[1] // 2, 64), shape[2]
    return e * (2 * i_p * _round_up(h // 2, 64) + _round_up(2 * i_p, 256) * h // 32 + 2 * i_p * h // 32)


def tensor_bytes(
    t: Tensor, spec: ModelSpec, quant: QuantSpec | None, dtype_bytes: int, tp: int, uneven_ep: bool = False
) -> int:
    """One tensor's bytes on one TP rank (`uneven_ep`: rank 0, the busiest, of an uneven expert split)."""
    if uneven_ep and t.shard == "experts":
        shape = busiest_expert_rank_shape(t, spec, tp)
    else:
        shape = rank_shape(t, spec, tp)
    if t.runtime and t.stored_dtype:
        return _numel(shape) * torch_dtype_bytes(t.stored_dtype)
    if quant is not None and experts_only_mxfp4(quant) and t.component == "experts" and t.stored_dtype is None:
        return mxfp4_triton_bytes(t, shape)
    if _stored_as_is(t):
        assert t.stored_dtype is not None
        return _numel(shape) * torch_dtype_bytes(t.stored_dtype)
    scheme = scheme_of(t, quant)
    if scheme is not None:
        return quantized_bytes(scheme, shape)
    return _numel(shape) * dtype_bytes


MIB = 2**20


def allocator_bytes(nbytes: int) -> int:
    """What PyTorch's caching allocator counts as allocated for one tensor of `nbytes` (vLLM's
    "Model loading took" is `max_memory_allocated`): block sizes round up to 512 B, and a tensor
    of 10 MiB or more gets its own segment, rounded up to 2 MiB, which is not split when less
    than 1 MiB would be left over."""
    rounded = -(-nbytes // 512) * 512
    if nbytes < 10 * MIB:
        return rounded
    segment = -(-nbytes // (2 * MIB)) * (2 * MIB)
    return segment if segment - rounded <= MIB else rounded


def vllm_param_key(name: str) -> str:
    """vLLM loads q/k/v into one `qkv_proj` and gate/up into one `gate_up_proj` parameter: the
    allocator sees the merged tensor."""
    return re.sub(r"\.(gate|up)_proj\.", ".gate_up_proj.", re.sub(r"\.(q|k|v)_proj\.", ".qkv_proj.", name))


def _rope_rows(spec: ModelSpec, scaled: bool) -> int:
    rope = (spec.rope_scaling or {}) if scaled else {}
    kind = rope.get("rope_type", rope.get("type"))
    if "mrope_section" in rope:
        # MRotaryEmbedding (Qwen2-VL family) caches 4x its positions for long videos; with YaRN its
        # base is the original context, unscaled (rotary_embedding/mrope.py, get_rope)
        base = rope.get("original_max_position_embeddings") if kind == "yarn" else None
        return 4 * int(base or spec.max_position_embeddings)
    if kind == "linear":
        return int(spec.max_position_embeddings * rope.get("factor", 1))
    if kind in ("yarn", "deepseek_yarn") and rope.get("original_max_position_embeddings"):
        return int(rope["original_max_position_embeddings"] * rope["factor"])
    return spec.max_position_embeddings


def runtime_buffers(spec: ModelSpec, ranges: list[range], quant: QuantSpec | None = None) -> list[Tensor]:
    """Persistent tensors vLLM allocates while loading that no checkpoint holds:
    - the rotary `cos_sin_cache` [positions, rotary dim], shared by all layers of a stage
      (`get_rope` caches instances); rows are max positions, x factor for linear scaling, original
      x factor for YaRN, 4 x positions for M-RoPE; Gemma 3 has a local and a scaled global one;
      model dtype (gpt-oss: fp32);
    - MLA with a quantized kv_b_proj: its dequantized bf16 copy (W_UK_T/W_UV), per layer.
    (Unquantized MLA keeps only views of kv_b_proj.)"""
    out: list[Tensor] = []
    if spec.rotary_dim:
        ropes = [_rope_rows(spec, True)]
        if spec.model_type == "gemma3_text":
            ropes.append(_rope_rows(spec, False))
        dtype = "float32" if spec.model_type == "gpt_oss" else None
        for r in ranges:
            for k, rows in enumerate(ropes):
                out.append(
                    Tensor(
                        f"rope_cache.{r.start}.{k}",
                        (rows, spec.rotary_dim),
                        "buffers",
                        "replicated",
                        r.start,
                        runtime=True,
                        stored_dtype=dtype,
                    )
                )
    from planner.models.families import stage_buffer_builder  # a family's own per-stage buffers (Gemma 4)

    if (stage_buffers := stage_buffer_builder(spec.model_type)) is not None:
        out += stage_buffers(spec, ranges)
    if spec.mla and quant is not None and quant.method in ("fp8", "int8"):
        m = spec.mla
        for i in range(spec.num_layers):
            out.append(
                Tensor(
                    f"model.layers.{i}.self_attn.kv_b_proj.dequantized",
                    (spec.num_heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank),
                    "buffers",
                    "column",
                    i,
                    runtime=True,
                )
            )
    return out


def weight_bytes(
    spec: ModelSpec,
    tensors: list[Tensor],
    quant: QuantSpec | None,
    dtype: str,
    tp: int = 1,
    pp: int = 1,
    uneven_ep: bool = False,
) -> WeightBytes:
    """Bytes of every loaded tensor on one GPU of each pipeline stage, plus vLLM's runtime buffers,
    as the allocator counts them (merged parameters, rounded blocks); `uneven_ep`: on the busiest GPU
    of an uneven expert-parallel split (`uneven_expert_split`)."""
    dtype_bytes = torch_dtype_bytes(dtype)
    ranges = pp_layer_ranges(spec.num_layers, pp)
    params: list[dict[str, int]] = [{} for _ in range(pp)]
    comp: list[dict[str, int]] = [{} for _ in range(pp)]
    buffers = [0] * pp
    for t in [x for x in tensors if x.loaded] + runtime_buffers(spec, ranges, quant):
        b = tensor_bytes(t, spec, quant, dtype_bytes, tp, uneven_ep)
        key = vllm_param_key(t.name)
        for s in stage_of(t, ranges, spec):
            params[s][key] = params[s].get(key, 0) + b
            comp[s][t.component] = comp[s].get(t.component, 0) + b
            if t.runtime:
                buffers[s] += b
    per_stage = tuple(sum(allocator_bytes(b) for b in p.values()) for p in params)
    worst = max(range(pp), key=lambda s: per_stage[s])
    return WeightBytes(per_stage, comp[worst], buffers[worst])
