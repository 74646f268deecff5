"""Hugging Face `config.json` -> `ModelSpec`, one small builder per model family.

Configs omit fields whose value is the transformers default; `_DEFAULTS` restores the ones that
change the numbers (Gemma 3's vocabulary, Gemma's tied embeddings...). An architecture this module
does not know is an error naming what is missing, never a guess.
"""

from __future__ import annotations

from typing import Any, Callable

from planner.errors import PlannerError
from planner.models.checks import check_config, check_spec
from planner.models.fields import (
    Config,
    attention_layers,
    common_fields,
    dense_mlp,
    layer_types_of,  # noqa: F401
    positive_int,
)
from planner.models.hybrids import hybrid_fields
from planner.models.quantization import parse_quantization
from planner.models.spec import LayerSpec, MLASpec, ModelSpec, MoESpec
from planner.models.vision import vision_spec

# the helpers families/ builds on (planner/models/families/*: `base._int`, `base._hybrid`, `base._deepseek`)
_int = positive_int
_hybrid = hybrid_fields

# transformers' defaults for fields configs leave out, where they change parameter or KV counts.
_DEFAULTS: dict[str, Config] = {
    "gemma": {"tie_word_embeddings": True, "head_dim": 256},
    "gemma2": {"tie_word_embeddings": True, "head_dim": 256, "sliding_window": 4096},
    # Gemma3TextConfig (transformers/models/gemma3/configuration_gemma3.py): the 4B/12B configs on the Hub
    # name only hidden/intermediate sizes, layers, sliding window and RoPE scaling.
    "gemma3_text": {
        "tie_word_embeddings": True,
        "head_dim": 256,
        "vocab_size": 262208,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
        "max_position_embeddings": 131072,
        "num_key_value_heads": 4,
        "num_attention_heads": 8,
        "query_pre_attn_scalar": 256,
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
    },
    "granite": {"tie_word_embeddings": True},
    "phi": {"tie_word_embeddings": False, "partial_rotary_factor": 0.5},
    "opt": {"tie_word_embeddings": True},
    "llama4_text": {"interleave_moe_layer_step": 1, "use_qk_norm": True},
}


def _llama_like(cfg: Config) -> dict[str, Any]:
    """Llama, Mistral, Qwen2/3, Gemma 1/2/3, Granite, Phi-3 and the dense part of the MoE families."""
    mt = cfg["model_type"]
    n_layers = positive_int(cfg, "num_hidden_layers")
    spec = common_fields(cfg)
    spec.update(
        layers=attention_layers(cfg, n_layers, dense_mlp),
        qkv_bias=bool(cfg.get("attention_bias", mt in ("qwen2", "qwen2_moe"))),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        qk_norm=mt in ("qwen3", "qwen3_moe", "gemma3_text"),
        norms_per_layer=4 if mt in ("gemma2", "gemma3_text") else 2,
        fused_qkv=mt == "phi3",
        fused_gate_up=mt == "phi3",
        checkpoint_rotary_buffers=mt == "llama" and cfg.get("_checkpoint_rotary_buffers", False),
    )
    spec["o_bias"] = spec["qkv_bias"] and mt not in ("qwen2", "qwen2_moe")
    return spec


def _moe_layers(cfg: Config, spec: dict[str, Any], is_moe: Callable[[int], bool]) -> None:
    base = spec["layers"]
    spec["layers"] = tuple(
        LayerSpec(l.attention, l.window, "moe" if is_moe(i) else "dense") for i, l in enumerate(base)
    )


def _mixtral(cfg: Config) -> dict[str, Any]:
    spec = _llama_like(cfg)
    spec["moe"] = MoESpec(
        positive_int(cfg, "num_local_experts"), positive_int(cfg, "num_experts_per_tok"), spec["intermediate_size"]
    )
    _moe_layers(cfg, spec, lambda i: True)
    return spec


