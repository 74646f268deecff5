"""Hugging Face `config.json` -> `ModelSpec`, one small builder per model family.

Configs omit fields whose value is the transformers default; `_DEFAULTS` restores the ones that
change the numbers (Gemma 3's vocabulary, Gemma's tied embeddings...). An architecture this module
does not know is an error naming what is missing, never a guess.
"""

from __future__ import annotations

import dataclasses
import math

from dataclasses import dataclass
from typing import Any, Callable

from planner.errors import PlannerError
from planner.models.checks import check_config, check_spec
from planner.models.quantization import parse_quantization
from planner.models.spec import LayerSpec, MambaSpec, MLASpec, ModelSpec, MoESpec, VisionSpec

Config = dict[str, Any]

# transformers' defaults for fields configs leave out, where they change parameter or KV counts.
_DEFAULTS: dict[str, Config] = {
    "gemma": {"tie_word_embeddings": True, "head_dim": 256},
    "gemma2": {"tie_word_embeddings": True, "head_dim": 256, "sliding_window": 4096},
    # Gemma3TextConfig (transformers/models/gemma3/configuration_gemma3.py): the 4B/12B configs on the Hub
    # name only hidden/intermediate sizes, layers, sliding window and RoPE scaling.
    "gemma3_text": {
        "tie_word_embeddings": True, "head_dim": 256, "vocab_size": 262208, "sliding_window": 4096,
        "sliding_window_pattern": 6, "max_position_embeddings": 131072, "num_key_value_heads": 4,
        "num_attention_heads": 8, "query_pre_attn_scalar": 256, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
    },
    "granite": {"tie_word_embeddings": True},
    "phi": {"tie_word_embeddings": False, "partial_rotary_factor": 0.5},
    "opt": {"tie_word_embeddings": True},
    "llama4_text": {"interleave_moe_layer_step": 1, "use_qk_norm": True},
}

# Keys vLLM reads, in `_get_and_verify_max_len`, for the model's context limit.
_MAX_LEN_KEYS = (
    "max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
    "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len",
)
# rope types whose factor vLLM does not multiply into the context limit (newest releases; the
# per-release lists live in profiles/vllm and are passed to `scaled_max_len` by the budget).
_ROPE_NOT_MULTIPLIED = ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling")


def _req(cfg: Config, *names: str) -> Any:
    """The first of `names` present in the config, or a one-line error naming the field."""
    for name in names:
        if cfg.get(name) is not None:
            return cfg[name]
    model_type = cfg.get("model_type", "?")
    raise PlannerError(
        f"config.json (model_type {model_type!r}) has no {names[0]!r}: "
        "pass the model's complete config.json"
    )


def _int(cfg: Config, *names: str) -> int:
    value = _req(cfg, *names)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise PlannerError(f"config field {names[0]!r} must be a positive integer, got {value!r}: fix the config.json")
    return value


def max_len_base(cfg: Config) -> int:
    """The context limit before RoPE scaling: `model_max_length` if set, else the smallest of
    vLLM's length keys, else 2048."""
    if isinstance(cfg.get("model_max_length"), int) and cfg["model_max_length"] > 0:
        return int(cfg["model_max_length"])
    found = [int(cfg[k]) for k in _MAX_LEN_KEYS if isinstance(cfg.get(k), (int, float)) and not isinstance(cfg.get(k), bool)]
    if any(v <= 0 for v in found):
        raise PlannerError(f"config has a non-positive context length ({min(found)}): fix max_position_embeddings in the config.json")
    return min(found) if found else 2048


def scaled_max_len(base: int, rope: dict[str, Any] | None, model_type: str, original_max: int | None, *,
                   not_multiplied: tuple[str, ...] = _ROPE_NOT_MULTIPLIED, yarn_uses_original: bool = False,
                   longrope_original: bool = True, skipped_types: tuple[str, ...] = ("gemma3",)) -> int:
    """vLLM's `_get_and_verify_max_len` RoPE rule (the per-release lists come from profiles/vllm)."""
    rope = rope or {}
    kind = rope.get("rope_type", rope.get("type"))
    if not kind or model_type in skipped_types or model_type.removesuffix("_text") in skipped_types:
        return base
    if kind not in not_multiplied and isinstance(rope.get("factor"), (int, float)):
        if kind == "yarn" and yarn_uses_original and rope.get("original_max_position_embeddings"):
            return int(rope["original_max_position_embeddings"] * rope["factor"])
        return int(base * rope["factor"])
    if kind == "longrope" and longrope_original and original_max:
        return int(original_max)
    return base


