"""Attention + Mamba / linear-attention hybrids (Qwen3-Next, Nemotron-H): weights by formula,
recurrent state per sequence, vLLM's hybrid KV layout (block-size alignment, Mamba page padding,
groups), blocks per request in each mamba_cache_mode, and the budget wiring.

Expected values are hand-computed from vLLM's rules (sources in /tmp/v/src/<version>/vllm):
platforms/interface.py `_align_hybrid_block_size` (0.20+), model_executor/models/config.py
`HybridAttentionMambaModelConfig` (to 0.19), v1/kv_cache_interface.py `MambaSpec`,
v1/core/kv_cache_utils.py / kv_cache_planning.py `_get_kv_cache_groups_uniform_page_size`.
"""

from __future__ import annotations

import json
import math

import pytest
from launch_helpers import run_in_vllm

from planner import kv_bytes as kvb
from planner import releases
from planner.api import inspect, load_model
from planner.budget import Settings, Target, compute, mamba_cache_mode
from planner.kv_layout import LayoutRules, blocks_per_request, build_layout, hybrid_block_size, logged_tokens

QWEN_NEXT = "Qwen/Qwen3-Next-80B-A3B-Thinking"
NEMOTRON = "nvidia/Nemotron-H-56B-Base-8K"
GIB = 2**30
H200 = Target("H200", int(139.8 * GIB), compute_capability="9.0")
A100 = Target("A100-80GB", int(79.2 * GIB), compute_capability="8.0")


@pytest.fixture(scope="module")
def qwen():
    return load_model(QWEN_NEXT)


@pytest.fixture(scope="module")
def nemo():
    return load_model(NEMOTRON)


# ---- weights by formula -----------------------------------------------------------------------


def _qwen_next_params_by_hand() -> tuple[int, int]:
    """(loaded, MTP) parameters of Qwen3-Next-80B-A3B from its config, written out independently."""
    h, v, hd = 2048, 151936, 256
    gdn = (2 * 2048 + 2 * 4096) * h + 64 * h + 8192 * 4 + 32 + 32 + 128 + h * 4096
    attn = 2 * 16 * hd * h + 2 * (2 * hd * h) + h * 16 * hd + 2 * hd
    moe = 512 * h + 512 * 3 * 512 * h + 3 * 512 * h + h
    norms = 2 * h
    loaded = 36 * (gdn + moe + norms) + 12 * (attn + moe + norms) + 2 * v * h + h
    mtp = 2 * h * h + (attn + moe + norms) + 3 * h
    return loaded, mtp


def _nemotron_h_56b_params_by_hand() -> int:
    h, v = 8192, 131072
    inner, groups, d_state, heads = 256 * 64, 8, 256, 256
    conv_dim = inner + 2 * groups * d_state
    mamba = (inner + conv_dim + heads) * h + conv_dim * 4 + conv_dim + 3 * heads + inner + h * inner
    attn = 64 * 128 * h + 2 * 8 * 128 * h + h * 64 * 128
    mlp = 2 * 32768 * h
    return 54 * (mamba + h) + 10 * (attn + h) + 54 * (mlp + h) + 2 * v * h + h


def test_qwen3_next_parameter_counts(qwen):
    r = inspect(qwen)
    loaded, mtp = _qwen_next_params_by_hand()
    assert qwen.tensor_source == "formula"
    assert r.params_total == loaded == 79_674_391_296
    assert r.params_not_loaded == {"mtp": mtp}
    # The Hub's safetensors total for Qwen3-Next-80B-A3B (Instruct; the Thinking repo has the same
    # config): 81,324,862,720, MTP block included (debaditc/kvfit build_registry.py).
    assert r.params_checkpoint == 81_324_862_720
    # "A3B": ~3B active without embeddings and head (10 of 512 experts + shared expert)
    no_embed = r.params_active - 2 * r.params_breakdown["embeddings"]
    assert 3.0e9 < no_embed < 3.5e9


def test_nemotron_h_parameter_counts(nemo):
    r = inspect(nemo)
    assert r.layer_types == {"mamba": 54, "none": 54, "full": 10}  # 54 Mamba-2, 54 MLP, 10 attention (NVIDIA)
    assert nemo.spec.num_layers == 118  # MLP-only blocks are layers of make_layers and the PP split
    assert r.params_total == r.params_checkpoint == _nemotron_h_56b_params_by_hand()
    assert 56.0e9 < r.params_total < 56.5e9  # published: "56B model parameters"


