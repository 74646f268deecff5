"""GLM-5.2 / GLM-5.3 (glm_moe_dsa with IndexShare): which layers keep an indexer, their weights
and key cache, vLLM's own grouping of the latent and indexer pages (tests/vllm_kv_groups_oracle.py
in the CPU build), the FP8 uploads without a trusted published count, and bad input.

inspect / plan at TP 1 and 8, inventory, emit and the published totals of GLM-5.2 and GLM-5.3 are
rows of test_families.NEW_PROFILES."""

from __future__ import annotations

import copy
import json

import pytest
from launch_helpers import oracle_by_model

from planner.api import inspect, load_model, plan
from planner.cli import main
from planner.errors import PlannerError
from planner.kv_layout import build_layout
from planner.models import sources
from planner.models.normalize import normalize

INDEX_SHARE = ["zai-org/GLM-5.2", "zai-org/GLM-5.3", "zai-org/GLM-5.2-FP8", "zai-org/GLM-5.3-FP8"]
FP8_UNPUBLISHED = ["zai-org/GLM-5.2-FP8", "zai-org/GLM-5.3-FP8"]


def config_of(model_id: str) -> dict:
    return json.loads((sources.find_bundled(model_id) / "config.json").read_text())


@pytest.mark.parametrize("model_id", INDEX_SHARE)
def test_indexers_are_where_the_config_lists_them(model_id):
    # the checkpoint's own per-layer list (indexer_types) against the layers the spec gives an indexer
    cfg = config_of(model_id)
    spec = load_model(model_id).spec
    full = [i for i, t in enumerate(cfg["indexer_types"]) if t == "full"]
    assert [i for i in range(spec.num_layers) if i not in spec.mla.index_shared_layers] == full
    assert len(full) == 21
    r = inspect(model_id, tp=8)
    assert r.kv_bytes_per_token_by_kind == {"mla": 78 * 576 * 2, "indexer": 21 * 132}


def test_fp8_checkpoint_stores_indexers_only_where_built():
    # GLM-5.2-FP8 lists the modules it keeps unconverted: the indexer's k_norm appears once per
    # indexer (21 decoder layers + the MTP layer), and every indexer's wk block scale is dropped by vLLM
    cfg = config_of("zai-org/GLM-5.2-FP8")
    norms = [m for m in cfg["quantization_config"]["modules_to_not_convert"] if m.endswith("indexer.k_norm")]
    assert len(norms) == 22
    r = inspect("zai-org/GLM-5.2-FP8")
    assert r.params_not_loaded["attention"] == 21 * 48  # wk [128, 6144]: 1 x 48 blocks of 128 x 128


@pytest.mark.parametrize("model_id", FP8_UNPUBLISHED)
@pytest.mark.parametrize("tp", [1, 8])
def test_fp8_uploads_inspect_and_plan(model_id, tp):
    m = load_model(model_id)
    assert m.meta["params_published"] is None  # no trusted figure (meta.yaml says why)
    r = inspect(m, tp=tp)
    assert r.params_checkpoint == inspect("zai-org/GLM-5.2").params_checkpoint + 45_853_104  # + F32 block scales
    p = plan(m, gpu="H200", tp=tp, max_model_len=32768)
    assert p.budget.block_size > 0 and p.serve_command.startswith("vllm serve ")


@pytest.mark.parametrize("model_id", FP8_UNPUBLISHED)
def test_fp8_uploads_inventory_and_emit(model_id, tmp_path, capsys):
    assert main(["plan", model_id, "--inventory", "2x8xH200", "--max-model-len", "32768", "--json"]) in (0, 1)
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["model"] == model_id for r in rows)
    code = main(["emit", model_id, "--gpu", "H200", "--max-model-len", "32768", "-f", "serve", "--out", str(tmp_path)])
    assert code in (0, 1) and any(tmp_path.iterdir())


# ---- vLLM's own grouping ----------------------------------------------------------------------------

GROUP_CASES = [("zai-org/GLM-5.2", "auto", 2), ("zai-org/GLM-5.3", "auto", 2), ("zai-org/GLM-5", "auto", 2)]