def _layer_types(cfg: Config, n_layers: int) -> list[str]:
    """Per-layer attention type strings: explicit `layer_types`, or the family's pattern."""
    if isinstance(cfg.get("layer_types"), list):
        types = cfg["layer_types"]
        if len(types) != n_layers:
            raise PlannerError(f"layer_types has {len(types)} entries for {n_layers} layers: fix the config.json")
        return types
    mt = cfg["model_type"]
    if mt == "gemma2":
        return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    if mt == "gemma3_text":
        pattern = cfg.get("sliding_window_pattern", 6)
        return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]
    window = cfg.get("sliding_window")
    if mt in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe") and not cfg.get("use_sliding_window", False):
        window = None  # transformers drops the window unless use_sliding_window is set
    kind = "sliding_attention" if window else "full_attention"
    return [kind] * n_layers


def _attention_layers(cfg: Config, n_layers: int, mlp: Callable[[int], str]) -> tuple[LayerSpec, ...]:
    window = cfg.get("sliding_window")
    out = []
    for i, t in enumerate(_layer_types(cfg, n_layers)):
        if t == "sliding_attention":
            out.append(LayerSpec("sliding", window=int(_req(cfg, "sliding_window")), mlp=mlp(i)))
        elif t in ("full_attention", "attention"):
            out.append(LayerSpec("full", mlp=mlp(i)))
        else:
            raise PlannerError(f"layer type {t!r} is not supported yet: use a model with full or sliding attention")
    del window
    return tuple(out)


def _dense(_: int) -> str:
    return "dense"


def _common(cfg: Config) -> dict[str, Any]:
    """Fields every decoder shares: sizes, heads, head size (explicit `head_dim` wins, as in vLLM)."""
    hidden = _int(cfg, "hidden_size", "d_model", "n_embd")
    heads = _int(cfg, "num_attention_heads", "n_head")
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim <= 0:
        raise PlannerError(f"head_dim must be a positive integer, got {head_dim!r}: fix the config.json")
    if hidden % heads and not cfg.get("head_dim"):
        raise PlannerError(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}: fix the config.json")
    return dict(
        hidden_size=hidden, vocab_size=_int(cfg, "vocab_size"), num_heads=heads, num_kv_heads=int(kv_heads),
        head_dim=int(head_dim), v_head_dim=int(head_dim),
        intermediate_size=int(cfg.get("intermediate_size") or cfg.get("ffn_dim") or 4 * hidden),
        max_position_embeddings=int(cfg.get("max_position_embeddings") or 2048),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        rope_scaling=_rope(cfg), rotary_dim=int(head_dim),
        max_len_base=max_len_base(cfg), original_max_position_embeddings=cfg.get("original_max_position_embeddings"),
        max_model_len_default=scaled_max_len(max_len_base(cfg), _rope(cfg), cfg["model_type"],
                                             cfg.get("original_max_position_embeddings")),
    )


def _rope(cfg: Config) -> dict[str, Any] | None:
    rope = cfg.get("rope_scaling")
    if rope is not None and not isinstance(rope, dict):
        raise PlannerError(f"rope_scaling must be a JSON object or null, got {rope!r}: fix the config.json")
    if rope and rope.get("factor") is not None and not isinstance(rope["factor"], (int, float)):
        raise PlannerError(f"rope_scaling.factor must be a number, got {rope['factor']!r}: fix the config.json")
    return rope


def _llama_like(cfg: Config) -> dict[str, Any]:
    """Llama, Mistral, Qwen2/3, Gemma 1/2/3, Granite, Phi-3 and the dense part of the MoE families."""
    mt = cfg["model_type"]
    n_layers = _int(cfg, "num_hidden_layers")
    spec = _common(cfg)
    spec.update(
        layers=_attention_layers(cfg, n_layers, _dense),
        qkv_bias=bool(cfg.get("attention_bias", mt in ("qwen2", "qwen2_moe"))),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        qk_norm=mt in ("qwen3", "qwen3_moe", "gemma3_text"),
        norms_per_layer=4 if mt in ("gemma2", "gemma3_text") else 2,
        fused_qkv=mt == "phi3", fused_gate_up=mt == "phi3",
        checkpoint_rotary_buffers=mt == "llama" and cfg.get("_checkpoint_rotary_buffers", False),
    )
    spec["o_bias"] = spec["qkv_bias"] and mt not in ("qwen2", "qwen2_moe")
    return spec


def _moe_layers(cfg: Config, spec: dict[str, Any], is_moe: Callable[[int], bool]) -> None:
    base = spec["layers"]
    spec["layers"] = tuple(LayerSpec(l.attention, l.window, "moe" if is_moe(i) else "dense") for i, l in enumerate(base))


def _mixtral(cfg: Config) -> dict[str, Any]:
    spec = _llama_like(cfg)
    spec["moe"] = MoESpec(_int(cfg, "num_local_experts"), _int(cfg, "num_experts_per_tok"), spec["intermediate_size"])
    _moe_layers(cfg, spec, lambda i: True)
    return spec


