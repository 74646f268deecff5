"""nvidia/GLM-5.2-NVFP4 (bundled: aiconfigurator's config.json and hf_quant_config.json): what its
ModelOpt exclude list leaves in bf16, the tensors beside the Hub table's 380,989,135,104 (no counting
rule well founded, so params_published stays null: meta.yaml says why), inspect / plan at TP 8,
inventory and emit."""

from __future__ import annotations

import pytest
from test_families import test_inventory_plan_and_emit as inventory_and_emit

from planner import accounting as acc
from planner.api import check_parallel, inspect, load_model, plan

NV = "nvidia/GLM-5.2-NVFP4"
HUB_TABLE = 380_989_135_104  # search-index file id 69468411049


def _quantized(m) -> list:
    return [t for t in m.tensors if not t.runtime and acc.scheme_of(t, m.spec.quant) is not None]


def test_only_the_routed_experts_are_nvfp4():
    # the exclude list names model.layers.N.mlp.shared_experts* and .self_attn* of layers 3-77, layers 0-2
    # and the MTP layer 78: the checkpoint's module names, which the shared experts' tensors carry
    m = load_model(NV)
    q = _quantized(m)
    assert {t.component for t in q} == {"experts"}
    assert sum(t.numel for t in q) == inspect("zai-org/GLM-5.2").params_breakdown["experts"] == 724_775_731_200
    assert not any(".shared_expert." in t.name for t in m.tensors)  # DeepSeek-style name: shared_experts


def test_the_hub_table_figure_is_three_omissions_away():
    m = load_model(NV)
    r = inspect(m)
    assert r.params_published is None
    experts = sum(t.numel for t in _quantized(m))
    packed_main = r.params_total - experts // 2  # U8 packing, MTP (not loaded) left out, no fp8 scales
    assert r.params_not_loaded == {"mtp": 9_952_920_576}
    assert packed_main - HUB_TABLE == 75 * 256  # and the routing-bias count on top
    assert r.params_checkpoint - packed_main == 9_952_920_576 + experts // 16  # MTP and the fp8 scales


@pytest.mark.parametrize("tp", [8])
def test_inspect_and_plan_at_tp(tp):
    m = load_model(NV)
    check_parallel(m.spec, tp, 1)
    r = inspect(m, tp=tp)
    assert r.quantization == "modelopt_fp4" and r.kv_cache_dtype.startswith("fp8")
    p = plan(m, gpu="B200", tp=tp, max_model_len=32768)
    assert p.budget.block_size > 0 and p.serve_command.startswith("vllm serve ")


def test_inventory_plan_and_emit(tmp_path, capsys):
    inventory_and_emit(NV, tmp_path, capsys)
