"""Gemma 4 E2B/E4B (per-layer embeddings, KV-shared layers, the audio tower) and the start-up buffers
that follow max_num_batched_tokens (Gemma 4's per-layer embeddings, Qwen3-VL's DeepStack inputs),
against vLLM's own model classes built on the meta device (tests/vllm_model_oracle.py): which layers
keep a cache and which read another's, each cache's spec, the loaded parameters, the rotary caches
and the start-up buffers. Generic plan/emit/published-count rows: tests/test_families.py."""

from __future__ import annotations

import copy
import json
import math

import pytest
from launch_helpers import oracle_by_model

from planner.api import inspect, load_model
from planner.cli import main
from planner.errors import PlannerError
from planner.kv_bytes import attention_geometry, kv_layer_bytes_per_token
from planner.models import sources
from planner.models.families.qwen3_vl import init_buffer_bytes
from planner.models.normalize import normalize

E_MODELS = ["google/gemma-4-E2B-it", "google/gemma-4-E4B-it"]
GEMMA4 = E_MODELS + ["google/gemma-4-26B-A4B", "google/gemma-4-31B-it"]
QWEN3_VL = [m for m in sources.bundled_ids() if m.startswith("Qwen/Qwen3-VL-")]
ORACLE_TOKENS = 8192
# buffers vLLM registers that the checkpoint stores as parameters (the planner counts them as such)
STORED_BUFFERS = ("layer_scalar", "std_bias", "std_scale")


def config_of(model_id: str) -> dict:
    return json.loads((sources.find_bundled(model_id) / "config.json").read_text())


@pytest.fixture(scope="module")
def vllm_models():
    models = GEMMA4 + QWEN3_VL
    return oracle_by_model("vllm_model_oracle.py", models, "--max-num-batched-tokens", str(ORACLE_TOKENS), timeout=1200)


def _row(vllm_models, model_id):
    row = vllm_models[model_id]
    assert row is not None and "error" not in row, row
    return row


def _index(layer_name: str) -> int:
    return int(layer_name.split(".layers.")[1].split(".")[0])


# ---- against vLLM's model classes ------------------------------------------------------------------


@pytest.mark.parametrize("model_id", GEMMA4)
def test_kv_sharing_and_cache_specs_match_vllm(vllm_models, model_id):
    row = _row(vllm_models, model_id)
    spec = load_model(model_id).spec
    attn = sorted(row["attention"], key=lambda a: _index(a["layer"]))
    assert len(attn) == spec.num_layers
    # the layers vLLM gives no KV spec, and the layer whose cache each reads
    shared = {_index(a["layer"]): _index(a["shared_with"]) for a in attn if "shared_with" in a}
    assert shared == {i: l.kv_shared_with for i, l in enumerate(spec.layers) if l.kv_shared_with is not None}
    # (block sizes are the CPU backend's here; test_families_more checks the GPU engine's, per layer)
    own = [a for a in attn if "shared_with" not in a]
    for a in own:
        layer = spec.layers[_index(a["layer"])]
        assert (layer.attention, layer.window) == (a["kind"], a["window"])
        assert attention_geometry(spec, layer.attention) == (a["heads"], a["k"], a["v"])
        assert kv_layer_bytes_per_token(spec, layer.attention, 1, 2) == a["page_size_bytes"] // a["block_size"]
    # what one token costs: the page per token of every layer that keeps a cache
    assert inspect(model_id).kv_bytes_per_token_per_gpu == sum(a["page_size_bytes"] // a["block_size"] for a in own)


@pytest.mark.parametrize("model_id", GEMMA4)
def test_loaded_parameters_and_rotary_caches_match_vllm(vllm_models, model_id):
    row = _row(vllm_models, model_id)
    m = load_model(model_id)
    stored = sum(math.prod(shape) for name, shape, _ in row["buffers"] if name.endswith(STORED_BUFFERS))
    # vLLM's parameters (K = V layers: the V copy of k_proj included) and the stored buffers
    assert sum(t.numel for t in m.tensors if t.loaded) == row["params"] + stored
    ropes = [(shape, dtype) for name, shape, dtype in row["buffers"] if name.endswith("cos_sin_cache")]
    text_ropes = sum(math.prod(s) * 2 for s, d in ropes if d == "bfloat16" and s[0] == m.spec.max_position_embeddings)
    assert inspect(model_id).weight_breakdown_per_gpu["buffers"] == text_ropes


@pytest.mark.parametrize("model_id", GEMMA4 + QWEN3_VL)
def test_start_up_buffers_match_vllm(vllm_models, model_id):
    row = _row(vllm_models, model_id)
    vllm_bytes = sum(math.prod(shape) * 2 for tensors in row["init_buffers"].values() for shape, dtype in tensors)
    assert all(dtype == "bfloat16" for tensors in row["init_buffers"].values() for _, dtype in tensors)
    assert init_buffer_bytes(load_model(model_id).spec, ORACLE_TOKENS, 2) == vllm_bytes


# ---- the start-up buffers in the budget ---------------------------------------------------------------


def _deepstack_bytes(config: dict, tokens: int) -> int:
    """qwen3_vl.py: one torch.zeros(max_num_batched_tokens, text hidden_size) per deepstack level, in the
    load's default dtype (the checkpoint's bf16)."""
    levels = len(config["vision_config"]["deepstack_visual_indexes"])
    return levels * tokens * config["text_config"]["hidden_size"] * 2


def _ple_bytes(config: dict, tokens: int) -> int:
    """gemma4_mm.py: torch.zeros(max_num_batched_tokens, num_hidden_layers, hidden_size_per_layer_input)."""
    text = config["text_config"]
    return tokens * text["num_hidden_layers"] * (text.get("hidden_size_per_layer_input") or 0) * 2


BUFFER_CASES = [(m, _deepstack_bytes) for m in QWEN3_VL] + [(m, _ple_bytes) for m in GEMMA4]


@pytest.mark.parametrize("model_id, expected", BUFFER_CASES)
@pytest.mark.parametrize("tokens", [2048, 8192])
def test_budget_counts_the_start_up_buffers_as_model_memory(model_id, expected, tokens):
    from planner.api import plan

    p = plan(model_id, gpu="H200", tp=1, max_model_len=8192, max_num_batched_tokens=tokens)
    insp = inspect(model_id)
    assert p.budget.memory.weights_bytes - insp.weight_bytes_per_gpu == expected(config_of(model_id), tokens)


def test_deepstack_of_qwen3_vl_8b_at_8192_tokens():
    # 3 levels x 8,192 x 4,096 x 2 bytes
    assert init_buffer_bytes(load_model("Qwen/Qwen3-VL-8B-Instruct").spec, 8192, 2) == 3 * 2**26 == 0.1875 * 2**30


# ---- pipeline stages -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_id, pp, expected",
    [
        # E4B, 2 stages (layers 0-20, 21-41): each holds full layers, so each its own full-layer cache
        ("google/gemma-4-E4B-it", 2, (131072 * (256 + 512) * 2,) * 2),
        # 26B, 6 stages of 5 layers: the first has no full layer (5, 11, ... are), so no full-layer cache
        ("google/gemma-4-26B-A4B", 6, (262144 * 256 * 2,) + (262144 * (256 + 512) * 2,) * 5),
    ],
)
def test_rotary_caches_on_the_stages_that_build_them(model_id, pp, expected):
    from planner import accounting as acc

    m = load_model(model_id)
    ranges = acc.pp_layer_ranges(m.spec.num_layers, pp)
    per_stage = [0] * pp
    for t in acc.runtime_buffers(m.spec, ranges):
        for s in acc.stage_of(t, ranges, m.spec):
            per_stage[s] += t.numel * 2
    assert tuple(per_stage) == expected