def _qwen_moe(cfg: Config) -> dict[str, Any]:
    spec = _llama_like(cfg)
    shared = int(cfg.get("shared_expert_intermediate_size") or 0)
    spec["moe"] = MoESpec(
        positive_int(cfg, "num_experts"),
        positive_int(cfg, "num_experts_per_tok"),
        positive_int(cfg, "moe_intermediate_size"),
        num_shared_experts=1 if shared else 0,
        shared_intermediate_size=shared,
        shared_expert_gate=bool(shared),
    )
    step = int(cfg.get("decoder_sparse_step", 1) or 1)
    dense_only = set(cfg.get("mlp_only_layers") or [])
    _moe_layers(cfg, spec, lambda i: i not in dense_only and (i + 1) % step == 0)
    return spec


def _deepseek(cfg: Config) -> dict[str, Any]:
    spec = common_fields(cfg)
    n_layers = positive_int(cfg, "num_hidden_layers")
    mla = MLASpec(
        q_lora_rank=cfg.get("q_lora_rank"),
        kv_lora_rank=positive_int(cfg, "kv_lora_rank"),
        qk_nope_head_dim=positive_int(cfg, "qk_nope_head_dim"),
        qk_rope_head_dim=positive_int(cfg, "qk_rope_head_dim"),
        v_head_dim=positive_int(cfg, "v_head_dim"),
    )
    first_dense = int(cfg.get("first_k_dense_replace", 0))
    freq = int(cfg.get("moe_layer_freq", 1) or 1)
    n_experts = cfg.get("n_routed_experts")
    moe_layer = (lambda i: i >= first_dense and i % freq == 0) if n_experts else (lambda i: False)
    n_shared = int(cfg.get("n_shared_experts") or 0)
    moe_size = int(cfg.get("moe_intermediate_size") or 0)
    spec.update(
        layers=tuple(LayerSpec("mla", mlp="moe" if moe_layer(i) else "dense") for i in range(n_layers)),
        mla=mla,
        head_dim=mla.qk_nope_head_dim + mla.qk_rope_head_dim,
        v_head_dim=mla.v_head_dim,
        num_kv_heads=spec["num_heads"],
        rotary_dim=mla.qk_rope_head_dim,
        num_mtp_layers=int(cfg.get("num_nextn_predict_layers") or 0),
    )
    if n_experts:
        spec["moe"] = MoESpec(
            int(n_experts),
            positive_int(cfg, "num_experts_per_tok"),
            moe_size,
            num_shared_experts=n_shared,
            shared_intermediate_size=n_shared * moe_size,
            router_correction_bias=cfg.get("topk_method") == "noaux_tc",
        )
    return spec


def _gpt_oss(cfg: Config) -> dict[str, Any]:
    spec = _llama_like(cfg)
    spec.update(qkv_bias=True, o_bias=True)
    spec["moe"] = MoESpec(
        positive_int(cfg, "num_local_experts"),
        positive_int(cfg, "num_experts_per_tok", "experts_per_token"),
        spec["intermediate_size"],
        router_bias=True,
        expert_bias=True,
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
        LayerSpec(
            "chunked" if (no_rope[i] and chunk) else "full",
            window=chunk if (no_rope[i] and chunk) else None,
            mlp="moe" if (i + 1) % step == 0 else "dense",
        )
        for i in range(n_layers)
    )
    spec["intermediate_size"] = int(cfg.get("intermediate_size_mlp") or spec["intermediate_size"])
    expert_size = positive_int(cfg, "intermediate_size")
    spec["moe"] = MoESpec(
        positive_int(cfg, "num_local_experts"),
        positive_int(cfg, "num_experts_per_tok"),
        expert_size,
        num_shared_experts=1,
        shared_intermediate_size=expert_size,
    )
    spec.update(qk_norm=bool(cfg.get("use_qk_norm", True)), qk_norm_params=False)
    return spec


