"""More registered families (planner/models/families/: minimax_m2, qwen3_vl, gemma4, mimo_v2; Qwen3.6 on
qwen3_5): their parts against published and independent counts, the per-layer KV geometry of Gemma 4
and MiMo-V2 against vLLM's own specs (the CPU build, tests/vllm_layer_oracle.py), bad input as
one-line errors naming the field, exit status 2."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from launch_helpers import VLLM_ABSENT, vllm_python
from test_families import NEW_PROFILES, config_of

from planner.api import inspect, load_model
from planner.cli import main
from planner.errors import PlannerError
from planner.models.normalize import normalize

# family -> its bundled profiles: the rows of test_families.NEW_PROFILES, which inspects, plans at TP 1
# and 8, plans an inventory and emits each; test_vllm_parity checks their uniform KV geometry
PROFILES = {f: NEW_PROFILES[f] for f in ("minimax_m2", "qwen3_vl", "gemma4")}
# configs without a bundled profile (no published total found offline): tests/data/configs
MIMO = str(Path(__file__).parent / "data" / "configs" / "XiaomiMiMo--MiMo-V2-Flash_config.json")


def _broken(model_id: str, edit) -> dict:
    """The bundled profile's (or a tests/data config file's) config.json with one edit."""
    cfg = json.loads(Path(model_id).read_text()) if model_id.endswith(".json") else copy.deepcopy(config_of(model_id))
    edit(cfg)
    return cfg


# ---- MiniMax-M2 ------------------------------------------------------------------------------------


def test_minimax_m2_parts():
    # 62 layers x (q 6144 + k 1024 + v 1024 + o) GQA, whole-projection q/k norms (6144 + 1024 per
    # layer), 256 experts of 3 x 3072 x 1536; the published total adds the 128x128 fp8 block scales
    r = inspect("MiniMaxAI/MiniMax-M2.5")
    assert r.params_breakdown["norms"] == 62 * (2 * 3072 + 6144 + 1024) + 3072
    assert r.params_breakdown["experts"] == 62 * 256 * 3 * 3072 * 1536
    assert r.params_checkpoint - r.params_total == 13_880_064
    assert r.kv_bytes_per_token_per_gpu == 62 * 2 * 8 * 128 * 2
    # vLLM's GateLinear(params_dtype=float32): the router weights take 4 bytes each, not a parameter more
    assert r.weight_breakdown_per_gpu["router"] - 62 * 256 * 3072 * 4 in range(0, 62 * 256 * 4 + 1)


# ---- Qwen3-VL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_id, text, vision",
    [
        # language model: embedding (+ head unless tied) + layers; vision: 2 x 2 x 16 x 16 x 3 Conv3d
        # patches, a 2304-row position table, 27 blocks, the merger and 3 DeepStack mergers
        ("Qwen/Qwen3-VL-8B-Instruct", 8_190_735_360, 576_388_336),
        ("Qwen/Qwen3-VL-2B-Instruct", 1_720_574_976, 406_957_056),
        ("Qwen/Qwen3-VL-30B-A3B-Instruct", 30_532_122_624, 538_631_408),
    ],
)
def test_qwen3_vl_text_and_vision_parts(model_id, text, vision):
    r = inspect(model_id)
    assert r.params_breakdown["vision"] == vision and r.params_total - vision == text
    assert r.params_not_loaded == {}


def test_qwen3_vl_moe_text_is_qwen3_moe():
    # Qwen3-VL-30B-A3B's language model has Qwen3-30B-A3B's shapes: the same count, bundled apart
    vl, text = inspect("Qwen/Qwen3-VL-30B-A3B-Instruct"), inspect("Qwen/Qwen3-30B-A3B")
    assert vl.params_total - vl.params_breakdown["vision"] == text.params_total
    assert vl.kv_bytes_per_token_per_gpu == text.kv_bytes_per_token_per_gpu


def test_qwen3_vl_deepstack_mergers_are_counted():
    cfg = config_of("Qwen/Qwen3-VL-8B-Instruct")
    with_ds = normalize(cfg).vision
    without = normalize(
        _broken("Qwen/Qwen3-VL-8B-Instruct", lambda c: c["vision_config"].pop("deepstack_visual_indexes"))
    )
    wide = 1152 * 4
    merger = wide * wide + wide + wide * 4096 + 4096 + 2 * wide  # fc1, fc2 (+ biases), its LayerNorm over 4h
    assert with_ds.projector_column_params + with_ds.projector_replicated_params == (
        without.vision.projector_column_params + without.vision.projector_replicated_params + 3 * merger
    )


# ---- Qwen3.6 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "new, old", [("Qwen/Qwen3.6-27B", "Qwen/Qwen3.5-27B"), ("Qwen/Qwen3.6-35B-A3B", "Qwen/Qwen3.5-35B-A3B")]
)
def test_qwen3_6_is_qwen3_5_shaped(new, old):
    a, b = inspect(new, tp=2), inspect(old, tp=2)
    assert (a.params_breakdown, a.params_not_loaded) == (b.params_breakdown, b.params_not_loaded)
    assert (a.kv_bytes_per_token_per_gpu, a.mamba_state_bytes_per_seq) == (
        b.kv_bytes_per_token_per_gpu,
        b.mamba_state_bytes_per_seq,
    )


# ---- Gemma 4 and MiMo-V2: per-layer KV geometry ---------------------------------------------------


def test_gemma4_parts():
    # transformers' Gemma4ForConditionalGeneration on the meta device: 25,805,933,872 parameters,
    # of them the vision tower 569,548,080 and embed_vision 1152 x 2816; the checkpoint adds the
    # std_bias / std_scale buffers (2 x 1152) and one layer_scalar per layer
    r = inspect("google/gemma-4-26B-A4B")
    assert r.params_breakdown["vision"] == 569_548_080 + 1152 * 2816 + 2 * 1152
    assert r.params_checkpoint - 30 - 2 * 1152 == 25_805_933_872
    # K = V full layers: vLLM's qkv_proj holds a V copy of k_proj (2 x 512 rows), memory without parameters
    full = inspect("google/gemma-4-26B-A4B", tp=1).weight_breakdown_per_gpu["attention"]
    assert full - 2 * r.params_breakdown["attention"] == 5 * 2 * 512 * 2816 * 2
    # two rotary caches in bf16: the sliding layers' (262,144 x 256) and the full layers' proportional one
    # as wide as their 512-wide heads (Gemma4RotaryEmbedding passes rotary_dim = head_size)
    assert inspect("google/gemma-4-26B-A4B").weight_breakdown_per_gpu["buffers"] == 262144 * (256 + 512) * 2


@pytest.fixture(scope="module")
def mimo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mimo")
    shutil.copy(MIMO, d / "config.json")
    return d


def test_mimo_v2_parts(mimo_dir):
    r = inspect(str(mimo_dir))
    # layer 0 dense (16,384), 47 MoE layers of 256 experts x 3 x 4096 x 2048
    assert r.params_breakdown["experts"] == 47 * 256 * 3 * 4096 * 2048
    assert r.params_breakdown["mlp"] == 3 * 4096 * 16384
    # 9 full layers: 4 KV heads x (192 + 128); 39 sliding (window 128): 8 KV heads x (192 + 128)
    assert r.kv_bytes_per_token_by_kind == {"full": 9 * 4 * 320 * 2, "sliding": 39 * 8 * 320 * 2}


LAYER_TPS = (1, 2, 8)


@pytest.fixture(scope="module")
def vllm_layers(mimo_dir):
    py = vllm_python()
    if py is None:
        pytest.skip(VLLM_ABSENT)
    dirs = {m: str(sources_dir(m)) for m in PROFILES["gemma4"]} | {"mimo": str(mimo_dir)}
    out = {}
    for tp in LAYER_TPS:
        proc = subprocess.run(
            [py, str(Path(__file__).parent / "vllm_layer_oracle.py"), *dirs.values(), "--tp", str(tp)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        rows = {json.loads(l)["config"]: json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")}
        out.update({(m, tp): rows.get(d) for m, d in dirs.items()})
    return out


def sources_dir(model_id):
    from planner.models import sources

    return sources.find_bundled(model_id)


@pytest.mark.parametrize("model_id", PROFILES["gemma4"] + ["mimo"])
@pytest.mark.parametrize("tp", LAYER_TPS)
def test_per_layer_kv_matches_vllm(vllm_layers, mimo_dir, model_id, tp):
    from planner.accounting import kv_heads_per_rank
    from planner.kv_bytes import attention_geometry
    from planner.kv_layout import build_layout

    row = vllm_layers[(model_id, tp)]
    assert row is not None and "error" not in row, row
    m = load_model(str(mimo_dir) if model_id == "mimo" else model_id)
    spec = m.spec
    assert [l.attention for l in spec.layers] == [x["kind"] for x in row["layers"]]
    lay = build_layout(spec, range(spec.num_layers), tp, 2, 16)
    blocks = {g.kind: g.block_size or lay.block_size for g in lay.groups}
    for layer, x in zip(spec.layers, row["layers"]):
        heads, k, v = attention_geometry(spec, layer.attention)
        assert (kv_heads_per_rank(heads, tp), k, v) == (x["heads"], x["k"], x["v"])
        assert layer.window == x["window"]
        # vLLM's unify_kv_cache_spec_page_size: one page size, the smaller kind's block size raised
        assert (blocks[layer.attention], lay.page_bytes) == (x["block_size"], x["page_size_bytes"])
    assert spec.max_model_len_default == row["max_model_len"]


# ---- bad input -----------------------------------------------------------------------------------

BAD = [
    ("MiniMaxAI/MiniMax-M2.5", lambda c: c.pop("num_local_experts"), "num_local_experts"),
    ("MiniMaxAI/MiniMax-M2.5", lambda c: c.__setitem__("num_experts_per_tok", 300), "num_experts_per_tok"),
    ("MiniMaxAI/MiniMax-M2.5", lambda c: c.__setitem__("attn_type_list", [1] * 61), "attn_type_list"),
    ("MiniMaxAI/MiniMax-M2.5", lambda c: c.__setitem__("attn_type_list", [0] + [1] * 61), "attn_type_list"),
    ("MiniMaxAI/MiniMax-M2.5", lambda c: c.__setitem__("rotary_dim", 256), "rotary_dim"),
    ("MiniMaxAI/MiniMax-M2.5", lambda c: c.pop("head_dim"), "head_dim"),
    ("MiniMaxAI/MiniMax-M2.5", lambda c: c.__setitem__("shared_intermediate_size", 1536), "shared_intermediate_size"),
    ("Qwen/Qwen3-VL-8B-Instruct", lambda c: c.pop("text_config"), "text_config"),
    ("Qwen/Qwen3-VL-8B-Instruct", lambda c: c["vision_config"].__setitem__("out_hidden_size", 2048), "out_hidden_size"),
    (
        "Qwen/Qwen3-VL-8B-Instruct",
        lambda c: c["vision_config"].__setitem__("deepstack_visual_indexes", [30]),
        "deepstack",
    ),
    ("Qwen/Qwen3-VL-8B-Instruct", lambda c: c["vision_config"].pop("num_position_embeddings"), "num_position"),
    (
        "Qwen/Qwen3-VL-32B-Instruct",
        lambda c: c["text_config"]["rope_scaling"].__setitem__("mrope_section", [24, 20, 10]),
        "mrope_section",
    ),
    ("Qwen/Qwen3-VL-30B-A3B-Instruct", lambda c: c["text_config"].pop("num_experts"), "num_experts"),
    ("Qwen/Qwen3-VL-30B-A3B-Instruct", lambda c: c["text_config"].pop("moe_intermediate_size"), "moe_intermediate"),
    ("google/gemma-4-26B-A4B", lambda c: c["text_config"]["layer_types"].pop(), "layer_types"),
    ("google/gemma-4-26B-A4B", lambda c: c["text_config"]["layer_types"].__setitem__(0, "chunked"), "layer_types"),
    ("google/gemma-4-26B-A4B", lambda c: c["text_config"].pop("global_head_dim"), "global_head_dim"),
    (
        "google/gemma-4-26B-A4B",
        lambda c: c["text_config"].pop("num_global_key_value_heads"),
        "num_global_key_value_heads",
    ),
    ("google/gemma-4-26B-A4B", lambda c: c["text_config"].__setitem__("enable_moe_block", False), "enable_moe_block"),
    ("google/gemma-4-26B-A4B", lambda c: c["text_config"].__setitem__("top_k_experts", 129), "top_k_experts"),
    ("google/gemma-4-26B-A4B", lambda c: c["text_config"].pop("moe_intermediate_size"), "moe_intermediate_size"),
    (
        "google/gemma-4-26B-A4B",
        lambda c: c["text_config"].__setitem__("hidden_size_per_layer_input", "256"),
        "hidden_size_per_layer_input",
    ),
    (
        "google/gemma-4-26B-A4B",
        lambda c: c["text_config"].__setitem__("num_kv_shared_layers", 30),
        "num_kv_shared_layers",
    ),
    ("google/gemma-4-31B-it", lambda c: c["vision_config"].__setitem__("head_dim", 64), "head_dim"),
    ("google/gemma-4-31B-it", lambda c: c.__setitem__("audio_config", {"hidden_size": 1536}), "audio_config"),
    ("google/gemma-4-31B-it", lambda c: c["text_config"].pop("sliding_window"), "sliding_window"),
    (MIMO, lambda c: c["hybrid_layer_pattern"].pop(), "hybrid_layer_pattern"),
    (MIMO, lambda c: c["moe_layer_freq"].__setitem__(3, 2), "moe_layer_freq"),
    (MIMO, lambda c: c.pop("swa_num_key_value_heads"), "swa_num_key_value_heads"),
    (MIMO, lambda c: c.pop("swa_head_dim"), "swa_head_dim"),
    (MIMO, lambda c: c.__setitem__("num_experts_per_tok", 257), "num_experts_per_tok"),
    (MIMO, lambda c: c.__setitem__("n_shared_experts", 1), "n_shared_experts"),
]


@pytest.mark.parametrize("model_id, edit, field", BAD)
def test_bad_input_is_a_one_line_error_naming_the_field(model_id, edit, field):
    with pytest.raises(PlannerError) as err:
        normalize(_broken(model_id, edit))
    assert field in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("model_id, edit, field", BAD)
def test_bad_input_exits_2(model_id, edit, field, tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(_broken(model_id, edit)))
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert field in err and len(err.splitlines()) == 1
