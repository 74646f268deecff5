"""NVIDIA Nemotron-H (`nemotron_h`): Nemotron-H 8B/47B/56B and Nemotron 3 Nano/Super, as vLLM's
nemotron_h.py and nemotron_h_mtp.py build them.

One block per `hybrid_override_pattern` character (or `layers_block_type` entry), each a layer of
vLLM's `make_layers` with one pre-norm and one mixer: Mamba2 (M, `MambaMixer2`), attention without
rotary (*, q/k/v fused into QKVParallelLinear, o_proj), a non-gated relu² MLP (-), or a MoE block
(E, `NemotronHMoE`): a replicated fp32-computed router `gate` [experts, hidden] with its fp32
`e_score_correction_bias` (sigmoid scoring, grouped top-k), non-gated routed experts (up_proj,
down_proj: FusedMoE's w13 holds the up projection only), and a shared expert
(`moe_shared_expert_intermediate_size` x `n_shared_experts`, a column/row-parallel MLP). Nemotron 3
Super's latent MoE (`moe_latent_size`) runs the routed experts in the latent width between two
replicated linears, `fc1_latent_proj` [latent, hidden] and `fc2_latent_proj` [hidden, latent].

The checkpoint's MTP block (Super: `num_nextn_predict_layers` 1, `mtp_hybrid_override_pattern` "*E")
is `mtp.layers.{j}`: the first block adds enorm, hnorm and eh_proj [hidden, 2 hidden], the last a
final_layernorm; it shares the embedding and lm_head. vLLM loads it only for speculative decoding.

The Hub's totals are the exporters' parameter counts: the remote modeling code registers the
router's `e_score_correction_bias` as a buffer, so the BF16 uploads' totals leave it out (Nano:
31,577,937,344 = the stored tensors less 23 x 128 biases; Super: 123,611,012,096 = less 41 x 512,
its MTP layer counted); ModelOpt's NVFP4 export counts the bias but not its own scalar
weight_scale_2 / input_scale buffers (Nano NVFP4: 18,237,772,608). vLLM loads the bias in fp32:
its bytes are counted either way.

The router's weight is counted in the model dtype; where vLLM keeps it in float32 (every GPU in
0.12-0.16; from 0.17, GateLinear's `force_fp32_compute` on GPUs without its router kernels: not
CUDA 9.0 or 10.x, profiles/gpu_families.yaml) the budget adds the difference per stage
(`router_fp32_extra_bytes`: Nano 23 x 128 x 2688 x 2 B = 15.8 MB, Super 40 x 512 x 4096 x 2 B =
168 MB per GPU in bf16).

The SSM state dtype is the config's `mamba_ssm_cache_dtype` (vLLM's NemotronHForCausalLMConfig
applies it while `--mamba-ssm-cache-dtype` is auto).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from planner.errors import PlannerError
from planner.models import normalize as base
from planner.models.families import register, register_tensors
from planner.models.families.common import finish, int_field
from planner.models.hybrids import nemotron_h_pattern
from planner.models.spec import ModelSpec, MoESpec
from planner.models.tensors import Tensor, _attention, _ffn
from planner.releases import ReleaseFacts
from planner.target import Target, gpu_families

Config = dict[str, Any]
_FIX = "fix the config.json"
_SSM_DTYPES = ("float32", "bfloat16", "float16")


def _moe_spec(cfg: Config) -> MoESpec:
    experts = int_field(cfg, "n_routed_experts")
    top_k = int_field(cfg, "num_experts_per_tok")
    if top_k > experts:
        raise PlannerError(f"config field 'num_experts_per_tok' {top_k} exceeds n_routed_experts {experts}: {_FIX}")
    shared = int(cfg.get("n_shared_experts") or 0)
    latent = cfg.get("moe_latent_size")
    return MoESpec(
        experts,
        top_k,
        int_field(cfg, "moe_intermediate_size"),
        num_shared_experts=shared,
        shared_intermediate_size=shared * int_field(cfg, "moe_shared_expert_intermediate_size") if shared else 0,
        router_correction_bias=True,
        latent_size=0 if latent is None else int_field(cfg, "moe_latent_size"),
    )


def _mtp_blocks(cfg: Config) -> int:
    """MTP blocks stored in the checkpoint: vLLM's NemotronH-MTP takes one MTP layer whose blocks
    follow `mtp_hybrid_override_pattern`; the attention-then-MoE pattern is the one modelled."""
    n = int(cfg.get("num_nextn_predict_layers") or 0)
    if not n:
        return 0
    if n != 1:
        raise PlannerError(f"config field 'num_nextn_predict_layers' {n}: vLLM's NemotronH-MTP takes 1; {_FIX}")
    pattern = nemotron_h_pattern(cfg, 0, "mtp_hybrid_override_pattern")
    if pattern != "*E":
        raise PlannerError(
            f"mtp_hybrid_override_pattern {pattern!r} is not modelled yet (attention then MoE, '*E', is): "
            "plan the model without its MTP block"
        )
    return len(pattern)


@register("nemotron_h", name="nemotron_h")
def normalize(config: Config, quant_files: dict[str, Config]) -> ModelSpec:
    cfg = {**{k: v for k, v in config.items() if v is not None}, "model_type": "nemotron_h"}
    fields = {**base._hybrid(cfg), "model_type": "nemotron_h"}
    if any(layer.mlp == "moe" for layer in fields["layers"]):
        fields["moe"] = _moe_spec(cfg)
    fields["num_mtp_layers"] = _mtp_blocks(cfg)
    ssm = cfg.get("mamba_ssm_cache_dtype")
    if ssm is not None:
        if ssm not in _SSM_DTYPES:
            raise PlannerError(
                f"config field 'mamba_ssm_cache_dtype' must be one of {', '.join(_SSM_DTYPES)}, got {ssm!r}: {_FIX}"
            )
        fields["mamba"] = dataclasses.replace(fields["mamba"], ssm_dtype=ssm)
    mamba_heads, groups = int_field(cfg, "mamba_num_heads"), int_field(cfg, "n_groups")
    if mamba_heads % groups:
        raise PlannerError(f"config field 'n_groups' {groups} does not divide mamba_num_heads {mamba_heads}: {_FIX}")
    return finish(config, config, fields, quant_files)


# ---- tensors --------------------------------------------------------------------------------------


def _mamba2(spec: ModelSpec, p: str, i: Any) -> list[Tensor]:
    """MambaMixer2 (`layers/mamba/mamba_mixer2.py`) with n_groups divisible by TP: in_proj
    [2·inner + 2·groups·d_state + heads, hidden] and conv1d (+bias) column-parallel, dt_bias /
    A_log / D split by head, the grouped gated RMSNorm [inner] split by TP, out_proj row-parallel.
    (n_groups = 1 with TP > 1 replicates the groups per rank: not modelled.)"""
    m = spec.mamba
    assert m is not None
    h = spec.hidden_size
    n_heads, head_dim, _ = m.ssm_state_shape
    inner = n_heads * head_dim
    conv_dim, kernel = m.conv_state_shape[0], m.conv_state_shape[1] + 1
    return [
        Tensor(f"{p}.in_proj.weight", (inner + conv_dim + n_heads, h), "mamba", "column", i, True),
        Tensor(f"{p}.conv1d.weight", (conv_dim, 1, kernel), "mamba", "column", i),
        Tensor(f"{p}.conv1d.bias", (conv_dim,), "mamba", "column", i),
        Tensor(f"{p}.dt_bias", (n_heads,), "mamba", "heads", i),
        Tensor(f"{p}.A_log", (n_heads,), "mamba", "heads", i),
        Tensor(f"{p}.D", (n_heads,), "mamba", "heads", i),
        Tensor(f"{p}.norm.weight", (inner,), "norms", "column", i),
        Tensor(f"{p}.out_proj.weight", (h, inner), "mamba", "row", i, True),
    ]


def _mlp(spec: ModelSpec, p: str, i: Any, inter: int, component: str) -> list[Tensor]:
    """NemotronHMLP: relu² up_proj (column-parallel) then down_proj (row-parallel)."""
    return _ffn(spec, p, i, inter, component, ("up_proj", "down_proj"))


def _moe(spec: ModelSpec, p: str, i: Any) -> list[Tensor]:
    moe, h = spec.moe, spec.hidden_size
    assert moe is not None
    e, inter, width = moe.num_experts, moe.expert_intermediate_size, moe.latent_size or h
    q = spec.quant
    counted = q is not None and q.vllm_name.startswith("modelopt")  # the exporters' totals (module doc)
    out = [
        Tensor(f"{p}.gate.weight", (e, h), "router", "replicated", i),
        Tensor(
            f"{p}.gate.e_score_correction_bias",
            (e,),
            "router",
            "replicated",
            i,
            runtime=not counted,
            stored_dtype="float32",
        ),
        Tensor(f"{p}.experts.up_proj", (e, inter, width), "experts", "experts", i, True),
        Tensor(f"{p}.experts.down_proj", (e, width, inter), "experts", "experts", i, True),
    ]
    if moe.latent_size:
        out += [
            Tensor(f"{p}.fc1_latent_proj.weight", (width, h), "mlp", "replicated", i, True),
            Tensor(f"{p}.fc2_latent_proj.weight", (h, width), "mlp", "replicated", i, True),
        ]
    if moe.num_shared_experts:
        out += _mlp(spec, f"{p}.shared_experts", i, moe.shared_intermediate_size, "shared_experts")
    return out


def _block(spec: ModelSpec, kind: str, mlp: str, p: str, i: Any) -> list[Tensor]:
    out = [Tensor(f"{p}.norm.weight", (spec.hidden_size,), "norms", "replicated", i)]
    if kind == "mamba":
        return out + _mamba2(spec, f"{p}.mixer", i)
    if kind == "full":
        return out + _attention(spec, f"{p}.mixer", i)
    if mlp == "moe":
        return out + _moe(spec, f"{p}.mixer", i)
    return out + _mlp(spec, f"{p}.mixer", i, spec.intermediate_size, "mlp")


def _mtp(spec: ModelSpec) -> list[Tensor]:
    """The MTP layer's blocks (attention, then MoE: `_mtp_blocks`), as stored, not loaded."""
    h = spec.hidden_size
    out = _block(spec, "full", "dense", "mtp.layers.0", "last") + _block(spec, "none", "moe", "mtp.layers.1", "last")
    out += [
        Tensor("mtp.layers.0.enorm.weight", (h,), "mtp", "replicated", "last"),
        Tensor("mtp.layers.0.hnorm.weight", (h,), "mtp", "replicated", "last"),
        Tensor("mtp.layers.0.eh_proj.weight", (h, 2 * h), "mtp", "replicated", "last", True),
        Tensor("mtp.layers.1.final_layernorm.weight", (h,), "mtp", "replicated", "last"),
    ]
    return [dataclasses.replace(t, component="mtp", loaded=False) for t in out]