def _phi(cfg: Config) -> dict[str, Any]:
    """Phi-2: parallel attention and MLP under one LayerNorm, biases everywhere, partial rotary."""
    spec = common_fields(cfg)
    n_layers = positive_int(cfg, "num_hidden_layers")
    spec.update(
        layers=tuple(LayerSpec("full") for _ in range(n_layers)),
        gated_mlp=False,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        norm="layer",
        norms_per_layer=1,
        lm_head_bias=True,
        rotary_dim=int(spec["head_dim"] * float(cfg.get("partial_rotary_factor", 0.5))),
    )
    return spec


def _opt(cfg: Config) -> dict[str, Any]:
    spec = common_fields(cfg)
    n_layers = positive_int(cfg, "num_hidden_layers")
    if cfg.get("word_embed_proj_dim", spec["hidden_size"]) != spec["hidden_size"]:
        raise PlannerError(
            "OPT with word_embed_proj_dim != hidden_size (OPT-350m) is not supported yet: use another OPT size"
        )
    spec.update(
        layers=tuple(LayerSpec("full") for _ in range(n_layers)),
        gated_mlp=False,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        norm="layer",
        learned_positions=spec["max_position_embeddings"] + 2,
        rotary_dim=0,
        intermediate_size=positive_int(cfg, "ffn_dim"),
    )
    return spec


_FAMILIES: dict[str, Callable[[Config], dict[str, Any]]] = {
    **{
        mt: _llama_like
        for mt in (
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "granite",
            "phi3",
        )
    },
    "mixtral": _mixtral,
    "qwen2_moe": _qwen_moe,
    "qwen3_moe": _qwen_moe,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "kimi_k2": _deepseek,
    "gpt_oss": _gpt_oss,
    "llama4_text": _llama4,
    "phi": _phi,
    "opt": _opt,
    "qwen3_next": hybrid_fields,
    "jamba": hybrid_fields,
    "nemotron_h": hybrid_fields,
}
# Families whose weights the tensor builder does not model yet (KV and state only).
WEIGHTS_BY_FORMULA_UNSUPPORTED = frozenset({"jamba"})

# Multimodal wrappers: where the text config lives, and which text model_type it defaults to.
_WRAPPERS: dict[str, str] = {
    "gemma3": "gemma3_text",
    "llama4": "llama4_text",
    "mistral3": "mistral",
    "llava": "llama",
    "llava_next": "llama",
    "kimi_vl": "deepseek_v3",
    "qwen2_5_vl": "qwen2",
    "qwen2_vl": "qwen2",
}


# transformers saves a wrapper's text_config as a diff against the text class's defaults: a
# LLaVA-1.5 text_config names only vocab, context and eps, the rest is LlamaConfig's 7B default.
_NESTED_DEFAULTS: dict[str, Config] = {
    "llama": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
    },
    # MistralConfig (LLaVA-NeXT-Mistral); an explicit null sliding_window in the file still wins
    "mistral": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
        "tie_word_embeddings": False,
    },
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
    vision = vision_spec(config, vision_cfg, fields["hidden_size"])
    if config.get("model_type") in _WRAPPERS and vision is None:
        notes.append(
            f"{archs[0]} is multimodal but config.json has no vision_config: the vision tower's weights "
            "are not counted (pass the complete config.json)"
        )
    if vision is not None and vision.num_layers == 0:
        notes.append(
            f"the vision_config of {archs[0]} names no encoder blocks: the vision tower's weights are not counted"
        )
    if not (config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype")):
        notes.append("config has no torch_dtype: assumed float32, as transformers does")
    spec = ModelSpec(
        model_type=mt,
        architecture=str(archs[0]),
        dtype=dtype.replace("torch.", ""),
        vision=vision,
        quant=parse_quantization(config, quant_files or {}),
        notes=tuple(notes),
        **fields,
    )
    check_spec(spec)
    return spec
