"""The families registered in planner/models/families/ (one module each): every new bundled profile
inspects, plans at TP 1 and 8 where valid, plans an inventory and emits; published breakdowns;
recurrent state against vLLM's own model classes (the CPU build, tests/vllm_oracle.py); bad input
as one-line errors naming the field.

The published totals themselves are checked for every bundled profile by
test_accounting.py::test_every_bundled_published_count_is_met; the KV geometry of every bundled
profile vLLM accepts by test_vllm_parity.py."""

from __future__ import annotations

import copy
import json
import math
import subprocess
from pathlib import Path

import pytest
from launch_helpers import VLLM_ABSENT, vllm_python

from planner import kv_bytes as kvb
from planner.api import check_parallel, inspect, load_model, plan
from planner.cli import main
from planner.errors import PlannerError
from planner.models import families, sources
from planner.models.normalize import normalize

REPO = Path(__file__).resolve().parent.parent
# family -> its bundled profiles
NEW_PROFILES = {
    "qwen3_5": [
        "Qwen/Qwen3.5-27B",
        "Qwen/Qwen3.5-35B-A3B",
        "Qwen/Qwen3.5-122B-A10B",
        "Qwen/Qwen3.5-397B-A17B",
        "Qwen/Qwen3.6-27B",
        "Qwen/Qwen3.6-35B-A3B",
    ],
    "deepseek_v32": [
        "deepseek-ai/DeepSeek-V3.2",
        "zai-org/GLM-5",
        "zai-org/GLM-5-FP8",
        "zai-org/GLM-5.1",
        "zai-org/GLM-5.1-FP8",
        "zai-org/GLM-5.2",  # IndexShare: tests/test_families_glm5_2.py (vLLM's own grouping)
        "zai-org/GLM-5.3",
    ],
    # tests/test_families_deepseek_v4.py: packed KV groups against vLLM, parts, bad input
    "deepseek_v4": ["deepseek-ai/DeepSeek-V4-Flash", "deepseek-ai/DeepSeek-V4-Pro", "nvidia/DeepSeek-V4-Flash-NVFP4"],
    # more families: tests/test_families_more.py (parts, per-layer KV against vLLM, bad input)
    "minimax_m2": ["MiniMaxAI/MiniMax-M2.5", "MiniMaxAI/MiniMax-M2.7"],
    # tests/test_families_kimi.py: the KDA state against vLLM, bad input
    "kimi_linear": ["moonshotai/Kimi-Linear-48B-A3B-Instruct"],
    "qwen3_vl": [
        "Qwen/Qwen3-VL-2B-Instruct",
        "Qwen/Qwen3-VL-4B-Instruct",
        "Qwen/Qwen3-VL-8B-Instruct",
        "Qwen/Qwen3-VL-32B-Instruct",
        "Qwen/Qwen3-VL-32B-Thinking",
        "Qwen/Qwen3-VL-30B-A3B-Instruct",
        "Qwen/Qwen3-VL-235B-A22B-Instruct",
    ],
    # E2B/E4B (per-layer embeddings, KV-shared layers, audio): tests/test_families_gemma4_e.py
    "gemma4": ["google/gemma-4-26B-A4B", "google/gemma-4-31B-it", "google/gemma-4-E2B-it", "google/gemma-4-E4B-it"],
    # tests/test_families_nemotron.py and _nemotron_nas.py: parts, state against vLLM, bad input
    "nemotron_h": [
        "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
        "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-NVFP4",
        "nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16",
    ],
    "nemotron_nas": ["nvidia/Llama-3_3-Nemotron-Super-49B-v1"],
}
# New profiles of families normalize.py already had (test_accounting checks their published totals)
EXISTING_FAMILIES = [
    "Qwen/Qwen3-Coder-480B-A35B-Instruct",
    "mistralai/Mixtral-8x22B-v0.1",
    "Qwen/Qwen3-235B-A22B-FP8",
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
]
ALL_NEW = [m for ms in NEW_PROFILES.values() for m in ms]


def config_of(model_id: str) -> dict:
    return json.loads((sources.find_bundled(model_id) / "config.json").read_text())


def test_every_new_profile_is_registered_and_bundled():
    for family, models in NEW_PROFILES.items():
        for model_id in models:
            assert families.find(config_of(model_id)["model_type"]).name == family
            assert load_model(model_id).meta["params_published"], f"{model_id}: no published count"