def _qwen_moe(cfg: Config) -> dict[str, Any]:
    spec = _llama_like(cfg)
    shared = int(cfg.get("shared_expert_intermediate_size") or 0)
    spec["moe"] = MoESpec(
        _int(cfg, "num_experts"), _int(cfg, "num_experts_per_tok"), _int(cfg, "moe_intermediate_size"),
        num_shared_experts=1 if shared else 0, shared_intermediate_size=shared, shared_expert_gate=bool(shared),
    )
    step = int(cfg.get("decoder_sparse_step", 1) or 1)
    dense_only = set(cfg.get("mlp_only_layers") or [])
    _moe_layers(cfg, spec, lambda i: i not in dense_only and (i + 1) % step == 0)
    return spec


def _deepseek(cfg: Config) -> dict[str, Any]:
    spec = _common(cfg)
    n_layers = _int(cfg, "num_hidden_layers")
    mla = MLASpec(
        q_lora_rank=cfg.get("q_lora_rank"), kv_lora_rank=_int(cfg, "kv_lora_rank"),
        qk_nope_head_dim=_int(cfg, "qk_nope_head_dim"), qk_rope_head_dim=_int(cfg, "qk_rope_head_dim"),
        v_head_dim=_int(cfg, "v_head_dim"),
    )
    first_dense = int(cfg.get("first_k_dense_replace", 0))
    freq = int(cfg.get("moe_layer_freq", 1) or 1)
    n_experts = cfg.get("n_routed_experts")
    moe_layer = (lambda i: i >= first_dense and i % freq == 0) if n_experts else (lambda i: False)
    n_shared = int(cfg.get("n_shared_experts") or 0)
    moe_size = int(cfg.get("moe_intermediate_size") or 0)
    spec.update(
        layers=tuple(LayerSpec("mla", mlp="moe" if moe_layer(i) else "dense") for i in range(n_layers)),
        mla=mla, head_dim=mla.qk_nope_head_dim + mla.qk_rope_head_dim, v_head_dim=mla.v_head_dim,
        num_kv_heads=spec["num_heads"], rotary_dim=mla.qk_rope_head_dim,
        num_mtp_layers=int(cfg.get("num_nextn_predict_layers") or 0),
    )
    if n_experts:
        spec["moe"] = MoESpec(
            int(n_experts), _int(cfg, "num_experts_per_tok"), moe_size,
            num_shared_experts=n_shared, shared_intermediate_size=n_shared * moe_size,
            router_correction_bias=cfg.get("topk_method") == "noaux_tc",
        )
    return spec


def _gpt_oss(cfg: Config) -> dict[str, Any]:
    spec = _llama_like(cfg)
    spec.update(qkv_bias=True, o_bias=True)
    spec["moe"] = MoESpec(
        _int(cfg, "num_local_experts"), _int(cfg, "num_experts_per_tok", "experts_per_token"),
        spec["intermediate_size"], router_bias=True, expert_bias=True,
    )
    _moe_layers(cfg, spec, lambda i: True)
    return spec


def _llama4(cfg: Config) -> dict[str, Any]:
    spec = _llama_like(cfg)
    n_layers = len(spec["layers"])
    step = int(cfg.get("interleave_moe_layer_step", 1))
    no_rope = cfg.get("no_rope_layers")
    if not isinstance(no_rope, list) or len(no_rope) != n_layers:
        # transformers: every 4th layer is a global NoPE layer; the others use rope (value 1).
        no_rope = [int((i + 1) % 4 != 0) for i in range(n_layers)]
    chunk = cfg.get("attention_chunk_size")
    spec["layers"] = tuple(
        LayerSpec("chunked" if (no_rope[i] and chunk) else "full", window=chunk if (no_rope[i] and chunk) else None,
                  mlp="moe" if (i + 1) % step == 0 else "dense")
        for i in range(n_layers)
    )
    spec["intermediate_size"] = int(cfg.get("intermediate_size_mlp") or spec["intermediate_size"])
    expert_size = _int(cfg, "intermediate_size")
    spec["moe"] = MoESpec(
        _int(cfg, "num_local_experts"), _int(cfg, "num_experts_per_tok"), expert_size,
        num_shared_experts=1, shared_intermediate_size=expert_size,
    )
    spec.update(qk_norm=bool(cfg.get("use_qk_norm", True)), qk_norm_params=False)
    return spec


def _phi(cfg: Config) -> dict[str, Any]:
    """Phi-2: parallel attention and MLP under one LayerNorm, biases everywhere, partial rotary."""
    spec = _common(cfg)
    n_layers = _int(cfg, "num_hidden_layers")
    spec.update(
        layers=tuple(LayerSpec("full") for _ in range(n_layers)), gated_mlp=False, qkv_bias=True, o_bias=True,
        mlp_bias=True, norm="layer", norms_per_layer=1, lm_head_bias=True,
        rotary_dim=int(spec["head_dim"] * float(cfg.get("partial_rotary_factor", 0.5))),
    )
    return spec


