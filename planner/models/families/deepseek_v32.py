"""DeepSeek sparse attention (DSA): DeepSeek-V3.2 (`deepseek_v32`) and GLM-5 (`glm_moe_dsa`), as
vLLM's deepseek_v2.py builds them.

The model is DeepSeek-V3's (MLA, MoE with a shared expert and `noaux_tc` routing, an MTP layer
stored at index num_hidden_layers; GLM-5's shares the main embedding and head) plus, in every
layer that has `index_topk` attention, the lightning indexer: `wq_b` [index_n_heads x index_head_dim,
q_lora_rank] (a replicated linear,
quantized like the others), `wk` [index_head_dim, hidden] and `weights_proj` [index_n_heads,
hidden] (fused by vLLM into one replicated bf16 `wk_weights_proj`: an fp8 checkpoint's wk is
upcast at load and its block scale dropped, so that scale is shown as not loaded) and `k_norm`, a
LayerNorm with bias. Every layer builds one unless `index_topk_freq` / `index_skip_topk_offset` /
`index_topk_pattern` mark it shared (GLM-5.2/5.3's IndexShare: 21 of 78 layers keep an indexer; the
MTP layer always has one). The indexer's key cache per token is `planner.kv_bytes.indexer_bytes_per_token`,
in the layers that have one; vLLM puts every latent and indexer page in one uniform-type group
(`UniformTypeKVCacheSpecs`: a block is the sum of all their pages, no padding).

Block-scaled fp8 checkpoints with `scale_fmt: ue8m0` store the scales as F8_E8M0, which the Hub's
safetensors total does not count (DeepSeek-V3.2: 685,355,329,792 = the tensors without the
41,591,584 scales; the V3.2-Exp upload, F32 scales, 685,396,921,376 with them).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.errors import PlannerError
from planner.models import normalize as base
from planner.models import tensors as T
from planner.models.families import register, register_tensors
from planner.models.families.common import finish, int_field
from planner.models.spec import ModelSpec

Config = dict[str, Any]
SPEC_TYPES = ("deepseek_v32", "glm_moe_dsa")
_FIX = "fix the config.json"


def _shared_layers(cfg: Config) -> tuple[int, ...]:
    """The decoder layers without an indexer, as `DeepseekV32Attention` decides: with
    `index_topk_pattern` the layers marked "S"; else those where
    max(i - index_skip_topk_offset + 1, 0) % index_topk_freq != 0 (offset default 2, freq 1: none).
    GLM-5.2's `indexer_types` ("full" / "shared" per layer) must say the same."""
    n = int_field(cfg, "num_hidden_layers")
    pattern = cfg.get("index_topk_pattern")
    if pattern is not None:
        if not isinstance(pattern, str) or len(pattern) != n or set(pattern) - {"S", "F"}:
            raise PlannerError(
                f"config field 'index_topk_pattern' must be a string of {n} 'F' (indexer) / 'S' (shared) "
                f"letters, one per layer: {_FIX}"
            )
        shared = tuple(i for i, c in enumerate(pattern) if c == "S")
    else:
        freq = 1 if cfg.get("index_topk_freq") is None else cfg["index_topk_freq"]
        offset = 2 if cfg.get("index_skip_topk_offset") is None else cfg["index_skip_topk_offset"]
        for key, value, low in (("index_topk_freq", freq, 1), ("index_skip_topk_offset", offset, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise PlannerError(f"config field {key!r} needs an integer >= {low}, got {value!r}: {_FIX}")
        shared = tuple(i for i in range(n) if max(i - offset + 1, 0) % freq)
    types = cfg.get("indexer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != n or set(types) - {"full", "shared"}:
            raise PlannerError(
                f"config field 'indexer_types' must list 'full' or 'shared' for each of the {n} layers: {_FIX}"
            )
        if tuple(i for i, t in enumerate(types) if t == "shared") != shared:
            raise PlannerError(
                "config field 'indexer_types' contradicts index_topk_freq / index_skip_topk_offset / "
                f"index_topk_pattern (the layers vLLM builds an indexer in): {_FIX}"
            )
    return shared


def _indexer_fields(cfg: Config) -> tuple[int, int]:
    if cfg.get("index_topk") is None:
        raise PlannerError(
            f"config.json (model_type {cfg['model_type']!r}) has no 'index_topk': a sparse-attention "
            f"model needs its indexer's size; {_FIX}"
        )
    heads, dim = int_field(cfg, "index_n_heads"), int_field(cfg, "index_head_dim")
    if dim % 128:
        raise PlannerError(
            f"config field 'index_head_dim' {dim} must be a multiple of 128 (vLLM keeps one fp32 scale "
            f"per 128 cached key values): {_FIX}"
        )
    return heads, dim


@register(*SPEC_TYPES, name="deepseek_v32")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    mt = config["model_type"]
    heads, dim = _indexer_fields(config)
    cfg = {k: v for k, v in config.items() if v is not None}
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    cfg.update(model_type="deepseek_v3", rope_scaling=rope if isinstance(rope, dict) and rope.get("factor") else None)
    fields = base._deepseek(cfg)
    shared = _shared_layers(config)
    mla = dataclasses.replace(fields["mla"], index_n_heads=heads, index_head_dim=dim, index_shared_layers=shared)
    fields.update(model_type=mt, mla=mla)
    if fields["mla"].q_lora_rank is None:
        raise PlannerError(
            f"config.json (model_type {mt!r}) has no 'q_lora_rank': the indexer's wq_b reads the query latent; {_FIX}"
        )
    spec = finish(config, config, fields, quant_files)
    qc = config.get("quantization_config")
    if spec.quant is not None and isinstance(qc, dict) and qc.get("scale_fmt") == "ue8m0":
        spec = dataclasses.replace(spec, quant=dataclasses.replace(spec.quant, scale_dtype="ue8m0"))
    return spec


def _indexer(spec: ModelSpec, p: str, stage: Any, loaded: bool) -> list[T.Tensor]:
    m = spec.mla
    assert m is not None and m.q_lora_rank
    h, heads, dim = spec.hidden_size, m.index_n_heads, m.index_head_dim
    comp = "attention" if loaded else "mtp"
    out = [
        T.Tensor(f"{p}.wq_b.weight", (heads * dim, m.q_lora_rank), comp, "replicated", stage, True, loaded=loaded),
        T.Tensor(f"{p}.wk.weight", (dim, h), comp, "replicated", stage, loaded=loaded),
        T.Tensor(f"{p}.weights_proj.weight", (heads, h), comp, "replicated", stage, loaded=loaded),
        T.Tensor(f"{p}.k_norm.weight", (dim,), "norms" if loaded else comp, "replicated", stage, loaded=loaded),
        T.Tensor(f"{p}.k_norm.bias", (dim,), "norms" if loaded else comp, "replicated", stage, loaded=loaded),
    ]
    q = spec.quant
    # wk's block scale, dropped when vLLM upcasts wk; F8_E8M0 scales are not in the Hub's total (module doc)
    if q is not None and q.method == "fp8" and q.block_shape and q.scale_dtype != "ue8m0":
        bo, bi = q.block_shape
        out.append(
            T.Tensor(
                f"{p}.wk.weight_scale_inv",
                (-(-dim // bo), -(-h // bi)),
                comp,
                "replicated",
                stage,
                loaded=False,
                stored_dtype="float32",
            )
        )
    return out


@register_tensors(*SPEC_TYPES)
def tensors(spec: ModelSpec) -> list[T.Tensor]:
    """DeepSeek-V3's tensors with an indexer in every decoder layer that has one and in the MTP layer
    (vLLM builds one there whatever the pattern)."""
    out = T.from_spec(dataclasses.replace(spec, model_type="deepseek_v3"))
    if spec.model_type == "glm_moe_dsa":  # GLM-5's MTP layer stores no embedding or head of its own
        mtp = tuple(f"model.layers.{spec.num_layers + j}." for j in range(spec.num_mtp_layers))
        out = [
            t for t in out if not (t.name.startswith(mtp) and t.name.endswith(("embed_tokens.weight", "head.weight")))
        ]
    shared = set(spec.mla.index_shared_layers) if spec.mla else set()
    for i in range(spec.num_layers):
        if i not in shared:
            out += _indexer(spec, f"model.layers.{i}.self_attn.indexer", i, True)
    for j in range(spec.num_mtp_layers):
        out += _indexer(spec, f"model.layers.{spec.num_layers + j}.self_attn.indexer", "last", False)
    return out
