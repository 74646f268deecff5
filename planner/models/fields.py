"""Readers of a Hugging Face text config that every model family shares: required and positive
fields with one-line errors, the context limit and vLLM's RoPE rule for it, the attention layer
pattern, and the fields every decoder has. Pure: a config dict in, values out.
"""

from __future__ import annotations

from typing import Any, Callable

from planner.errors import PlannerError
from planner.models.spec import LayerSpec

Config = dict[str, Any]

# Keys vLLM reads, in `_get_and_verify_max_len`, for the model's context limit.
MAX_LEN_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)


def required(cfg: Config, *names: str) -> Any:
    """The first of `names` present in the config, or a one-line error naming the field."""
    for name in names:
        if cfg.get(name) is not None:
            return cfg[name]
    model_type = cfg.get("model_type", "?")
    raise PlannerError(
        f"config.json (model_type {model_type!r}) has no {names[0]!r}: pass the model's complete config.json"
    )


def positive_int(cfg: Config, *names: str) -> int:
    value = required(cfg, *names)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise PlannerError(f"config field {names[0]!r} must be a positive integer, got {value!r}: fix the config.json")
    return value


def max_len_base(cfg: Config) -> int:
    """The context limit before RoPE scaling: `model_max_length` if set, else the smallest of
    vLLM's length keys, else 2048."""
    if isinstance(cfg.get("model_max_length"), int) and cfg["model_max_length"] > 0:
        return int(cfg["model_max_length"])
    found = [
        int(cfg[k]) for k in MAX_LEN_KEYS if isinstance(cfg.get(k), (int, float)) and not isinstance(cfg.get(k), bool)
    ]
    if any(v <= 0 for v in found):
        raise PlannerError(
            f"config has a non-positive context length ({min(found)}): fix max_position_embeddings in the config.json"
        )
    return min(found) if found else 2048


def scaled_max_len(
    base: int,
    rope: dict[str, Any] | None,
    model_type: str,
    original_max: int | None,
    *,
    not_multiplied: tuple[str, ...],
    yarn_uses_original: bool,
    longrope_original: bool,
    skipped_types: tuple[str, ...],
) -> int:
    """vLLM's `_get_and_verify_max_len` RoPE rule; the rules of each release are release facts
    (`rope_scaling_*`, `yarn_uses_original_max_position`, `longrope_defaults_to_original`)."""
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


def newest_release_max_len(base: int, rope: dict[str, Any] | None, model_type: str, original_max: int | None) -> int:
    """The context limit under the newest release's RoPE rules (the spec's default; a plan applies its
    own release's rules to `max_len_base` in `budget_rules.default_max_model_len`)."""
    from planner import releases  # release data, read once and cached

    rel = releases.get(None)
    return scaled_max_len(
        base,
        rope,
        model_type,
        original_max,
        not_multiplied=tuple(rel.rope_scaling_types_not_multiplied),
        yarn_uses_original=rel.yarn_uses_original_max_position,
        longrope_original=rel.longrope_defaults_to_original,
        skipped_types=tuple(rel.rope_scaling_skipped_model_types),
    )


def layer_types_of(cfg: Config, n_layers: int) -> list[str]:
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


def attention_layers(cfg: Config, n_layers: int, mlp: Callable[[int], str]) -> tuple[LayerSpec, ...]:
    window = cfg.get("sliding_window")
    out = []
    for i, t in enumerate(layer_types_of(cfg, n_layers)):
        if t == "sliding_attention":
            out.append(LayerSpec("sliding", window=int(required(cfg, "sliding_window")), mlp=mlp(i)))
        elif t in ("full_attention", "attention"):
            out.append(LayerSpec("full", mlp=mlp(i)))
        else:
            raise PlannerError(f"layer type {t!r} is not supported yet: use a model with full or sliding attention")
    del window
    return tuple(out)


def dense_mlp(_: int) -> str:
    return "dense"


def common_fields(cfg: Config) -> dict[str, Any]:
    """Fields every decoder shares: sizes, heads, head size (explicit `head_dim` wins, as in vLLM)."""
    hidden = positive_int(cfg, "hidden_size", "d_model", "n_embd")
    heads = positive_int(cfg, "num_attention_heads", "n_head")
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim <= 0:
        raise PlannerError(f"head_dim must be a positive integer, got {head_dim!r}: fix the config.json")
    if hidden % heads and not cfg.get("head_dim"):
        raise PlannerError(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}: fix the config.json")
    return dict(
        hidden_size=hidden,
        vocab_size=positive_int(cfg, "vocab_size"),
        num_heads=heads,
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        v_head_dim=int(head_dim),
        intermediate_size=int(cfg.get("intermediate_size") or cfg.get("ffn_dim") or 4 * hidden),
        max_position_embeddings=int(cfg.get("max_position_embeddings") or 2048),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        rope_scaling=rope_of(cfg),
        rotary_dim=int(head_dim),
        max_len_base=max_len_base(cfg),
        original_max_position_embeddings=cfg.get("original_max_position_embeddings"),
        max_model_len_default=newest_release_max_len(
            max_len_base(cfg), rope_of(cfg), cfg["model_type"], cfg.get("original_max_position_embeddings")
        ),
    )


def rope_of(cfg: Config) -> dict[str, Any] | None:
    rope = cfg.get("rope_scaling")
    if rope is not None and not isinstance(rope, dict):
        raise PlannerError(f"rope_scaling must be a JSON object or null, got {rope!r}: fix the config.json")
    if rope and rope.get("factor") is not None and not isinstance(rope["factor"], (int, float)):
        raise PlannerError(f"rope_scaling.factor must be a number, got {rope['factor']!r}: fix the config.json")
    return rope