def _opt(cfg: Config) -> dict[str, Any]:
    spec = _common(cfg)
    n_layers = _int(cfg, "num_hidden_layers")
    if cfg.get("word_embed_proj_dim", spec["hidden_size"]) != spec["hidden_size"]:
        raise PlannerError("OPT with word_embed_proj_dim != hidden_size (OPT-350m) is not supported yet: use another OPT size")
    spec.update(
        layers=tuple(LayerSpec("full") for _ in range(n_layers)), gated_mlp=False, qkv_bias=True, o_bias=True,
        mlp_bias=True, norm="layer", learned_positions=spec["max_position_embeddings"] + 2, rotary_dim=0,
        intermediate_size=_int(cfg, "ffn_dim"),
    )
    return spec


def _mamba_state(cfg: Config) -> MambaSpec:
    base = _mamba_state_shapes(cfg)
    # vLLM's ModelConfig.get_mamba_chunk_size: mamba_chunk_size, else chunk_size, else 2048
    chunk = int(cfg.get("mamba_chunk_size") or cfg.get("chunk_size") or 2048)
    return dataclasses.replace(base, chunk_size=chunk)


def _mamba_state_shapes(cfg: Config) -> MambaSpec:
    """Per-sequence recurrent state of one Mamba/linear layer, unsharded, as vLLM's
    `MambaStateShapeCalculator` sizes it (`layers/mamba/mamba_utils.py`): GDN conv
    `(2·k_heads·k_dim + v_heads·v_dim, kernel − 1)`, ssm `(v_heads, v_dim, k_dim)`; Mamba1 conv
    `(inner, d_conv − 1)`, ssm `(inner, d_state)`; Mamba2 conv `(inner + 2·n_groups·d_state,
    kernel − 1)`, ssm `(n_heads, head_dim, d_state)`. The first dimension is the one TP splits
    (vLLM stores the conv state transposed, same bytes)."""
    mt = cfg["model_type"]
    if mt == "qwen3_next":
        k_heads, v_heads = _int(cfg, "linear_num_key_heads"), _int(cfg, "linear_num_value_heads")
        k_dim, v_dim = _int(cfg, "linear_key_head_dim"), _int(cfg, "linear_value_head_dim")
        kernel = _int(cfg, "linear_conv_kernel_dim")
        conv_dim = 2 * k_heads * k_dim + v_heads * v_dim
        return MambaSpec("gdn", (conv_dim, kernel - 1), (v_heads, v_dim, k_dim))
    if mt == "jamba":
        inner = _int(cfg, "mamba_expand") * _int(cfg, "hidden_size")
        return MambaSpec("mamba1", (inner, _int(cfg, "mamba_d_conv") - 1), (inner, _int(cfg, "mamba_d_state")))
    # nemotron_h / bamba style Mamba2
    n_heads, head_dim = _int(cfg, "mamba_num_heads"), _int(cfg, "mamba_head_dim")
    groups, d_state = _int(cfg, "n_groups", "mamba_n_groups"), _int(cfg, "ssm_state_size", "mamba_d_state")
    inner = n_heads * head_dim
    kernel = _int(cfg, "conv_kernel", "mamba_d_conv")
    return MambaSpec("mamba2", (inner + 2 * groups * d_state, kernel - 1), (n_heads, head_dim, d_state))


# Nemotron-H `hybrid_override_pattern`: M = Mamba2 mixer, * = attention, - = MLP only (no token
# mixer: attention kind "none", no KV and no state), E = MoE only (not modelled).
_NEMOTRON_H_BLOCKS = {"M": "mamba", "*": "full", "-": "none"}


