"""MiniMax-M3 (bundled: profiles/models/MiniMaxAI/MiniMax-M3, aiconfigurator's text config; where it
comes from, its meta.yaml says): inspect and plan at TP 1 and 8, inventory and emit; the Hub total
427,040,140,160 met once the upload's vision tower is put back (the minimax_m3_vl wrapper as
nvidia/MiniMax-M3-NVFP4's config.json has it); the GQA and key-only index-cache pages against vLLM's
own MiniMaxM3IndexerCache and get_kv_cache_groups (the CPU build: tests/vllm_minimax_m3_oracle.py);
bad input as one-line errors naming the field, exit status 2."""

from __future__ import annotations

import copy
import json

import pytest
from launch_helpers import oracle_rows
from test_families import test_inventory_plan_and_emit as inventory_and_emit

from planner.api import check_parallel, inspect, load_model, plan
from planner.cli import main
from planner.errors import PlannerError
from planner.kv_layout import build_layout
from planner.models import sources
from planner.models.normalize import normalize

M3 = "MiniMaxAI/MiniMax-M3"
HUB_TOTAL = 427_040_140_160  # BF16 426,993,800,960 + F32 46,339,200 (meta.yaml names the sources)

# nvidia/MiniMax-M3-NVFP4's config.json (aiconfigurator-core 0.12.0 model_configs/
# nvidia--MiniMax-M3-NVFP4_config.json): the minimax_m3_vl wrapper's fields the tower reads, as stored
WRAPPER = {
    "architectures": ["MiniMaxM3SparseForConditionalGeneration"],
    "model_type": "minimax_m3_vl",
    "img_token_compression_config": {
        "image_token_compression_method": "patch_merge",
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "multimodal_projector_bias": True,
    "projector_hidden_act": "gelu",
    "projector_hidden_size": 6144,
    "torch_dtype": "bfloat16",
    "vision_config": {
        "hidden_size": 1280,
        "num_attention_heads": 16,
        "num_hidden_layers": 32,
        "intermediate_size": 5120,
        "patch_size": 14,
        "image_size": 2016,
        "projection_dim": 6144,
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_channels": 3,
    },
}


def config_of(model_id: str) -> dict:
    return json.loads((sources.find_bundled(model_id) / "config.json").read_text())


@pytest.mark.parametrize("tp", [1, 8])
def test_inspect_and_plan_at_tp(tp):
    m = load_model(M3)
    check_parallel(m.spec, tp, 1)
    r = inspect(m, tp=tp)
    assert r.params_published is None and r.weight_bytes_per_gpu > 0
    p = plan(m, gpu="H200", tp=tp, max_model_len=32768)
    assert p.budget.block_size > 0 and p.serve_command.startswith("vllm serve ")


def test_inventory_plan_and_emit(tmp_path, capsys):
    inventory_and_emit(M3, tmp_path, capsys)


def test_text_parts_and_the_float32_routers():
    r = inspect(M3)
    assert r.params_total == r.params_checkpoint == 426_174_572_928
    # F32 on the Hub, 46,339,200: the 57 MoE layers' routers and routing biases, 128 x (6144 + 1) each,
    # and the tower's Conv3d patch embedding, 1280 x (3 x 2 x 14 x 14)
    assert r.params_breakdown["router"] == 57 * 128 * 6145 == 46_339_200 - 1280 * 1176
    assert r.params_not_loaded == {}  # no MTP weights stored
    # active: 4 of 128 routed experts per MoE layer, the shared expert, the dense MLPs
    experts = r.params_breakdown["experts"]
    assert r.params_active == r.params_total - experts + experts // 32


def test_the_hub_total_with_the_uploads_vision_tower(tmp_path):
    wrapper = copy.deepcopy(WRAPPER) | {"text_config": config_of(M3)}
    (tmp_path / "config.json").write_text(json.dumps(wrapper))
    r = inspect(str(tmp_path))
    assert r.params_checkpoint == r.params_total == HUB_TOTAL
    assert r.params_breakdown["vision"] == HUB_TOTAL - inspect(M3).params_total == 865_567_232
    assert r.kv_bytes_per_token_per_gpu == inspect(M3).kv_bytes_per_token_per_gpu


@pytest.mark.parametrize("tp, per_token", [(1, 60 * 4 * 256 * 2 + 57 * 256), (4, 60 * 512 + 57 * 256), (8, 45_312)])
def test_kv_bytes_per_token_count_the_index_keys(tp, per_token):
    r = inspect(M3, tp=tp)
    assert r.kv_bytes_per_token_per_gpu == per_token
    assert r.kv_bytes_per_token_by_kind["indexer"] == 57 * 256  # bf16, whole on every rank


@pytest.fixture(scope="module")
def vllm_rows():
    rows = oracle_rows("vllm_minimax_m3_oracle.py", str(sources.find_bundled(M3)), "--tp", "1", "4", "8")
    return {row["tp"]: row for row in rows}


@pytest.mark.parametrize("tp", [1, 4, 8])
def test_pages_are_vllms_uniform_type_group(vllm_rows, tp):
    row = vllm_rows[tp]
    ((group,),) = [row["groups"]]  # GQA and index-key pages in one UniformTypeKVCacheSpecs group
    spec = load_model(M3).spec
    lay = build_layout(spec, range(spec.num_layers), tp, 2, 64)
    assert lay.bytes_per_block == group["page_size_bytes"] == row["bytes_per_block"]
    attn, index = group["pages"]["attn"], group["pages"]["index"]
    assert (lay.group_size, [lay.page_bytes]) == (attn[0], attn[1])
    assert lay.indexer_block_bytes == index[0] * index[1][0] and row["sparse_layers"] == len(spec.index_key_layers)
    assert lay.bytes_per_block == 64 * inspect(M3, tp=tp).kv_bytes_per_token_per_gpu


# ---- bad input -----------------------------------------------------------------------------------


def _broken(edit) -> dict:
    cfg = copy.deepcopy(config_of(M3))
    edit(cfg)
    return cfg


def _sparse(c: dict) -> dict:
    return c["sparse_attention_config"]


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: _sparse(c)["sparse_attention_freq"].pop(), "sparse_attention_freq"),  # one layer short
        (lambda c: _sparse(c).pop("sparse_attention_freq"), "sparse_attention_freq"),
        (lambda c: _sparse(c).pop("sparse_index_dim"), "index_head_dim"),  # an indexer without its size
        (lambda c: _sparse(c).__setitem__("sparse_num_index_heads", 8), "index_n_heads"),  # != kv heads
        (lambda c: _sparse(c)["sparse_disable_index_value"].__setitem__(10, 0), "sparse_disable_index_value"),
        (lambda c: c["moe_layer_freq"].append(1), "moe_layer_freq"),  # 61 entries for 60 layers
        (lambda c: c.__setitem__("partial_rotary_factor", 0.25), "rotary_dim"),  # contradicts rotary_dim 64
        (lambda c: c.__setitem__("qk_norm_type", "per_layer"), "qk_norm_type"),
        (lambda c: c.__setitem__("num_experts_per_tok", 129), "num_experts_per_tok"),
        (lambda c: c.pop("dense_intermediate_size"), "dense_intermediate_size"),
    ],
)
def test_bad_config_is_a_one_line_error_naming_the_field(edit, field):
    with pytest.raises(PlannerError) as err:
        normalize(_broken(edit))
    assert field in str(err.value) and "\n" not in str(err.value)


def test_bad_wrapper_without_vision_config(tmp_path):
    wrapper = {k: v for k, v in WRAPPER.items() if k != "vision_config"} | {"text_config": config_of(M3)}
    with pytest.raises(PlannerError, match="vision_config"):
        normalize(wrapper)


def test_bad_config_exits_2(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(_broken(lambda c: _sparse(c)["sparse_attention_freq"].pop())))
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "sparse_attention_freq" in err and len(err.splitlines()) == 1
