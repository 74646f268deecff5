"""DeepSeek-V4 (Flash, Pro and NVIDIA's NVFP4 exports): the parts of the published totals, the KV
caches and their packed grouping against vLLM 0.32's own classes (tests/vllm_kv_groups_oracle.py in
the CPU build: the V4 cache modules' get_kv_cache_spec and vLLM's get_kv_cache_groups), the weights
per GPU under TP, and bad input.

inspect / plan at TP 1 and 8, inventory, emit, registration and the published totals of the bundled
profiles are rows of test_families.NEW_PROFILES."""

from __future__ import annotations

import copy
import json

import pytest
from launch_helpers import oracle_by_model

from planner.api import inspect, load_model, plan
from planner.cli import main
from planner.errors import PlannerError
from planner.kv_layout import blocks_per_request, build_layout
from planner.models import sources
from planner.models.normalize import normalize

V4 = ["deepseek-ai/DeepSeek-V4-Flash", "deepseek-ai/DeepSeek-V4-Pro"]
NVFP4 = ["nvidia/DeepSeek-V4-Flash-NVFP4", "nvidia/DeepSeek-V4-Pro-NVFP4"]


def config_of(model_id: str) -> dict:
    return json.loads((sources.find_bundled(model_id) / "config.json").read_text())


# ---- parameters ----------------------------------------------------------------------------------


def test_flash_total_splits_into_its_checkpoints_parts():
    # A third-party upload of the same shapes with the experts packed two fp4 values per I8 element
    # (Chunjiang-Intelligence/DeepSeek-v4-Fable, 149,210,695,634 in the table of search-index file id
    # 69468411049) is the published total less half of every routed expert (MTP layer included)
    r = inspect("deepseek-ai/DeepSeek-V4-Flash")
    experts = r.params_breakdown["experts"] + 256 * 3 * 2048 * 4096  # + the MTP layer's
    assert r.params_published - experts // 2 == 149_210_695_634
    assert r.params_not_loaded == {"mtp": r.params_checkpoint - r.params_total}


@pytest.mark.parametrize("model_id", V4 + NVFP4)
def test_hash_layers_route_by_a_token_table(model_id):
    # num_hash_layers 3: an int32 [vocab, top-k] table instead of the score-correction bias
    spec = load_model(model_id).spec
    r = inspect(model_id)
    moe = spec.moe
    bias_layers = spec.num_layers - 3
    assert r.params_breakdown["router"] == (
        spec.num_layers * moe.num_experts * spec.hidden_size
        + 3 * spec.vocab_size * moe.experts_per_token
        + bias_layers * moe.num_experts
    )


def test_nvfp4_experts_weigh_more_than_mxfp4():
    # NVFP4 keeps an fp8 scale per 16 values, MXFP4 a UE8M0 scale per 32: n/2 + n/16 (+ 8 B) vs n/2 + n/32
    mx, nv = inspect("deepseek-ai/DeepSeek-V4-Flash"), inspect("nvidia/DeepSeek-V4-Flash-NVFP4")
    experts = mx.params_breakdown["experts"]
    extra = experts // 16 - experts // 32 + 8 * 43 * 3
    assert nv.weight_bytes_per_gpu - mx.weight_bytes_per_gpu == pytest.approx(extra, rel=1e-3)


@pytest.mark.parametrize("model_id", V4)
def test_weights_split_over_tp_except_the_replicated_parts(model_id):
    one, eight = inspect(model_id, tp=1), inspect(model_id, tp=8)
    assert eight.weight_bytes_per_gpu < one.weight_bytes_per_gpu / 7  # experts, wq_b, wo_a/wo_b split
    assert eight.weight_bytes_per_gpu > one.weight_bytes_per_gpu / 8  # wq_a, wkv, indexers replicated


@pytest.mark.parametrize("model_id", NVFP4)
@pytest.mark.parametrize("tp", [1, 8])
def test_pro_nvfp4_plans_without_a_published_count(model_id, tp):
    m = load_model(model_id)
    r = inspect(m, tp=tp)
    assert r.kv_bytes_per_token_per_gpu > 0 and r.weight_bytes_per_gpu > 0
    p = plan(m, gpu="B200", tp=tp, max_model_len=32768)
    assert p.budget.block_size == 256 and p.serve_command.startswith("vllm serve ")