def _hybrid(cfg: Config) -> dict[str, Any]:
    """Attention + Mamba/linear-attention hybrids. Qwen3-Next: gated delta net layers with every
    `full_attention_interval`-th layer gated full attention, MoE MLPs. Nemotron-H: one block per
    `hybrid_override_pattern` character, each layer of vLLM's `make_layers` (MLP-only layers count
    in the layer total and the PP split). Jamba: recognised for KV and state only."""
    spec = _common(cfg)
    mt = cfg["model_type"]
    n_layers = _int(cfg, "num_hidden_layers")
    if mt == "qwen3_next":
        interval = int(cfg.get("full_attention_interval", 4))
        types = cfg.get("layer_types")
        if isinstance(types, list) and len(types) == n_layers:
            kinds = ["full" if t == "full_attention" else "linear" for t in types]
        else:
            kinds = ["full" if (i + 1) % interval == 0 else "linear" for i in range(n_layers)]
        dense_only = set(cfg.get("mlp_only_layers") or [])
        step = int(cfg.get("decoder_sparse_step", 1) or 1)
        n_experts = int(cfg.get("num_experts") or 0)
        is_moe = [n_experts > 0 and i not in dense_only and (i + 1) % step == 0 for i in range(n_layers)]
        layers = tuple(LayerSpec(k, mlp="moe" if m else "dense") for k, m in zip(kinds, is_moe))
        shared = int(cfg.get("shared_expert_intermediate_size") or 0)
        if n_experts:
            spec["moe"] = MoESpec(
                n_experts, _int(cfg, "num_experts_per_tok"), _int(cfg, "moe_intermediate_size"),
                num_shared_experts=1 if shared else 0, shared_intermediate_size=shared, shared_expert_gate=bool(shared),
            )
        spec.update(
            rotary_dim=int(spec["head_dim"] * float(cfg.get("partial_rotary_factor", 1.0))),
            # the Hub checkpoint stores one MTP block (mtp.*) that vLLM loads only for speculative decoding
            num_mtp_layers=int(cfg.get("num_nextn_predict_layers", 1) or 0),
        )
    elif mt == "jamba":
        period, offset = int(cfg.get("attn_layer_period", 8)), int(cfg.get("attn_layer_offset", 4))
        layers = tuple(LayerSpec("full" if i % period == offset else "mamba") for i in range(n_layers))
    else:
        pattern = str(_req(cfg, "hybrid_override_pattern"))
        unknown = sorted(set(pattern) - set(_NEMOTRON_H_BLOCKS))
        if unknown:
            raise PlannerError(f"hybrid_override_pattern block(s) {', '.join(map(repr, unknown))} are not supported yet "
                               "(M, * and - are): use a Nemotron-H model without MoE blocks")
        if len(pattern) != n_layers:
            raise PlannerError(f"hybrid_override_pattern has {len(pattern)} blocks for num_hidden_layers {n_layers}: fix the config.json")
        layers = tuple(LayerSpec(_NEMOTRON_H_BLOCKS[c]) for c in pattern)  # type: ignore[arg-type]
        spec.update(
            gated_mlp=False, mlp_bias=bool(cfg.get("mlp_bias", False)), qkv_bias=bool(cfg.get("attention_bias", False)),
            o_bias=bool(cfg.get("attention_bias", False)), norms_per_layer=1, rotary_dim=0,
            head_dim=int(cfg.get("head_dim") or cfg.get("attention_head_dim") or spec["head_dim"]),
        )
        spec["v_head_dim"] = spec["head_dim"]
    spec.update(layers=layers, mamba=_mamba_state(cfg), qk_norm=mt == "qwen3_next")
    return spec


_FAMILIES: dict[str, Callable[[Config], dict[str, Any]]] = {
    **{mt: _llama_like for mt in (
        "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "granite", "phi3",
    )},
    "mixtral": _mixtral, "qwen2_moe": _qwen_moe, "qwen3_moe": _qwen_moe,
    "deepseek_v2": _deepseek, "deepseek_v3": _deepseek, "kimi_k2": _deepseek,
    "gpt_oss": _gpt_oss, "llama4_text": _llama4, "phi": _phi, "opt": _opt,
    "qwen3_next": _hybrid, "jamba": _hybrid, "nemotron_h": _hybrid,
}
# Families whose weights the tensor builder does not model yet (KV and state only).
WEIGHTS_BY_FORMULA_UNSUPPORTED = frozenset({"jamba"})

# Multimodal wrappers: where the text config lives, and which text model_type it defaults to.
_WRAPPERS: dict[str, str] = {
    "gemma3": "gemma3_text", "llama4": "llama4_text", "mistral3": "mistral", "llava": "llama",
    "llava_next": "llama", "kimi_vl": "deepseek_v3", "qwen2_5_vl": "qwen2", "qwen2_vl": "qwen2",
}


# transformers saves a wrapper's text_config as a diff against the text class's defaults: a
# LLaVA-1.5 text_config names only vocab, context and eps, the rest is LlamaConfig's 7B default.
_NESTED_DEFAULTS: dict[str, Config] = {
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32, "max_position_embeddings": 2048, "tie_word_embeddings": False},
    # MistralConfig (LLaVA-NeXT-Mistral); an explicit null sliding_window in the file still wins
    "mistral": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
                "sliding_window": 4096, "tie_word_embeddings": False},
}
# Text model types that newer transformers write inside a wrapper's text_config, and the family they are.
_TEXT_ALIASES = {"qwen2_vl_text": "qwen2", "qwen2_5_vl_text": "qwen2"}


def supported_model_types() -> list[str]:
    from planner.models import families
    return sorted(set(_FAMILIES) | set(_WRAPPERS) | set(families.model_types()))