def test_e4b_kv_per_stage_counts_only_the_layers_that_keep_a_cache():
    # stage 0: 18 sliding x 2 heads x (256 + 256) x 2 B + 3 full x 2 x (512 + 512) x 2 B; stage 1 (21-41):
    # layers 21, 22 (sliding) and 23 (full) keep one, 24-41 read 22's and 23's
    assert inspect("google/gemma-4-E4B-it", pp=2).kv_bytes_per_token_per_stage == (49152, 8192)


@pytest.mark.parametrize("model_id, pp", [("google/gemma-4-E2B-it", 2), ("google/gemma-4-E4B-it", 3)])
def test_a_split_vllm_refuses_exits_2(model_id, pp, capsys):
    assert main(["inspect", model_id, "--pp", str(pp)]) == 2
    err = capsys.readouterr().err.strip()
    assert "num_kv_shared_layers" in err and len(err.splitlines()) == 1


def test_tp_8_is_valid_with_the_towers_kept_whole():
    # the vision tower's 12 heads need not divide TP: transformers' module, not split by vLLM
    r = inspect("google/gemma-4-E2B-it", tp=8)
    assert r.weight_breakdown_per_gpu["vision"] == inspect("google/gemma-4-E2B-it").weight_breakdown_per_gpu["vision"]


# ---- bad input -----------------------------------------------------------------------------------------


def _text(edit):
    return lambda c: edit(c["text_config"])


BAD = [
    ("google/gemma-4-E2B-it", _text(lambda t: t.__setitem__("num_kv_shared_layers", 35)), "num_kv_shared_layers"),
    ("google/gemma-4-E2B-it", _text(lambda t: t.__setitem__("num_kv_shared_layers", -1)), "num_kv_shared_layers"),
    # 31 shared layers leave layers 0-3, all sliding: the full ones have no cache to read
    ("google/gemma-4-E2B-it", _text(lambda t: t.__setitem__("num_kv_shared_layers", 31)), "num_kv_shared_layers"),
    (
        "google/gemma-4-E2B-it",
        _text(lambda t: t.__setitem__("hidden_size_per_layer_input", -256)),
        "hidden_size_per_layer_input",
    ),
    ("google/gemma-4-E4B-it", lambda c: c["audio_config"].pop("hidden_size"), "audio_config"),
    ("google/gemma-4-E4B-it", lambda c: c["audio_config"].__setitem__("subsampling_conv_channels", [128]), "audio"),
    ("google/gemma-4-E4B-it", lambda c: c["audio_config"].__setitem__("num_attention_heads", 7), "num_attention_heads"),
    ("google/gemma-4-E4B-it", lambda c: c.__setitem__("audio_config", [1024]), "audio_config"),
]


@pytest.mark.parametrize("model_id, edit, field", BAD)
def test_bad_input_is_a_one_line_error_naming_the_field(model_id, edit, field, tmp_path, capsys):
    cfg = copy.deepcopy(config_of(model_id))
    edit(cfg)
    with pytest.raises(PlannerError) as err:
        normalize(cfg)
    assert field in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["inspect", str(tmp_path)]) == 2
    out = capsys.readouterr().err.strip()
    assert field in out and len(out.splitlines()) == 1