def test_pro_nvfp4_inventory_and_emit(tmp_path, capsys):
    model_id = "nvidia/DeepSeek-V4-Pro-NVFP4"
    assert load_model(model_id).meta["params_published"] is None  # none found: meta.yaml says so
    assert main(["plan", model_id, "--inventory", "2x8xB200", "--max-model-len", "32768", "--json"]) in (0, 1)
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["model"] == model_id for r in rows)
    code = main(["emit", model_id, "--gpu", "B200", "--max-model-len", "32768", "-f", "serve", "--out", str(tmp_path)])
    assert code in (0, 1) and any(tmp_path.iterdir())


# ---- KV caches against vLLM's classes ------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_v4():
    return oracle_by_model("vllm_kv_groups_oracle.py", V4 + NVFP4, "--block-size", "256", "--kv-cache-dtype", "fp8")


@pytest.mark.parametrize("model_id", V4 + NVFP4)
@pytest.mark.parametrize("tp", [1, 8])
def test_packed_groups_match_vllm(vllm_v4, model_id, tp):
    row = vllm_v4[model_id]
    assert row is not None and "error" not in row, row
    m = load_model(model_id)
    spec = m.spec
    lay = build_layout(spec, range(spec.num_layers), tp, 1, 16)  # every cache whole on every rank
    assert lay.bytes_per_block == row["bytes_per_block"]
    assert spec.max_model_len_default == row["max_model_len_default"]
    ours = sorted((g.kind == "mla", g.block_size) for g in lay.groups)
    assert ours == sorted((g["class"] == "MLAAttentionSpec", g["block_size"]) for g in row["groups"])
    # the blocks one request of max_model_len holds, group by group (the start-up check's sum)
    inflight, n = row["max_in_flight_tokens"], row["max_model_len"]
    assert blocks_per_request(lay, n, inflight) == sum(g["max_blocks"] for g in row["groups"])
    mla = next(g for g in row["groups"] if g["class"] == "MLAAttentionSpec")
    r = inspect(m, tp=tp)
    assert r.kv_bytes_per_token_per_gpu == mla["page_size_bytes"] // 256
    assert r.kv_bytes_per_token_by_kind["indexer"] * 256 <= sum(
        c * p[0] for k, (c, p) in mla["pages"].items() if k == "indexer_k_cache"
    )


@pytest.mark.parametrize("model_id", V4)
def test_pipeline_stages_pack_their_own_layers(model_id):
    m = load_model(model_id)
    r = inspect(m, pp=2)
    assert len(r.kv_bytes_per_token_per_stage) == 2 and sum(r.kv_bytes_per_token_per_stage) <= (
        inspect(m).kv_bytes_per_token_per_gpu
    )


# ---- bad input -----------------------------------------------------------------------------------


def _broken(model_id: str, edit) -> dict:
    cfg = copy.deepcopy(config_of(model_id))
    edit(cfg)
    return cfg


@pytest.mark.parametrize(
    "model_id, edit, field",
    [
        ("deepseek-ai/DeepSeek-V4-Flash", lambda c: c["compress_ratios"].__delitem__(slice(2)), "compress_ratios"),
        ("deepseek-ai/DeepSeek-V4-Flash", lambda c: c["compress_ratios"].__setitem__(3, 64), "compress_ratios"),
        ("deepseek-ai/DeepSeek-V4-Flash", lambda c: c.pop("compress_ratios"), "compress_ratios"),
        ("deepseek-ai/DeepSeek-V4-Flash", lambda c: c.pop("index_head_dim"), "index_head_dim"),  # indexer, no size
        ("deepseek-ai/DeepSeek-V4-Pro", lambda c: c.pop("index_n_heads"), "index_n_heads"),
        ("deepseek-ai/DeepSeek-V4-Pro", lambda c: c.__setitem__("index_head_dim", 100), "index_head_dim"),
        ("deepseek-ai/DeepSeek-V4-Flash", lambda c: c.__setitem__("o_groups", 7), "o_groups"),
        ("deepseek-ai/DeepSeek-V4-Flash", lambda c: c.pop("hc_mult"), "hc_mult"),
        ("deepseek-ai/DeepSeek-V4-Flash", lambda c: c.__setitem__("num_hash_layers", 99), "num_hash_layers"),
        ("deepseek-ai/DeepSeek-V4-Flash", lambda c: c.__setitem__("expert_dtype", "int4"), "expert_dtype"),
        ("deepseek-ai/DeepSeek-V4-Flash", lambda c: c.__setitem__("num_experts_per_tok", 300), "num_experts_per_tok"),
        ("deepseek-ai/DeepSeek-V4-Flash", lambda c: c.pop("sliding_window"), "sliding_window"),
    ],
)
def test_bad_input_is_a_one_line_error_naming_the_field(model_id, edit, field):
    with pytest.raises(PlannerError) as err:
        normalize(_broken(model_id, edit))
    assert field in str(err.value) and "\n" not in str(err.value)