def _text_config(config: Config) -> tuple[Config, Config | None]:
    mt = config.get("model_type")
    if not mt:
        raise PlannerError("config.json has no 'model_type': pass a Hugging Face config.json of a decoder model")
    if mt in _WRAPPERS:
        nested = config.get("text_config")
        if nested is not None and not isinstance(nested, dict):
            raise PlannerError("text_config must be a JSON object: pass the model's complete config.json")
        # Qwen2-VL and Qwen2.5-VL uploads keep the text model's fields at the top level
        text = dict(nested) if nested else {k: v for k, v in config.items() if k not in ("vision_config", "model_type")}
        text_type = text.get("model_type") or _WRAPPERS[mt]
        text["model_type"] = _TEXT_ALIASES.get(text_type, text_type)
        for key in ("torch_dtype", "dtype", "quantization_config", "tie_word_embeddings"):
            if key in config and key not in text:
                text[key] = config[key]
        if nested:
            text = {**_NESTED_DEFAULTS.get(text["model_type"], {}), **text}
        return text, config.get("vision_config")
    return config, None


# A vision sub-config names only what differs from its class's defaults, which transformers (and so
# vLLM) fills in: PixtralVisionConfig's and CLIPVisionConfig's.
_VISION_DEFAULTS: dict[str, Config] = {
    "pixtral": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                "image_size": 1024, "patch_size": 16},
    "clip_vision_model": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                          "num_attention_heads": 12, "image_size": 224, "patch_size": 32},
}


