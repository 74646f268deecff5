"""Kimi-K2, Kimi-K2.5, Kimi-Linear, Kimi-K3 and MiniMax-M2.7 (bundled: profiles/models/moonshotai/
Kimi-K2-Instruct, Kimi-K2.5, Kimi-Linear-48B-A3B-Instruct, Kimi-K3, MiniMaxAI/MiniMax-M2.7; where each
config comes from, their meta.yaml say): inspect and plan at TP 1 and 8, an inventory and emit for
the two Kimi profiles without a published total (Kimi-Linear and MiniMax-M2.7 are rows of
test_families.NEW_PROFILES); the Hub's figures they match; the KV page and Kimi-Linear's KDA state
against vLLM's own classes (the CPU build: tests/vllm_oracle.py, tests/vllm_kda_oracle.py); bad
input as one-line errors naming the field, exit status 2. (MiniMax-M3 is tests/test_families_minimax_m3.py.)"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
from launch_helpers import VLLM_ABSENT, vllm_python
from test_families import oracle_rows
from test_families import test_inventory_plan_and_emit as inventory_and_emit

from planner import accounting as acc
from planner import kv_bytes as kvb
from planner.api import check_parallel, inspect, load_model, plan
from planner.cli import main
from planner.errors import PlannerError
from planner.models import families, sources
from planner.models.normalize import normalize

K2, K25, M27 = "moonshotai/Kimi-K2-Instruct", "moonshotai/Kimi-K2.5", "MiniMaxAI/MiniMax-M2.7"
KL, K3 = "moonshotai/Kimi-Linear-48B-A3B-Instruct", "moonshotai/Kimi-K3"
REPO = Path(__file__).resolve().parent.parent
NVFP4 = ["nvidia/Kimi-K2.5-NVFP4", "nvidia/Kimi-K2.6-NVFP4", "nvidia/Kimi-K2.7-Code-NVFP4", "nvidia/MiniMax-M2.7-NVFP4"]
UNPUBLISHED = [K2, K25, K3, *NVFP4]  # no Hub total found or matched: meta.yaml says why


def config_of(model_id: str) -> dict:
    return json.loads((sources.find_bundled(model_id) / "config.json").read_text())


@pytest.mark.parametrize("model_id", UNPUBLISHED)
@pytest.mark.parametrize("tp", [1, 8])
def test_inspect_and_plan_at_tp(model_id, tp):
    m = load_model(model_id)
    check_parallel(m.spec, tp, 1)
    r = inspect(m, tp=tp)
    assert r.params_published is None and r.kv_bytes_per_token_per_gpu > 0 and r.weight_bytes_per_gpu > 0
    p = plan(m, gpu="H200", tp=tp, max_model_len=32768)
    assert p.budget.block_size > 0 and p.serve_command.startswith("vllm serve ")


@pytest.mark.parametrize("model_id", UNPUBLISHED)
def test_inventory_plan_and_emit(model_id, tmp_path, capsys):
    inventory_and_emit(model_id, tmp_path, capsys)  # test_families' check, for these profiles


def test_kimi_k25_is_registered():
    assert families.find(config_of(K25)["model_type"]).name == "kimi_k25"


# ---- the Hub's figures ---------------------------------------------------------------------------


def test_kimi_k2_fp8_tensors_are_the_hubs_f8_count():
    # Hub safetensors for Kimi-K2-Instruct (revision fd1984e2): F8_E4M3 1,023,893,241,856 of a total
    # 1,026,408,235,864 that leaves the float32 block scales out (Kimi-K2-Base's 1,026,470,731,056
    # counts them); the other 3,416 are BF16 values no config field names (meta.yaml)
    m = load_model(K2)
    fp8 = sum(t.numel for t in m.tensors if not t.runtime and acc.is_quantized(t, m.spec.quant))
    assert fp8 == 1_023_893_241_856
    r = inspect(m)
    assert r.params_checkpoint == r.params_total == 1_026_408_235_864 - 3_416
    with_scales = acc.checkpoint_params(list(m.tensors), m.spec.quant)
    assert with_scales - r.params_total == 1_026_470_731_056 - 1_026_408_235_864


def test_minimax_m27_total_leaves_the_scales_out_as_m2_and_m21_do():
    # the same shapes as M2.5, whose Hub total counts the 13,880,064 fp8 block scales
    m27, m25 = inspect(M27), inspect("MiniMaxAI/MiniMax-M2.5")
    assert m27.params_total == m25.params_total == m27.params_checkpoint
    assert m25.params_checkpoint - m27.params_checkpoint == 228_703_644_928 - 228_689_764_864


def test_kimi_k25_text_is_kimi_k2_and_the_vision_tower_moonvit3d():
    k25, k2 = inspect(K25), inspect(K2)
    vision = k25.params_breakdown["vision"]
    assert k25.params_total - vision == k2.params_total
    # MoonViT3d: conv 3 x 14 x 14 -> 1152 with bias, a 64 x 64 x 1152 table, 27 blocks (2 LayerNorms,
    # biased wqkv 1152 -> 3456, wo, fc0 1152 -> 4304, fc1), a final LayerNorm; patchmerger:
    # LayerNorm(1152), 4608 -> 4608 and 4608 -> 7168, biased
    h, mlp = 1152, 4304
    block = 4 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * mlp + mlp) + (mlp * h + h)
    tower = 3 * 14 * 14 * h + h + 64 * 64 * h + 27 * block + 2 * h
    projector = 2 * h + 4 * h * 4 * h + 4 * h + 4 * h * 7168 + 7168
    assert vision == tower + projector == 471_143_920
    assert k25.kv_bytes_per_token_per_gpu == k2.kv_bytes_per_token_per_gpu == 61 * 576 * 2


def test_kimi_k25_int4_experts_and_bf16_rest():
    # compressed-tensors W4A16, groups of 32 with bf16 scales, on the routed experts only
    r = inspect(K25)
    experts = r.params_breakdown["experts"]
    assert r.weight_breakdown_per_gpu["experts"] == experts // 2 + experts // 32 * 2
    for part in ("attention", "shared_experts", "mlp", "lm_head"):
        assert r.weight_breakdown_per_gpu[part] == 2 * r.params_breakdown[part], part


@pytest.mark.parametrize(
    "model_id, nvfp4, bf16",
    [
        # ModelOpt's exclude_modules under the checkpoint's names (language_model.model.layers.N...)
        ("nvidia/Kimi-K2.5-NVFP4", ("experts", "shared_experts", "mlp"), ("attention", "lm_head")),
        ("nvidia/Kimi-K2.6-NVFP4", ("experts",), ("attention", "shared_experts", "mlp", "lm_head")),
        ("nvidia/Kimi-K2.7-Code-NVFP4", ("experts",), ("attention", "shared_experts", "mlp", "lm_head")),
        ("nvidia/MiniMax-M2.7-NVFP4", ("experts",), ("attention", "lm_head")),
    ],
)
def test_nvfp4_checkpoints_quantize_what_their_exclude_lists_leave(model_id, nvfp4, bf16):
    r = inspect(model_id)
    assert r.quantization == "modelopt_fp4" and r.kv_cache_dtype == "fp8"  # the checkpoint's FP8 KV cache
    for part in nvfp4:  # e2m1 pairs in a byte, one fp8 scale per 16 (+ ModelOpt's per-tensor fp32 scalars)
        packed = r.params_breakdown[part] // 2 + r.params_breakdown[part] // 16
        assert 0 <= r.weight_breakdown_per_gpu[part] - packed < packed // 100_000, part
    for part in bf16:
        assert r.weight_breakdown_per_gpu[part] == 2 * r.params_breakdown[part], part


# ---- against vLLM's classes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_rows():
    py = vllm_python()
    if py is None:
        pytest.skip(VLLM_ABSENT)
    return {tp: oracle_rows(py, [K2, K25, M27, KL, K3, *NVFP4], tp) for tp in (1, 8)}


@pytest.mark.parametrize("model_id", [K2, K25, M27, KL, K3, *NVFP4])
@pytest.mark.parametrize("tp", [1, 8])
def test_kv_page_and_max_model_len_match_vllm(vllm_rows, model_id, tp):
    row = vllm_rows[tp][model_id]
    assert row is not None and "error" not in row, row
    m = load_model(model_id)
    r = inspect(m, tp=tp)
    assert row["num_layers"] == m.spec.num_layers and row["block_size"] == 16
    mla = sum(1 for layer in m.spec.layers if layer.attention == "mla") or m.spec.num_layers
    assert r.kv_bytes_per_token_per_gpu == row["page_size_bytes_per_layer"] // 16 * mla
    assert m.spec.max_model_len_default == row["max_model_len"]
    assert row["use_mla"] == (m.spec.mla is not None)


@pytest.fixture(scope="module")
def vllm_kda():
    py = vllm_python()
    if py is None:
        pytest.skip(VLLM_ABSENT)
    out = {}
    dirs = {str(sources.find_bundled(m)): m for m in (KL, K3)}
    for tp in (1, 2, 4, 8):
        proc = subprocess.run(
            [py, str(REPO / "tests" / "vllm_kda_oracle.py"), *dirs, "--tp", str(tp)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        for line in proc.stdout.splitlines():
            row = json.loads(line)
            out[(dirs[row["config"]], tp)] = row
    return out


@pytest.mark.parametrize("model_id", [KL, K3])
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_kda_state_matches_vllm(vllm_kda, model_id, tp):
    row = vllm_kda[(model_id, tp)]
    assert "error" not in row, row
    m = load_model(model_id)
    kda = [i for i, layer in enumerate(m.spec.layers) if layer.attention == "linear"]
    assert kda == row["kda_layers"] and m.spec.num_layers - len(kda) == row["mla_layers"]
    conv, ssm = kvb.mamba_layer_state_shapes(m.spec, tp)
    # vLLM keeps the conv state transposed (kernel - 1, channels): the same bytes
    assert sorted(conv) == sorted(row["shapes"][0]) and list(ssm) == row["shapes"][1]
    assert row["dtypes"] == ["bfloat16", "float32"] and m.spec.mamba.ssm_dtype == "float32"
    assert kvb.mamba_layer_state_bytes(m.spec, 2, None, tp) == row["page_size_bytes"]
    assert inspect(m, tp=tp).mamba_state_bytes_per_seq == len(kda) * row["page_size_bytes"]


def test_kimi_linear_total_is_the_hubs_and_its_kda_layers_as_stored():
    # 49,122,681,728 (Hub safetensors.total); per KDA layer q/k/v, b, the low-rank f and g gates,
    # three short convs, dt_bias, A_log, o_norm, o_proj (the shard headers' tensors)
    r = inspect(KL)
    assert r.params_checkpoint == r.params_total == 49_122_681_728 and r.params_not_loaded == {}
    h, p, d, heads = 2304, 4096, 128, 32
    kda = 3 * p * h + heads * h + 2 * (d * h + p * d) + 3 * p * 4 + p + heads + d + h * p
    assert r.params_breakdown["mamba"] + 20 * d == 20 * kda  # o_norm counts as a norm
    # vLLM holds the convs, dt_bias and A_log in float32: 2 bytes more each than bf16
    fp32 = 20 * (3 * p * 4 + p + heads)
    assert r.weight_breakdown_per_gpu["mamba"] == 2 * r.params_breakdown["mamba"] + 2 * fp32


# ---- bad input -----------------------------------------------------------------------------------


def _broken(model_id: str, edit) -> dict:
    cfg = copy.deepcopy(config_of(model_id))
    edit(cfg)
    return cfg


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: c.pop("vision_config"), "vision_config"),
        (lambda c: c["vision_config"].pop("vt_num_hidden_layers"), "vt_num_hidden_layers"),
        (lambda c: c["vision_config"].__setitem__("vt_num_attention_heads", 7), "vt_num_attention_heads"),
        (lambda c: c["vision_config"].__setitem__("text_hidden_size", 4096), "text_hidden_size"),
        (lambda c: c["vision_config"].__setitem__("mm_projector_type", "mlp"), "mm_projector_type"),
        (lambda c: c["vision_config"].__setitem__("merge_kernel_size", [2]), "merge_kernel_size"),
        (lambda c: c["text_config"].__setitem__("num_experts_per_tok", 400), "num_experts_per_tok"),
        (lambda c: c["text_config"].pop("n_routed_experts"), "n_routed_experts"),
        (lambda c: c["text_config"].__setitem__("model_type", "qwen3"), "text_config.model_type"),
        (lambda c: c.pop("text_config"), "text_config"),
    ],
)
def test_kimi_k25_bad_input_is_a_one_line_error_naming_the_field(edit, field):
    with pytest.raises(PlannerError) as err:
        normalize(_broken(K25, edit))
    assert field in str(err.value) and "\n" not in str(err.value)


def _lin(key, value):
    return lambda c: c["linear_attn_config"].__setitem__(key, value)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: c.pop("linear_attn_config"), "linear_attn_config"),
        (lambda c: c["linear_attn_config"]["kda_layers"].pop(), "kda_layers"),
        (lambda c: c["linear_attn_config"]["full_attn_layers"].append(1), "full_attn_layers"),
        (_lin("kda_layers", "1-26"), "kda_layers"),
        (lambda c: c.__setitem__("num_hidden_layers", 28), "num_hidden_layers"),
        (lambda c: c["linear_attn_config"].pop("num_heads"), "num_heads"),
        (_lin("short_conv_kernel_size", 1), "short_conv_kernel_size"),
        (_lin("use_full_rank_gate", True), "use_full_rank_gate"),
        (lambda c: c.__setitem__("attn_res_block_size", 12), "attn_res_block_size"),
        (lambda c: c.__setitem__("routed_expert_hidden_size", 1152), "routed_expert_hidden_size"),
        (lambda c: c.__setitem__("num_experts_per_token", 300), "num_experts_per_token"),
        (lambda c: c.pop("kv_lora_rank"), "kv_lora_rank"),
        (lambda c: c.__setitem__("mla_use_nope", False), "mla_use_nope"),
        (lambda c: c.__setitem__("num_nextn_predict_layers", 1), "num_nextn_predict_layers"),
    ],
)
def test_kimi_linear_bad_input_is_a_one_line_error_naming_the_field(edit, field):
    with pytest.raises(PlannerError) as err:
        normalize(_broken(KL, edit))
    assert field in str(err.value) and "\n" not in str(err.value)


def test_kimi_k3_parts_against_the_hubs_dtype_split():
    # Hub: U8 2,722,740,830,208 (the MXFP4 routed experts, one per value), total 2,779,931,837,184
    r = inspect(K3)
    assert r.quantization == "mxfp4" and r.params_breakdown["experts"] == 92 * 896 * 3 * 3584 * 3072
    assert r.params_checkpoint == r.params_total == 2_779_931_837_184 - 2_208
    # MoonViT3d: conv 3 x 14 x 14 -> 1024, a 64 x 64 table, 27 RMSNorm blocks (wqkv 1024 -> 3 x 1536,
    # wo, fc0/fc1 of 4096, no biases), a final RMSNorm; patchmergerv2 4096 -> 4096 -> 7168 + RMSNorm
    h, q = 1024, 1536
    tower = 3 * 14 * 14 * h + 64 * 64 * h + 27 * (2 * h + 4 * h * q + 2 * h * 4096) + h
    assert r.params_breakdown["vision"] == tower + 4 * h * 4 * h + 4 * h * 7168 + 7168 == 447_358_976
    assert r.kv_bytes_per_token_per_gpu == 24 * 576 * 2  # the 24 MLA layers; 69 KDA layers keep a state


def _text(edit):
    return lambda c: edit(c["text_config"])


@pytest.mark.parametrize(
    "edit, field",
    [
        (_text(lambda t: t.pop("attn_res_block_size")), "attn_res_block_size"),
        (_text(lambda t: t.pop("routed_expert_hidden_size")), "routed_expert_hidden_size"),
        (_text(lambda t: t["linear_attn_config"].pop("use_full_rank_gate")), "use_full_rank_gate"),
        (_text(lambda t: t["linear_attn_config"]["full_attn_layers"].pop()), "full_attn_layers"),
        (_text(lambda t: t.__setitem__("hidden_act", "gelu")), "hidden_act"),
        (_text(lambda t: t.__setitem__("model_type", "deepseek_v3")), "text_config.model_type"),
        (lambda c: c["vision_config"].__setitem__("norm_type", "layernorm"), "norm_type"),
        (lambda c: c["vision_config"].__setitem__("attn_bias", True), "attn_bias"),
        (lambda c: c["vision_config"].__setitem__("qkv_hidden_size", 1000), "qkv_hidden_size"),
        (lambda c: c.pop("vision_config"), "vision_config"),
        (_text(lambda t: t["quantization_config"].__setitem__("format", "pack-quantized")), "quantization_config"),
    ],
)
def test_kimi_k3_bad_input_is_a_one_line_error_naming_the_field(edit, field):
    with pytest.raises(PlannerError) as err:
        normalize(_broken(K3, edit))
    assert field in str(err.value) and "\n" not in str(err.value)


def test_minimax_m27_contradictory_layer_list_is_an_error():
    with pytest.raises(PlannerError) as err:
        normalize(_broken(M27, lambda c: c["attn_type_list"].pop()))
    assert "attn_type_list" in str(err.value) and "\n" not in str(err.value)


def test_bad_input_exits_2(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(_broken(K25, lambda c: c["vision_config"].pop("vt_hidden_size"))))
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "vt_hidden_size" in err and len(err.splitlines()) == 1