@pytest.mark.parametrize(
    "model_id, tp, per_gpu_params",
    [
        # column/row splits by TP; norms, router and shared-expert gate replicated; vocab padded to 64
        (QWEN_NEXT, 4, None),
        (NEMOTRON, 8, None),
    ],
)
def test_tp_sharding_sums(model_id, tp, per_gpu_params):
    m = load_model(model_id)
    one = inspect(m, tp=1).weight_bytes_per_gpu
    split = inspect(m, tp=tp).weight_bytes_per_gpu
    assert one / tp <= split < one / tp * 1.02  # replicated parts are small


def test_gdn_and_mamba2_shards(qwen, nemo):
    from planner.accounting import rank_shape

    t = {x.name: x for x in qwen.tensors}
    p = "model.layers.0.linear_attn"
    assert rank_shape(t[f"{p}.in_proj_qkvz.weight"], qwen.spec, 4) == (3072, 2048)
    assert rank_shape(t[f"{p}.conv1d.weight"], qwen.spec, 4) == (2048, 1, 4)
    assert rank_shape(t[f"{p}.A_log"], qwen.spec, 4) == (8,)
    assert rank_shape(t[f"{p}.norm.weight"], qwen.spec, 4) == (128,)
    assert rank_shape(t[f"{p}.out_proj.weight"], qwen.spec, 4) == (2048, 1024)
    assert rank_shape(t["model.layers.3.self_attn.q_proj.weight"], qwen.spec, 4) == (2048, 2048)  # gate doubles q
    n = {x.name: x for x in nemo.tensors}
    q = "backbone.layers.0.mixer"
    assert rank_shape(n[f"{q}.in_proj.weight"], nemo.spec, 8) == ((2 * 16384 + 2 * 8 * 256 + 256) // 8, 8192)
    assert rank_shape(n[f"{q}.norm.weight"], nemo.spec, 8) == (2048,)  # Mixer2RMSNormGated per-rank weight
    assert rank_shape(n[f"{q}.D"], nemo.spec, 8) == (32,)


# ---- recurrent state per sequence -------------------------------------------------------------

_VLLM_SHAPES = """
import json, sys
from vllm.model_executor.layers.mamba.mamba_utils import MambaStateShapeCalculator as C
out = {}
for tp in (1, 2, 4, 8):
    out[f"gdn{tp}"] = C.gated_delta_net_state_shape(tp, 16, 32, 128, 128, 4, 0)
    out[f"m2_{tp}"] = C.mamba2_state_shape(tp, 256 * 64, 8, 256, 64, 256, 4, 0)
    out[f"m2g1_{tp}"] = C.mamba2_state_shape(tp, 128 * 64, 1, 128, 64, 128, 4, 0)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def vllm_shapes():
    return json.loads(run_in_vllm(["-c", _VLLM_SHAPES], timeout=300).stdout.strip().splitlines()[-1])


def _prod_sum(shapes, dtype_bytes):
    return sum(math.prod(s) * b for s, b in zip(shapes, dtype_bytes))


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_state_bytes_match_vllm_calculator(vllm_shapes, qwen, nemo, tp):
    assert kvb.mamba_layer_state_bytes(qwen.spec, 2, 2, tp) == _prod_sum(vllm_shapes[f"gdn{tp}"], (2, 2))
    assert kvb.mamba_layer_state_bytes(nemo.spec, 2, 4, tp) == _prod_sum(vllm_shapes[f"m2_{tp}"], (2, 4))
    assert inspect(qwen, tp=tp).mamba_state_bytes_per_seq == 36 * _prod_sum(vllm_shapes[f"gdn{tp}"], (2, 2))
    # n_groups = 1 with TP > 1: vLLM pads the groups to TP (extra_groups_for_head_shards)
    import dataclasses

    from planner.models.spec import MambaSpec

    g1 = dataclasses.replace(nemo.spec, mamba=MambaSpec("mamba2", (128 * 64 + 2 * 128, 3), (128, 64, 128)))
    assert kvb.mamba_layer_state_bytes(g1, 2, 2, tp) == _prod_sum(vllm_shapes[f"m2g1_{tp}"], (2, 2))


@pytest.mark.parametrize(
    "tp, conv, ssm",
    [
        # gated_delta_net_state_shape: conv (kernel-1, (2*16*128 + 32*128)/tp), ssm (32/tp, 128, 128)
        (1, (8192, 3), (32, 128, 128)),
        (4, (2048, 3), (8, 128, 128)),
    ],
)
def test_gdn_shapes_by_hand(qwen, tp, conv, ssm):
    assert kvb.mamba_layer_state_shapes(qwen.spec, tp) == (conv, ssm)


# ---- block size, groups, blocks per request -----------------------------------------------------


def _rules(version: str, mode: str, blocks: int, checkpoint_alignment: int = 1, chunk: int = 2048, ssm: int = 2):
    rel = releases.get(version)
    return LayoutRules(
        hybrid_group_size_max_rule=rel.hybrid_group_size_rule == "max_if_under_1.5x_min",
        mamba_dtype_bytes=(2, ssm),
        mamba_block_align=rel.hybrid_mamba_block_align,
        mamba_mode=mode,
        mamba_blocks=blocks,
        mamba_checkpoint_alignment=checkpoint_alignment,
        mamba_chunk_size=chunk,
    )


# Hand-computed (TP 4, bf16):
#  Qwen3-Next: GDN page = 3*2048*2 + 8*128*128*2 = 274,432 B; attention 1 KV head x 256 x 2 x 2 = 1,024 B/token.
#   0.19 / none: 16 * cdiv(274432, 16*1024) = 272.  0.33 / align on Hopper: lcm(16, 64) = 64 -> 64*5 = 320.
#   36 GDN + 12 attention: min 12, 36 >= 1.5*12 -> group size 12: 3 Mamba groups + 1 attention group.
#  Nemotron-H-56B: Mamba2 page = 3*5120*2 + 64*64*256*ssm; attention 2 KV heads x 128 x 2 x 2 = 1,024 B/token.
#   0.19 (ssm fp16): 2,127,872 B -> 16*130 = 2080.  0.33 (ssm fp32): 4,225,024 B -> 16*258 = 4128.
#   0.26 mode all (chunk_size 128): 128 * cdiv(cdiv(4225024, 1024), 128) = 128*33 = 4224.
#   54 Mamba + 10 attention: group size 10 -> 6 Mamba groups (6 padding layers) + 1 attention group.
@pytest.mark.parametrize(
    "model_id, version, mode, blocks, align, chunk, ssm, block, page, groups, padding, per_req, mml",
    [
        (
            QWEN_NEXT,
            "0.19.0",
            "none",
            1,
            1,
            2048,
            2,
            272,
            272 * 1024,
            ("mamba",) * 3 + ("full",),
            0,
            964 + 3 * 1,
            262144,
        ),
        (
            QWEN_NEXT,
            "0.33.0",
            "align",
            3,
            64,
            2048,
            2,
            320,
            320 * 1024,
            ("mamba",) * 3 + ("full",),
            0,
            820 + 3 * 3,
            262144,
        ),
        (
            QWEN_NEXT,
            "0.33.0",
            "align",
            2,
            1,
            2048,
            2,
            272,
            272 * 1024,
            ("mamba",) * 3 + ("full",),
            0,
            964 + 3 * 2,
            262144,
        ),
        (NEMOTRON, "0.19.0", "none", 1, 1, 128, 2, 2080, 2080 * 1024, ("mamba",) * 6 + ("full",), 6, 4 + 6 * 1, 8192),
        (NEMOTRON, "0.33.0", "align", 3, 1, 128, 4, 4128, 4128 * 1024, ("mamba",) * 6 + ("full",), 6, 2 + 6 * 3, 8192),
        (NEMOTRON, "0.26.0", "all", 1, 1, 128, 4, 4224, 4224 * 1024, ("mamba",) * 6 + ("full",), 6, 2 + 6 * 2, 8192),
    ],
)
def test_hybrid_layout(model_id, version, mode, blocks, align, chunk, ssm, block, page, groups, padding, per_req, mml):
    m = load_model(model_id)
    lay = build_layout(m.spec, range(m.spec.num_layers), 4, 2, 16, _rules(version, mode, blocks, align, chunk, ssm))
    assert lay.block_size == block
    assert lay.page_bytes == page
    assert tuple(g.kind for g in lay.groups) == groups
    assert lay.group_size == (12 if model_id == QWEN_NEXT else 10)
    assert lay.padding_layers == padding
    assert lay.bytes_per_block == lay.group_size * page
    assert blocks_per_request(lay, mml, 8192) == per_req


def test_block_size_rules():
    # a larger configured block size is kept; backend_kernel_block aligns to max(kernel, block_size)
    r = LayoutRules(mamba_block_align="backend_kernel_block")
    assert hybrid_block_size(1024, 274432, 16, r) == 272
    assert hybrid_block_size(1024, 274432, 64, r) == 320
    assert hybrid_block_size(1024, 274432, 512, r) == 512
    assert hybrid_block_size(1024, 274432, 16, LayoutRules(mamba_block_align="fixed_16")) == 272
    assert hybrid_block_size(576 * 2, 274432, 16, LayoutRules(mamba_block_align="16_or_mla_64"), mla=True) == 256


@pytest.mark.parametrize(
    "version, prefix, arch, mode",
    [
        ("0.14.1", True, "NemotronHForCausalLM", "none"),  # Mamba prefix caching unsupported
        ("0.19.0", None, "NemotronHForCausalLM", "none"),  # prefix caching off by default for hybrids
        ("0.19.0", True, "NemotronHForCausalLM", "all"),  # SupportsMambaPrefixCaching
        ("0.19.0", True, "Qwen3NextForCausalLM", "align"),
        ("0.26.0", None, "NemotronHForCausalLM", "all"),  # on by default from 0.26
        ("0.26.0", None, "Qwen3NextForCausalLM", "align"),
        ("0.26.0", False, "Qwen3NextForCausalLM", "none"),
        ("0.32.0", None, "NemotronHForCausalLM", "align"),  # "all" removed in 0.32
    ],
)
def test_mamba_cache_mode(nemo, qwen, version, prefix, arch, mode):
    m = nemo if arch.startswith("Nemotron") else qwen
    assert mamba_cache_mode(m, releases.get(version), Settings(enable_prefix_caching=prefix)) == mode


@pytest.mark.parametrize(
    "mode, blocks, mml, expected",
    [
        ("none", 1, 262144, 964 + 3),
        ("align", 2, 262144, 964 + 6),
        ("align", 3, 262144, 964 + 9),
        # mode all: block = lcm(chunk 2048, 16) * cdiv(cdiv(274432, 1024), 2048) = 2048; a state per block
        ("all", 1, 262144, 128 + 3 * 128),
        ("all", 1, 1000, 1 + 3 * 1),
    ],
)
def test_blocks_per_request_by_mode(qwen, mode, blocks, mml, expected):
    lay = build_layout(qwen.spec, range(48), 4, 2, 16, _rules("0.33.0", mode, blocks))
    assert lay.block_size == (2048 if mode == "all" else 272)
    assert blocks_per_request(lay, mml, 8192) == expected


def test_logged_tokens_hybrid(qwen):
    lay = build_layout(qwen.spec, range(48), 4, 2, 16, _rules("0.19.0", "none", 1))
    # to 0.20.0: num_blocks // groups x min(attention block, Mamba block = max_model_len in mode none)
    assert logged_tokens(lay, 1000, 0.0, 262144, "blocks_x_block_size") == 250 * 272
    assert logged_tokens(lay, 1000, 0.0, 100, "blocks_x_block_size") == 250 * 100
    assert logged_tokens(lay, 1000, 1000 / 967, 262144, "concurrency_x_max_model_len") == int(1000 / 967 * 262144)


# ---- budget wiring ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, target, block, per_req",
    [
        ("0.33.0", H200, 320, 820 + 9),  # align mode, FlashInfer GDN checkpoints on Hopper
        ("0.32.0", H200, 272, 964 + 6),  # align mode, no checkpoint block for GDN yet
        ("0.33.0", A100, 272, 964 + 6),  # Triton GDN prefill: no checkpoint
        ("0.19.0", H200, 272, 964 + 3),  # mode none
    ],
)
def test_budget_qwen3_next(qwen, version, target, block, per_req):
    rel = releases.get(version)
    insp = inspect(qwen, tp=4)
    b = compute(qwen, insp, target, rel, Settings(tp=4))
    assert b.block_size == block
    assert b.max_concurrency == round(b.num_blocks / per_req, 2)
    lay = b.stages[0].layout
    assert b.num_blocks == b.stages[0].available_kv_bytes // (12 * block * 1024)
    assert lay.mamba_state_bytes == 274432
    assert {"kv_cache_gib", "num_blocks", "kv_cache_tokens", "max_concurrency"} <= set(b.estimated)
    if rel.kv_tokens_formula == "concurrency_x_max_model_len":
        assert b.kv_cache_tokens == int(b.num_blocks / per_req * b.max_model_len)
    assert b.fits


def test_budget_nemotron_pp_stage_without_attention(nemo):
    # PP 2 over 118 blocks: each stage holds its own Mamba and attention layers
    rel = releases.get("0.33.0")
    b = compute(nemo, inspect(nemo, tp=2, pp=2), H200, rel, Settings(tp=2, pp=2))
    assert all(st.layout.block_size == b.block_size for st in b.stages)
    assert b.fits


def test_cli_plan_headline(capsys):
    from planner.cli import main

    assert main(["plan", QWEN_NEXT, "--gpu", "H200", "--tp", "4"]) == 0  # it fits: exit 0
    out = capsys.readouterr().out
    assert "block 320" in out and "(est.)" in out