@pytest.mark.parametrize("model_id", ALL_NEW + EXISTING_FAMILIES)
@pytest.mark.parametrize("tp", [1, 8])
def test_inspect_and_plan_at_tp(model_id, tp):
    m = load_model(model_id)
    try:
        check_parallel(m.spec, tp, 1)
    except PlannerError:
        pytest.skip(f"TP {tp} is not valid for {model_id}")
    r = inspect(m, tp=tp)
    assert r.params_checkpoint == r.params_published
    assert r.kv_bytes_per_token_per_gpu > 0 and r.weight_bytes_per_gpu > 0
    p = plan(m, gpu="H200", tp=tp, max_model_len=32768)
    assert p.budget.block_size > 0 and p.serve_command.startswith("vllm serve ")


@pytest.mark.parametrize("model_id", ALL_NEW)
def test_inventory_plan_and_emit(model_id, tmp_path, capsys):
    assert main(["plan", model_id, "--inventory", "2x8xH200", "--max-model-len", "32768", "--json"]) in (0, 1)
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["model"] == model_id for r in rows)
    code = main(["emit", model_id, "--gpu", "H200", "--max-model-len", "32768", "-f", "serve", "--out", str(tmp_path)])
    assert code in (0, 1) and any(tmp_path.iterdir())


# ---- published breakdowns ------------------------------------------------------------------------


def test_qwen3_5_397b_parts_match_the_checkpoint_audit():
    # A public audit of the Hub files (search-index file id 69814713714): vision 456,010,480,
    # MTP 6,595,568,128, text 396,346,350,336 (embedding and head included).
    r = inspect("Qwen/Qwen3.5-397B-A17B")
    assert r.params_breakdown["vision"] == 456_010_480
    assert r.params_not_loaded == {"mtp": 6_595_568_128}
    assert r.params_total - r.params_breakdown["vision"] == 396_346_350_336


def test_dsa_published_totals_split_as_the_checkpoints_store_them():
    # DeepSeek-V3.2's Hub total leaves out its F8_E8M0 block scales; V3.2-Exp's upload (F32 scales,
    # same shapes) counts them: 685,396,921,376 (search-index file id 69468411049)
    r = inspect("deepseek-ai/DeepSeek-V3.2")
    scales = 685_396_921_376 - r.params_published
    assert r.params_checkpoint == r.params_published and scales == 41_591_584
    # GLM-5-FP8's F32 block scales are the whole difference to the bf16 upload; vLLM upcasts the
    # indexer's fp8 wk and drops its scale (1 x 48 blocks in each of 78 layers)
    fp8, bf16 = inspect("zai-org/GLM-5-FP8"), inspect("zai-org/GLM-5")
    assert fp8.params_not_loaded["attention"] == 78 * 48
    assert fp8.params_total == bf16.params_total


# ---- recurrent state against vLLM's classes --------------------------------------------------------

QWEN3_5_TPS = (1, 2, 4)