def test_bad_input_exits_2(tmp_path, capsys):
    # 42 entries for 43 layers (+ 1 MTP): neither one per decoder layer nor one per layer with the MTP's
    (tmp_path / "config.json").write_text(
        json.dumps(_broken(V4[0], lambda c: c["compress_ratios"].__delitem__(slice(2))))
    )
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "compress_ratios" in err and len(err.splitlines()) == 1


# ---- serving settings vLLM refuses -----------------------------------------------------------------


@pytest.mark.parametrize("model_id", V4 + NVFP4)
def test_tp_must_divide_the_output_projection_groups(model_id):
    # vLLM's DeepseekV4Attention: n_local_groups = o_groups // tp, wo_a column-parallel over the groups
    cfg = config_of(model_id)
    groups, heads = cfg["o_groups"], cfg["num_attention_heads"]
    ok = [t for t in range(1, heads + 1) if heads % t == 0 and groups % t == 0]
    for tp in (1, 2, 4, 8, 16, 32):
        if heads % tp:
            continue  # the heads' own rule refuses it first
        if tp in ok:
            assert inspect(model_id, tp=tp).weight_bytes_per_gpu > 0
            continue
        with pytest.raises(PlannerError) as err:
            inspect(model_id, tp=tp)
        text = str(err.value)
        assert "o_groups" in text and "\n" not in text
        assert text.endswith("valid TP sizes are " + ", ".join(map(str, ok)))


def test_tp_above_the_groups_exits_2_and_is_left_out_of_the_layout_search(capsys):
    # Flash: 64 heads but 8 output groups; TP 16 would leave ranks without a group
    args = ["deepseek-ai/DeepSeek-V4-Flash", "--gpu", "H200", "--max-model-len", "8192", "--gpus-per-node", "16"]
    assert main(["plan", *args, "--tp", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "o_groups" in err and len(err.splitlines()) == 1
    from planner.plan import valid_tps

    assert valid_tps(load_model("deepseek-ai/DeepSeek-V4-Flash"), 16) == [1, 2, 4, 8]
    assert valid_tps(load_model("deepseek-ai/DeepSeek-V4-Pro"), 16) == [1, 2, 4, 8, 16]


@pytest.mark.parametrize("model_id", V4 + NVFP4)
@pytest.mark.parametrize("kv, refused", [("auto", False), ("fp8", False), ("bfloat16", True), ("float16", True)])
def test_a_16_bit_kv_cache_is_refused_as_vllm_refuses_it(model_id, kv, refused, capsys):
    # vLLM's _resolve_dsv4_kv_cache_dtype on the fp8_ds_mla layout (FlashMLA, FlashInfer SM120, CPU):
    # auto -> fp8 -> fp8_ds_mla; a dtype not starting with fp8 raises ValueError
    args = ["plan", model_id, "--gpu", "B200", "--tp", "8", "--max-model-len", "8192", "--kv-cache-dtype", kv]
    code = main([*args, "--json"])
    if refused:
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert f"--kv-cache-dtype {kv}" in err and "fp8_ds_mla" in err and len(err.splitlines()) == 1
        return
    assert code in (0, 1)
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any(n.startswith("DeepSeek-V4: KV cache dtype fp8_ds_mla") for n in notes)


@pytest.mark.parametrize("block, ok", [(None, True), (256, True), (16, False), (64, False), (128, False), (512, False)])
def test_block_size_is_256(block, ok, capsys):
    # the V4 sparse-MLA and indexer backends take kernel blocks of 256 (multiples refused here: not modelled)
    args = ["plan", "deepseek-ai/DeepSeek-V4-Pro", "--gpu", "H200", "--tp", "8", "--max-model-len", "8192"]
    code = main([*args, "--json"] + ([] if block is None else ["--block-size", str(block)]))
    if ok:
        assert code in (0, 1) and json.loads(capsys.readouterr().out)["block_size"] == 256
        return
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert f"--block-size {block}" in err and "256" in err and len(err.splitlines()) == 1