@register_tensors("nemotron_h")
def tensors(spec: ModelSpec) -> list[Tensor]:
    h, v = spec.hidden_size, spec.vocab_size
    out = [Tensor("backbone.embeddings.weight", (v, h), "embeddings", "vocab", "first")]
    for i, layer in enumerate(spec.layers):
        out += _block(spec, layer.attention, layer.mlp, f"backbone.layers.{i}", i)
    out.append(Tensor("backbone.norm_f.weight", (h,), "norms", "replicated", "last"))
    if not spec.tie_word_embeddings:
        out.append(Tensor("lm_head.weight", (v, h), "lm_head", "vocab", "last"))
    if spec.num_mtp_layers:
        out += _mtp(spec)
    return out


def fp32_router(rel: ReleaseFacts, target: Target) -> bool:
    """Whether vLLM keeps Nemotron-H's fp32-computed router in float32 on this device and release
    (releases.yaml router_fp32_nemotron_h, gpu_families.yaml router_kernel_capabilities)."""
    kernels = target.device == "cuda" and gpu_families().has_router_kernels(target.compute_capability)
    return rel.router_fp32_nemotron_h == "always" or not kernels


def router_fp32_extra_bytes(spec: ModelSpec, layers: range, dtype_bytes: int, rel: ReleaseFacts, target: Target) -> int:
    """Bytes the MoE routers of `layers` take beyond the model dtype where vLLM stores them in float32
    (`fp32_router`); 0 for other models and where the weight stays in the model dtype."""
    if spec.model_type != "nemotron_h" or spec.moe is None or dtype_bytes >= 4 or not fp32_router(rel, target):
        return 0
    moe_layers = sum(1 for i in layers if spec.layers[i].mlp == "moe")
    return moe_layers * spec.moe.num_experts * spec.hidden_size * (4 - dtype_bytes)