def oracle_rows(py: str, models: list[str], tp: int) -> dict:
    """tests/vllm_oracle.py's line for each bundled model at this TP (one vLLM process)."""
    dirs = {m: sources.find_bundled(m) for m in models}
    proc = subprocess.run(
        [py, str(REPO / "tests" / "vllm_oracle.py"), *map(str, dirs.values()), "--tp", str(tp)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    rows = {str(Path(json.loads(l)["config"])): json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")}
    return {m: rows.get(str(d)) for m, d in dirs.items()}


@pytest.fixture(scope="module")
def vllm_state():
    py = vllm_python()
    if py is None:
        pytest.skip(VLLM_ABSENT)
    out = {}
    for tp in QWEN3_5_TPS:
        out.update({(m, tp): row for m, row in oracle_rows(py, NEW_PROFILES["qwen3_5"], tp).items()})
    return out


_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@pytest.mark.parametrize("model_id", NEW_PROFILES["qwen3_5"])
@pytest.mark.parametrize("tp", QWEN3_5_TPS)
def test_qwen3_5_state_matches_vllm(vllm_state, model_id, tp):
    row = vllm_state[(model_id, tp)]
    assert row is not None and "error" not in row, row
    mamba = row["mamba"]
    assert "error" not in mamba, mamba
    m = load_model(model_id)
    conv, ssm = kvb.mamba_layer_state_shapes(m.spec, tp)
    # vLLM stores the GDN conv state transposed (kernel - 1, channels): same bytes
    assert sorted(conv) == sorted(mamba["shapes"][0]) and list(ssm) == mamba["shapes"][1]
    # the SSM dtype is the checkpoint's mamba_ssm_dtype, by the model's own config hook
    assert m.spec.mamba.ssm_dtype == mamba["model_hook_ssm_cache_dtype"]
    expected = math.prod(mamba["shapes"][0]) * 2 + math.prod(mamba["shapes"][1]) * _BYTES[mamba["dtypes"][1]]
    assert kvb.mamba_layer_state_bytes(m.spec, 2, 2, tp) == expected == mamba["page_size_bytes"]
    n_linear = m.spec.layer_type_counts()["linear"]
    assert inspect(m, tp=tp).mamba_state_bytes_per_seq == n_linear * expected


# ---- bad input -----------------------------------------------------------------------------------


def _broken(model_id: str, edit) -> dict:
    cfg = copy.deepcopy(config_of(model_id))
    edit(cfg)
    return cfg


@pytest.mark.parametrize(
    "model_id, edit, field",
    [
        ("Qwen/Qwen3.5-27B", lambda c: c["text_config"]["layer_types"].pop(), "layer_types"),
        (
            "Qwen/Qwen3.5-27B",
            lambda c: c["text_config"]["layer_types"].__setitem__(3, "sliding_attention"),
            "layer_types",
        ),
        ("Qwen/Qwen3.5-35B-A3B", lambda c: c["text_config"].pop("num_experts"), "num_experts"),
        ("Qwen/Qwen3.5-35B-A3B", lambda c: c["text_config"].__setitem__("mamba_ssm_dtype", "fp4"), "mamba_ssm_dtype"),
        ("Qwen/Qwen3.5-35B-A3B", lambda c: c.pop("text_config"), "text_config"),
        (
            "Qwen/Qwen3.5-35B-A3B",
            lambda c: c["vision_config"].__setitem__("deepstack_visual_indexes", [99]),
            "deepstack_visual_indexes",
        ),
    ],
)
def test_bad_input_is_a_one_line_error_naming_the_field(model_id, edit, field):
    with pytest.raises(PlannerError) as err:
        normalize(_broken(model_id, edit))
    assert field in str(err.value) and "\n" not in str(err.value)


def test_bad_input_exits_2(tmp_path, capsys):
    cfg = _broken("Qwen/Qwen3.5-27B", lambda c: c["text_config"]["layer_types"].pop())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "layer_types" in err and len(err.splitlines()) == 1


# ---- DSA caches against vLLM's classes --------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_dsa():
    py = vllm_python()
    if py is None:
        pytest.skip(VLLM_ABSENT)
    return oracle_rows(py, DSA_EVERY_LAYER, 8)


DSA_EVERY_LAYER = NEW_PROFILES["deepseek_v32"][:5]  # an indexer in every layer


@pytest.mark.parametrize("model_id", DSA_EVERY_LAYER)
def test_dsa_latent_and_indexer_pages_match_vllm(vllm_dsa, model_id):
    row = vllm_dsa[model_id]
    assert row is not None and "error" not in row, row
    m = load_model(model_id)
    r = inspect(m, tp=8)
    layers = m.spec.num_layers
    assert row["use_mla"] and row["num_layers"] == layers
    # one uniform-type group: every layer's latent page and its indexer page share the block ids
    assert r.kv_bytes_per_token_by_kind == {
        "mla": row["page_size_bytes_per_layer"] // 16 * layers,
        "indexer": row["indexer_page_size_bytes_per_layer"] // 16 * layers,
    }
    from planner.kv_layout import build_layout

    lay = build_layout(m.spec, range(layers), 8, 2, 16)
    assert lay.bytes_per_block == layers * (row["page_size_bytes_per_layer"] + row["indexer_page_size_bytes_per_layer"])
    assert m.spec.max_model_len_default == row["max_model_len"]


@pytest.mark.parametrize(
    "model_id, edit, field",
    [
        ("deepseek-ai/DeepSeek-V3.2", lambda c: c.pop("index_head_dim"), "index_head_dim"),
        ("deepseek-ai/DeepSeek-V3.2", lambda c: c.pop("index_n_heads"), "index_n_heads"),
        ("deepseek-ai/DeepSeek-V3.2", lambda c: c.__setitem__("index_head_dim", 100), "index_head_dim"),
        ("deepseek-ai/DeepSeek-V3.2", lambda c: c.pop("index_topk"), "index_topk"),
        ("deepseek-ai/DeepSeek-V3.2", lambda c: c.pop("q_lora_rank"), "q_lora_rank"),
        ("zai-org/GLM-5.2", lambda c: c.__setitem__("index_topk_freq", 0), "index_topk_freq"),
        ("zai-org/GLM-5", lambda c: c.__setitem__("num_experts_per_tok", 300), "num_experts_per_tok"),
    ],
)
def test_dsa_bad_input_is_a_one_line_error_naming_the_field(model_id, edit, field):
    with pytest.raises(PlannerError) as err:
        normalize(_broken(model_id, edit))
    assert field in str(err.value) and "\n" not in str(err.value)