@pytest.fixture(scope="module")
def vllm_groups():
    return oracle_by_model("vllm_kv_groups_oracle.py", [m for m, _, _ in GROUP_CASES], "--block-size", "64")


@pytest.mark.parametrize("model_id, kv, kv_bytes", GROUP_CASES)
def test_one_uniform_type_group_as_vllm_builds_it(vllm_groups, model_id, kv, kv_bytes):
    row = vllm_groups[model_id]
    assert row is not None and "error" not in row, row
    ((group,),) = [row["groups"]]  # latents and indexer pages in one UniformTypeKVCacheSpecs group
    spec = load_model(model_id).spec
    lay = build_layout(spec, range(spec.num_layers), 8, kv_bytes, 64)
    assert lay.bytes_per_block == group["page_size_bytes"] == row["bytes_per_block"]
    assert spec.max_model_len_default == row["max_model_len_default"]
    latents, indexers = group["pages"]["attn"], group["pages"].get("indexer_k_cache", [0, [0]])
    assert (lay.group_size, [lay.page_bytes]) == (latents[0], latents[1])
    assert lay.indexer_block_bytes == indexers[0] * indexers[1][0]
    assert len(lay.groups) == 1 and lay.padding_layers == 0


# ---- bad input -----------------------------------------------------------------------------------


def _broken(edit) -> dict:
    cfg = copy.deepcopy(config_of("zai-org/GLM-5.2"))
    edit(cfg)
    return cfg


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: c.__setitem__("index_topk_freq", 2), "indexer_types"),  # contradicts the list
        (lambda c: c["indexer_types"].pop(), "indexer_types"),  # one layer short
        (lambda c: c["indexer_types"].__setitem__(5, "dense"), "indexer_types"),
        (lambda c: c.__setitem__("index_skip_topk_offset", -1), "index_skip_topk_offset"),
        (lambda c: c.__setitem__("index_topk_pattern", "FS"), "index_topk_pattern"),
        (lambda c: c.pop("index_head_dim"), "index_head_dim"),  # an indexer without its size
        (lambda c: c.pop("index_topk"), "index_topk"),
    ],
)
def test_bad_index_share_is_a_one_line_error_naming_the_field(edit, field):
    with pytest.raises(PlannerError) as err:
        normalize(_broken(edit))
    assert field in str(err.value) and "\n" not in str(err.value)


def test_bad_index_share_exits_2(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(_broken(lambda c: c.__setitem__("index_topk_freq", 2))))
    assert main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "indexer_types" in err and len(err.splitlines()) == 1


# ---- fp8_ds_mla: the latent as vLLM's sparse backends store a quantized KV cache ---------------------


@pytest.fixture(scope="module")
def vllm_ds_mla():
    models = ["zai-org/GLM-5.2", "deepseek-ai/DeepSeek-V3.2"]
    return oracle_by_model("vllm_kv_groups_oracle.py", models, "--block-size", "64", "--kv-cache-dtype", "fp8_ds_mla")


@pytest.mark.parametrize("model_id", ["zai-org/GLM-5.2", "deepseek-ai/DeepSeek-V3.2"])
def test_fp8_kv_on_hopper_is_vllms_fp8_ds_mla_block(vllm_ds_mla, model_id):
    # SM90 with --kv-cache-dtype fp8: FLASHMLA_SPARSE serves it as fp8_ds_mla (656 B per latent token);
    # Blackwell's FLASHINFER_MLA_SPARSE keeps the plain fp8 latent (576 B)
    row = vllm_ds_mla[model_id]
    assert row is not None and "error" not in row, row
    hopper = plan(model_id, gpu="H100", tp=8, max_model_len=32768, kv_cache_dtype="fp8")
    assert hopper.budget.kv.block_size == 64
    assert hopper.budget.stages[0].layout.bytes_per_block == row["bytes_per_block"]
    blackwell = plan(model_id, gpu="B200", tp=8, max_model_len=32768, kv_cache_dtype="fp8").budget.stages[0].layout
    spec = load_model(model_id).spec
    assert blackwell.page_bytes == blackwell.block_size * (spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim)