def _vision(config: Config, vcfg: Config | None, text_hidden: int) -> VisionSpec | None:
    if vcfg:  # null means "the default", as in text configs
        vcfg = {k: v for k, v in vcfg.items() if v is not None}
        vcfg = {**_VISION_DEFAULTS.get(str(vcfg.get("model_type")), {}), **vcfg}
    if not vcfg or not vcfg.get("hidden_size"):
        return None
    h = int(vcfg["hidden_size"])
    layers = int(vcfg.get("num_hidden_layers", 0))
    patch, image = int(vcfg.get("patch_size", 14)), int(vcfg.get("image_size", 224))
    base = dict(model_type=str(vcfg.get("model_type", "vit")), hidden_size=h,
                intermediate_size=int(vcfg.get("intermediate_size", 4 * h)), num_layers=layers,
                num_heads=int(vcfg.get("num_attention_heads", 1)), patch_size=patch, image_size=image,
                num_channels=int(vcfg.get("num_channels", 3)), position_rows=(image // patch) ** 2)
    builder = _VISION_BUILDERS.get(config.get("model_type", ""))
    return VisionSpec(**{**base, **(builder(config, vcfg, text_hidden, base) if builder else {})})


def _built_layers(feature: Any, num_layers: int) -> int:
    """Encoder blocks vLLM builds: up to the deepest `vision_feature_layer` (llava.py's
    `_get_num_hidden_layers`; a negative index i means num_layers + i + 1)."""
    layers = feature if isinstance(feature, list) else [feature]
    bad = [i for i in layers if not isinstance(i, int) or not -num_layers <= i <= num_layers or i == 0]
    if bad or not layers:
        raise PlannerError(f"vision_feature_layer {feature!r} does not name a layer of the {num_layers}-block vision "
                           f"tower: use indices 1..{num_layers} or -{num_layers}..-1 as the model's config.json has them")
    return max(num_layers + i + 1 if i < 0 else i for i in layers)


def _gemma3_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """SigLIP; Gemma3MultiModalProjector: mm_input_projection_weight [v_hidden, text_hidden] + RMSNorm(v_hidden)."""
    h = base["hidden_size"]
    return dict(projector_replicated_params=h * text_hidden + h,
                tokens_per_image=int(config.get("mm_tokens_per_image") or 0))


def _llama4_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """Llama4VisionModel beyond the generic ViT (vLLM's mllama4.py): a class embedding, one more
    position row and a pre-norm (replicated); a bias-free column-parallel patch projection; the
    pixel-shuffle adapter (fc1 [intermediate -> projector_input_dim], fc2 [projector_input_dim ->
    projector_output_dim], biased when multi_modal_projector_bias: fc1's bias split, fc2's whole) and
    the bias-free projector [vision_output_dim -> text hidden], both split across TP. 871,932,416
    parameters for Llama-4-Scout: the gap between its published count and the text model's."""
    h, ratio = base["hidden_size"], float(vcfg.get("pixel_shuffle_ratio") or 0.5)
    p_in, p_out = int(vcfg.get("projector_input_dim") or 4096), int(vcfg.get("projector_output_dim") or 4096)
    bias = bool(vcfg.get("multi_modal_projector_bias"))
    adapter = base["intermediate_size"] * p_in + p_in * p_out + (p_in if bias else 0)
    return dict(position_rows=base["position_rows"] + 1, pre_norm=True, extra_params=h + (p_out if bias else 0),
                adapter_params=adapter, patch_linear=True,
                projector_column_params=int(vcfg.get("vision_output_dim") or p_out) * text_hidden,
                tokens_per_image=int(base["position_rows"] * ratio * ratio))


def _mlp_projector(v_in: int, mid: int, out: int, bias: bool) -> dict:
    """A two-layer projector vLLM splits across TP: linear_1 [v_in -> mid] column-parallel (its bias
    split), linear_2 [mid -> out] row-parallel (its bias whole on every rank)."""
    return dict(projector_column_params=v_in * mid + mid * out + (mid if bias else 0),
                projector_replicated_params=out if bias else 0)


# PixtralHFVisionModel: bias-free conv patches, RMSNorm ln_pre, gated bias-free blocks with 2-D
# rotary positions (no table), no post-norm.
_PIXTRAL_TOWER = dict(position_rows=0, mlp_gated=True, linear_bias=False, patch_bias=False, norm="rms",
                      pre_norm=True, post_norm=False)


def _mistral3_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """The Pixtral tower; Mistral3MultiModalProjector: RMSNorm and the patch merger's nn.Linear
    [v_hidden x merge^2 -> v_hidden], replicated, then linear_1 / linear_2 [-> text hidden], biased
    when multimodal_projector_bias."""
    h, merge = base["hidden_size"], int(config.get("spatial_merge_size") or 2)
    proj = _mlp_projector(h, text_hidden, text_hidden, bool(config.get("multimodal_projector_bias", False)))
    proj["projector_replicated_params"] += h + h * merge * merge * h
    built = _built_layers(config.get("vision_feature_layer", -1), base["num_layers"])
    return dict(num_layers=built, skipped_layers=base["num_layers"] - built, **_PIXTRAL_TOWER, **proj,
                tokens_per_image=(base["image_size"] // base["patch_size"] // merge) ** 2)


def _llava_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """LLaVA and LLaVA-NeXT (vLLM's llava.py, llava_next.py): the CLIP, SigLIP or Pixtral tower up to the
    deepest feature layer and never its post-norm (require_post_norm=False); the features of every
    listed layer are concatenated into LlavaMultiModalProjector's linear_1 (column) and linear_2
    (row), biased when multimodal_projector_bias (default true); LLaVA-NeXT adds image_newline
    [text hidden], replicated."""
    h, next_ = base["hidden_size"], config.get("model_type") == "llava_next"
    feature = config.get("vision_feature_layer", -2)
    v_in = h * (len(feature) if isinstance(feature, list) and next_ else 1)
    proj = _mlp_projector(v_in, text_hidden, text_hidden, bool(config.get("multimodal_projector_bias", True)))
    proj["projector_replicated_params"] += text_hidden if next_ else 0  # image_newline
    built = _built_layers(feature, base["num_layers"])
    out = dict(num_layers=built, post_norm=False, skipped_layers=base["num_layers"] - built, skipped_post_norm=True,
               **proj)
    if base["model_type"] == "clip_vision_model":
        # CLIP: a class embedding and its position row, a bias-free patch conv, pre_layrnorm
        out.update(position_rows=base["position_rows"] + 1, extra_params=h, patch_bias=False, pre_norm=True)
    elif base["model_type"] == "pixtral":  # LLaVA over a Pixtral tower (pixtral-12b); it has no post-norm
        out.update(_PIXTRAL_TOWER, skipped_post_norm=False)
    return out


def _kimi_vl_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """MoonViT (vLLM's moonvit.py): biased conv patches, a learned 2-D position table of
    init_pos_emb_height x init_pos_emb_width rows, biased LayerNorm blocks, a final LayerNorm.
    KimiVLMultiModalProjector, replicated: LayerNorm(v_hidden), linear_1 [v x k -> v x k] and
    linear_2 [v x k -> text hidden], both biased, where k is the merge kernel's area."""
    h, patch = base["hidden_size"], base["patch_size"]
    kh, kw = (int(k) for k in vcfg.get("merge_kernel_size") or (2, 2))
    merged = h * kh * kw
    rows = int(vcfg.get("init_pos_emb_height") or 64) * int(vcfg.get("init_pos_emb_width") or 64)
    # The profile's dummy image (kimi_vl.py's MaxImageTokenMeta, 1024 x 1024) is shrunk to the
    # processor's in_token_limit (4096 patches, preprocessor_config.json) and padded to the kernel.
    edge, limit = 1024, 4096
    if (edge // patch) ** 2 > limit:
        edge = int(edge * math.sqrt(limit / (edge // patch) ** 2))
    edge = -(-edge // (kh * patch)) * kh * patch
    return dict(position_rows=rows, image_size=edge, tokens_per_image=(edge // patch // kh) * (edge // patch // kw),
                projector_replicated_params=2 * h + merged * merged + merged + merged * text_hidden + text_hidden)


def _qwen_vl_vision(config: Config, vcfg: Config, text_hidden: int, base: dict) -> dict:
    """Qwen2-VL / Qwen2.5-VL (vLLM's qwen2_vl.py, qwen2_5_vl.py): bias-free Conv3d patches over
    temporal_patch_size frames, rotary positions (no table, no pre/post norm), `depth` blocks with
    biased QKV/proj and MLP (Qwen2-VL: LayerNorm, fc1/fc2 of embed_dim x mlp_ratio; Qwen2.5-VL:
    RMSNorm, gated intermediate_size). The patch merger: ln_q replicated, mlp.0 [4d -> 4d] column,
    mlp.2 [4d -> out] row, both biased, where out is the text hidden size (Qwen2-VL's vision
    hidden_size, Qwen2.5-VL's out_hidden_size). vLLM profiles the encoder with the image of the most
    features: max_pixels as a square (12845056, the Qwen checkpoints' preprocessor_config.json; a
    --mm-processor-kwargs override is not modelled), or a video of up to 14 such frames."""
    v25 = config.get("model_type") == "qwen2_5_vl"
    d = int((vcfg.get("hidden_size") if v25 else vcfg.get("embed_dim")) or 1280)
    # transformers' Qwen2_5_VLVisionConfig / Qwen2VLVisionConfig defaults where the config is silent
    inter = int(vcfg.get("intermediate_size") or 3420) if v25 else int(d * float(vcfg.get("mlp_ratio") or 4))
    out = int((vcfg.get("out_hidden_size") if v25 else vcfg.get("hidden_size")) or text_hidden)
    patch, merge = int(vcfg.get("patch_size") or 14), int(vcfg.get("spatial_merge_size") or 2)
    edge = int(math.isqrt(12845056)) // (patch * merge) * patch * merge
    proj = _mlp_projector(d * merge * merge, d * merge * merge, out, True)
    proj["projector_replicated_params"] += d if v25 else 2 * d  # ln_q: RMSNorm / LayerNorm
    return dict(hidden_size=d, intermediate_size=inter, num_layers=int(vcfg.get("depth") or 0),
                num_heads=int(vcfg.get("num_heads") or 16), patch_size=patch, image_size=edge,
                num_channels=int(vcfg.get("in_channels") or vcfg.get("in_chans") or 3),
                patch_frames=int(vcfg.get("temporal_patch_size") or 2), takes_video=True, position_rows=0,
                mlp_gated=v25, norm="rms" if v25 else "layer", patch_bias=False, post_norm=False,
                **proj,
                tokens_per_image=(edge // patch // merge) ** 2)


_VISION_BUILDERS = {"gemma3": _gemma3_vision, "llama4": _llama4_vision, "mistral3": _mistral3_vision,
                    "llava_next": _llava_vision, "llava": _llava_vision, "kimi_vl": _kimi_vl_vision,
                    "qwen2_vl": _qwen_vl_vision, "qwen2_5_vl": _qwen_vl_vision}


def normalize(config: Config, *, quant_files: dict[str, Config] | None = None) -> ModelSpec:
    """Build the `ModelSpec` of a Hugging Face config (plus quantization sidecar files, if any)."""
    check_config(config)
    from planner.models import families  # one module per newer family; they build on this module's helpers
    family = families.find(str(config.get("model_type") or ""))
    if family is not None:
        return family.normalize(config, quant_files or {})
    text, vision_cfg = _text_config(config)
    mt = text.get("model_type")
    if mt not in _FAMILIES:
        raise PlannerError(
            f"unknown model_type {mt!r}: supported are {', '.join(supported_model_types())}; "
            "open an issue with the config.json to add it"
        )
    cfg = {**_DEFAULTS.get(mt, {}), **{k: v for k, v in text.items() if v is not None}}
    fields = _FAMILIES[mt](cfg)
    archs = config.get("architectures") or [mt]
    dtype = str(config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype") or "float32")
    notes = []
    vision = _vision(config, vision_cfg, fields["hidden_size"])
    if config.get("model_type") in _WRAPPERS and vision is None:
        notes.append(f"{archs[0]} is multimodal but config.json has no vision_config: the vision tower's weights "
                     "are not counted (pass the complete config.json)")
    if vision is not None and vision.num_layers == 0:
        notes.append(f"the vision_config of {archs[0]} names no encoder blocks: the vision tower's weights are not counted")
    if not (config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype")):
        notes.append("config has no torch_dtype: assumed float32, as transformers does")
    spec = ModelSpec(
        model_type=mt, architecture=str(archs[0]), dtype=dtype.replace("torch.", ""),
        vision=vision,
        quant=parse_quantization(config, quant_files or {}), notes=tuple(notes), **fields,
    )
    check_spec(spec)
    return spec
