"""DeepSeek-V4 (`deepseek_v4`: V4-Flash, V4-Pro), as vLLM's models/deepseek_v4 builds it.

Attention: one shared 512-wide KV head (MQA) with a query latent (`wq_a` [q_lora, hidden] fused with
`wkv` [head_dim, hidden], `q_norm`, `kv_norm`, column-parallel `wq_b` [heads x head_dim, q_lora]), a
grouped low-rank output (`wo_a` [o_groups x o_lora, heads x head_dim / o_groups], column-parallel
over the groups, and row-parallel `wo_b` [hidden, o_groups x o_lora]) and an fp32 attention sink per
head. Every layer keeps a sliding window of `sliding_window` tokens; a layer whose
`compress_ratios` entry is 4 or 128 also compresses its KV (a `compressor`: fp32 `ape`
[ratio, coff x head_dim], `wkv` and `wgate` [coff x head_dim, hidden] in bf16, `norm`; coff 2 for
ratio 4's overlapping windows, else 1), and a ratio-4 layer adds a lightning indexer (`wq_b`
[index heads x index_head_dim, q_lora], bf16 `weights_proj` [index heads, hidden] and its own
compressor of index_head_dim). The compress_ratios list may carry one more entry for the MTP
layer, which vLLM builds with ratio 1.

The residual stream is `hc_mult` wide (manifold hyper-connections): each layer stores fp32
`hc_attn_fn` / `hc_ffn_fn` [(2 + hc_mult) x hc_mult, hc_mult x hidden] with their `_base` and
3-element `_scale`, and the model a `hc_head_fn` [hc_mult, hc_mult x hidden] before the head.
FFN: a MoE block in every layer (router `gate` [experts, hidden]; the first `num_hash_layers`
route by a token-id table `tid2eid` [vocab, top-k] int32 instead of the score-correction bias),
routed experts w1/w3/w2 and one shared expert. The MTP layer (`mtp.N`: `e_proj`, `h_proj`, `enorm`,
`hnorm`, a decoder block, its own `norm` and `hc_head`, sharing the main embedding and head) is
loaded only for speculative decoding: not loaded.

Quantization as vLLM's DeepseekV4FP8Config reads the checkpoint: block-wise FP8 linears with UE8M0
scales (`scale_fmt`), routed experts in MXFP4 when `expert_dtype` is fp4 (e2m1 values, one UE8M0
scale per 32) or block FP8 when fp8. The Hub's totals count every stored tensor by its logical
element count and leave the F8_E8M0 scales out (V4-Flash 290,944,616,402; V4-Pro 1,598,839,674,782).
The experts' bytes are the MXFP4 format's (n/2 + n/32); the MoE kernels' own re-layouts are not
modelled. The KV caches (sliding window, compressed, indexer, compressor states) and vLLM's packed
grouping of them are `planner.kv_layout.deepseek_v4_layout`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.errors import PlannerError
from planner.models import tensors as T
from planner.models.families import register, register_tensors
from planner.models.families.common import finish, int_field
from planner.models.fields import common_fields
from planner.models.spec import LayerSpec, ModelSpec, MoESpec, QuantSpec

Config = dict[str, Any]
_FIX = "fix the config.json"
_RATIOS = (0, 1, 4, 128)


def _ratios(cfg: Config, n: int, mtp: int) -> tuple[int, ...]:
    ratios = cfg.get("compress_ratios")
    if not isinstance(ratios, list) or len(ratios) not in {n, n + mtp}:
        got = len(ratios) if isinstance(ratios, list) else repr(ratios)
        raise PlannerError(
            f"config field 'compress_ratios' has {got} entries for num_hidden_layers {n} "
            f"(+ {mtp} MTP): one per layer; {_FIX}"
        )
    bad = [r for r in ratios if r not in _RATIOS or isinstance(r, bool)]
    if bad:
        raise PlannerError(f"config field 'compress_ratios' has {bad[0]!r}: vLLM builds 0/1, 4 or 128; {_FIX}")
    return tuple(max(1, r) for r in ratios[:n])


def _check(cfg: Config) -> tuple[int, tuple[int, ...]]:
    n = int_field(cfg, "num_hidden_layers")
    mtp = int(cfg.get("num_nextn_predict_layers") or 0)
    ratios = _ratios(cfg, n, mtp)
    for key in ("q_lora_rank", "o_lora_rank", "o_groups", "hc_mult", "sliding_window", "qk_rope_head_dim"):
        int_field(cfg, key)
    if 4 in ratios:
        for key in ("index_topk", "index_n_heads", "index_head_dim"):
            int_field(cfg, key, "(ratio-4 layers have an indexer) ")
        if cfg["index_head_dim"] % 128:
            raise PlannerError(
                f"config field 'index_head_dim' must be a multiple of 128 (one fp32 scale per 128): {_FIX}"
            )
    heads, groups = int_field(cfg, "num_attention_heads"), cfg["o_groups"]  # TP must divide o_groups: checks.check_tp
    if heads % groups:
        raise PlannerError(f"config field 'o_groups' {groups} does not divide num_attention_heads {heads}: {_FIX}")
    if int_field(cfg, "head_dim") <= cfg["qk_rope_head_dim"]:
        raise PlannerError(f"config field 'qk_rope_head_dim' must be below head_dim: {_FIX}")
    hashed = cfg.get("num_hash_layers", 0)
    if not isinstance(hashed, int) or isinstance(hashed, bool) or not 0 <= hashed <= n:
        raise PlannerError(f"config field 'num_hash_layers' needs an integer 0..{n}, got {hashed!r}: {_FIX}")
    if cfg.get("expert_dtype", "fp4") not in ("fp4", "fp8"):
        raise PlannerError(f"config field 'expert_dtype' {cfg['expert_dtype']!r}: vLLM reads fp4 or fp8; {_FIX}")
    return n, ratios


def _quant(spec: ModelSpec, cfg: Config) -> QuantSpec | None:
    """DeepseekV4FP8Config: block FP8 for the linears, routed experts in MXFP4 (`expert_dtype` fp4) or
    block FP8; a ModelOpt export's `moe_quant_algo` NVFP4 puts the decoder's routed experts in NVFP4
    (its ignore list keeps attention, shared experts, head and the MTP layer, whose experts stay
    MXFP4). The deepseek-ai uploads store UE8M0 scales (F8_E8M0: not in the Hub's total); NVIDIA's
    export counts them, and stores the MTP experts packed two values per U8."""
    q = spec.quant
    if q is None or q.method != "fp8":
        return q
    qc = cfg.get("quantization_config") or {}
    nvfp4 = str(qc.get("moe_quant_algo") or "").upper() == "NVFP4"
    fp4 = cfg.get("expert_dtype", "fp4") == "fp4"
    scale = None if nvfp4 else "ue8m0" if fp4 else q.scale_dtype
    fp8 = QuantSpec(
        "fp8", 8, block_shape=q.block_shape, scale_granularity=q.scale_granularity, scale_dtype=scale, source=q.source
    )
    mx = QuantSpec("mxfp4", 4, group_size=32, scale_granularity="group", scale_dtype="ue8m0", source=q.source)
    nv = QuantSpec("nvfp4", 4, group_size=16, scale_granularity="group", source=q.source)
    modules = []
    for t in tensors(spec):
        if not t.linear:
            continue
        scheme = fp8
        if ".ffn.experts." in t.name:
            scheme = nv if nvfp4 and t.loaded else mx if fp4 or nvfp4 else fp8
        modules.append((t.name.removesuffix(".weight"), scheme))
    return QuantSpec(
        "fp8",
        8,
        block_shape=q.block_shape,
        scale_granularity=q.scale_granularity,
        vllm_name="deepseek_v4_fp8",
        source=q.source,
        per_module=tuple(modules),
        scale_dtype=scale,
    )


@register("deepseek_v4", name="deepseek_v4")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    n, ratios = _check(config)
    cfg = {k: v for k, v in config.items() if v is not None}
    fields = common_fields(cfg)
    experts = int_field(cfg, "n_routed_experts")
    top_k = int_field(cfg, "num_experts_per_tok")
    if top_k > experts:
        raise PlannerError(f"config field 'num_experts_per_tok' {top_k} exceeds n_routed_experts {experts}: {_FIX}")
    inter, shared = int_field(cfg, "moe_intermediate_size"), int(cfg.get("n_shared_experts") or 0)
    fields.update(
        model_type="deepseek_v4",
        num_kv_heads=1,
        intermediate_size=inter,
        rotary_dim=int(cfg["qk_rope_head_dim"]),
        layers=tuple(LayerSpec("sliding", window=int(cfg["sliding_window"]), mlp="moe") for _ in range(n)),
        moe=MoESpec(
            experts,
            top_k,
            inter,
            num_shared_experts=shared,
            shared_intermediate_size=shared * inter,
            router_correction_bias=True,
        ),
        num_mtp_layers=int(cfg.get("num_nextn_predict_layers") or 0),
        compress_ratios=ratios,
        family_fields=tuple((k, int(cfg.get(k) or 0)) for k in _FAMILY_FIELDS),
    )
    spec = finish(config, config, fields, quant_files, notes=_notes(cfg))
    return dataclasses.replace(spec, quant=_quant(spec, cfg))


def _notes(cfg: Config) -> tuple[str, ...]:
    return (
        "DeepSeek-V4: KV cache dtype fp8_ds_mla whatever --kv-cache-dtype says: vLLM's default attention "
        "(FlashMLA; FlashInfer's SM120 kernels on 12.x) turns auto and fp8 into fp8_ds_mla and refuses "
        "bfloat16/float16 (584 B per cached state, blocks of 256 tokens, block-outermost packing); the plain "
        "bf16/fp8 rows of --attention-backend FLASHINFER_MLA_SPARSE_DSV4 are not modelled",
    )


def _attention(spec: ModelSpec, cfg: Config, p: str, i: Any, ratio: int, comp: str | None, loaded: bool) -> list:
    h, hd, nh = spec.hidden_size, spec.head_dim, spec.num_heads
    ql, ol, og = cfg["q_lora_rank"], cfg["o_lora_rank"], cfg["o_groups"]
    c = comp or "attention"
    norms = comp or "norms"

    def t(name: str, shape: tuple[int, ...], component: str, shard: str, linear: bool = False, **kw) -> T.Tensor:
        return T.Tensor(f"{p}.{name}", shape, component, shard, i, linear, loaded=loaded, **kw)

    out = [
        t("wq_a.weight", (ql, h), c, "replicated", True),
        t("wkv.weight", (hd, h), c, "replicated", True),
        t("q_norm.weight", (ql,), norms, "replicated"),
        t("kv_norm.weight", (hd,), norms, "replicated"),
        t("wq_b.weight", (nh * hd, ql), c, "column", True),
        t("wo_a.weight", (og * ol, nh * hd // og), c, "column", True),
        t("wo_b.weight", (h, og * ol), c, "row", True),
        t("attn_sink", (nh,), c, "heads", stored_dtype="float32"),
    ]
    if ratio > 1:
        out += _compressor(t, "compressor", ratio, hd, h, c, norms)
    if ratio == 4:
        heads, dim = cfg["index_n_heads"], cfg["index_head_dim"]
        out += [
            t("indexer.wq_b.weight", (heads * dim, ql), c, "replicated", True),
            t("indexer.weights_proj.weight", (heads, h), c, "replicated"),
        ]
        out += _compressor(t, "indexer.compressor", ratio, dim, h, c, norms)
    return out


def _compressor(t: Any, p: str, ratio: int, dim: int, h: int, c: str, norms: str) -> list:
    coff = 1 + (ratio == 4)
    return [
        t(f"{p}.ape", (ratio, coff * dim), c, "replicated", stored_dtype="float32"),
        t(f"{p}.wkv.weight", (coff * dim, h), c, "replicated"),
        t(f"{p}.wgate.weight", (coff * dim, h), c, "replicated"),
        t(f"{p}.norm.weight", (dim,), norms, "replicated"),
    ]


def _hyper(t: Any, prefix: str, mix: int, width: int, names: tuple[str, ...]) -> list:
    out = []
    for name in names:
        out += [
            t(f"{prefix}hc_{name}_fn", (mix, width), stored_dtype="float32"),
            t(f"{prefix}hc_{name}_base", (mix,), stored_dtype="float32"),
            t(f"{prefix}hc_{name}_scale", (3,), stored_dtype="float32"),
        ]
    return out


def _layer(spec: ModelSpec, cfg: Config, p: str, i: Any, index: int, ratio: int, loaded: bool) -> list:
    moe = spec.moe
    assert moe is not None
    h, e, inter = spec.hidden_size, moe.num_experts, moe.expert_intermediate_size
    comp = None if loaded else "mtp"

    def t(name: str, shape: tuple[int, ...], component: str, shard: str, linear: bool = False, **kw) -> T.Tensor:
        return T.Tensor(f"{p}.{name}", shape, comp or component, shard, i, linear, loaded=loaded, **kw)

    out = _attention(spec, cfg, f"{p}.attn", i, ratio, comp, loaded)
    out += [t("attn_norm.weight", (h,), "norms", "replicated"), t("ffn_norm.weight", (h,), "norms", "replicated")]
    out.append(t("ffn.gate.weight", (e, h), "router", "replicated"))
    if index < cfg.get("num_hash_layers", 0):
        out.append(
            t(
                "ffn.gate.tid2eid",
                (spec.vocab_size, moe.experts_per_token),
                "router",
                "replicated",
                stored_dtype="int32",
            )
        )
    else:
        out.append(t("ffn.gate.bias", (e,), "router", "replicated", stored_dtype="float32"))
    out += [
        t("ffn.experts.w1", (e, inter, h), "experts", "experts", True),
        t("ffn.experts.w3", (e, inter, h), "experts", "experts", True),
        t("ffn.experts.w2", (e, h, inter), "experts", "experts", True),
    ]
    si = moe.shared_intermediate_size
    if si:
        out += [
            t("ffn.shared_experts.w1.weight", (si, h), "shared_experts", "column", True),
            t("ffn.shared_experts.w3.weight", (si, h), "shared_experts", "column", True),
            t("ffn.shared_experts.w2.weight", (h, si), "shared_experts", "row", True),
        ]
    hc = cfg["hc_mult"]
    out += _hyper(lambda n, s, **kw: t(n, s, "norms", "replicated", **kw), "", (2 + hc) * hc, hc * h, ("attn", "ffn"))
    return out


def _head(spec: ModelSpec, p: str, comp: str, stage: Any, hc: int, loaded: bool) -> list:
    w = hc * spec.hidden_size
    return [
        T.Tensor(f"{p}hc_head_fn", (hc, w), comp, "replicated", stage, loaded=loaded, stored_dtype="float32"),
        T.Tensor(f"{p}hc_head_base", (hc,), comp, "replicated", stage, loaded=loaded, stored_dtype="float32"),
        T.Tensor(f"{p}hc_head_scale", (1,), comp, "replicated", stage, loaded=loaded, stored_dtype="float32"),
    ]


@register_tensors("deepseek_v4")
def tensors(spec: ModelSpec) -> list[T.Tensor]:
    """The checkpoint's tensors under its own names (embed, layers.N.attn/ffn, head, mtp.N)."""
    cfg = _config_of(spec)
    h, v, hc = spec.hidden_size, spec.vocab_size, cfg["hc_mult"]
    out = [T.Tensor("embed.weight", (v, h), "embeddings", "vocab", "first")]
    for i, ratio in enumerate(spec.compress_ratios):
        out += _layer(spec, cfg, f"layers.{i}", i, i, ratio, True)
    out += [
        T.Tensor("norm.weight", (h,), "norms", "replicated", "last"),
        T.Tensor("head.weight", (v, h), "lm_head", "vocab", "last"),
    ]
    out += _head(spec, "", "norms", "last", hc, True)
    for j in range(spec.num_mtp_layers):
        p, n = f"mtp.{j}", spec.num_layers + j

        def t(name: str, shape: tuple[int, ...]) -> T.Tensor:
            return T.Tensor(
                f"{p}.{name}", shape, "mtp", "replicated", "last", name.endswith("proj.weight"), loaded=False
            )

        out += [
            t("e_proj.weight", (h, h)),
            t("h_proj.weight", (h, h)),
            t("enorm.weight", (h,)),
            t("hnorm.weight", (h,)),
            t("norm.weight", (h,)),
        ]
        out += _layer(spec, cfg, p, "last", n, 1, False)
        out += _head(spec, f"{p}.", "mtp", "last", hc, False)
    return out


_FAMILY_FIELDS = (
    "q_lora_rank",
    "o_lora_rank",
    "o_groups",
    "hc_mult",
    "index_n_heads",
    "index_head_dim",
    "num_hash_layers",
)


def _config_of(spec: ModelSpec) -> Config:
    """The config fields the tensor list reads beyond the spec (`ModelSpec.family_fields`)."""
    return dict(spec.family_fields)
