"""compressed-tensors MXFP4 (`mxfp4-pack-quantized`) read as vLLM 0.32 reads it: CompressedTensorsConfig
._is_mxfp4 (float, 4 bits, symmetric `group` strategy, groups of 32) picks CompressedTensorsW4A4Mxfp4,
whose create_weights holds `weight_packed` U8 [out, in / 2] and `weight_scale` U8 [out, in / 32] (one
e8m0 exponent per 32 values): 17/32 B per weight. NVFP4 is the `tensor_group` strategy in groups of 16
(_is_nvfp4_format). Unlike vLLM's own `mxfp4` method (gpt-oss: routed experts only), every targeted
linear is quantized. The CPU build cannot build an MXFP4 linear ("Failed to find a kernel"), so the
shapes are read from the source, and the weights checked against the model cards' published totals."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from planner.api import inspect, load_model
from planner.models import sources
from planner.models.quantization import parse_quantization


def _config(model_id: str) -> dict:
    return json.loads((sources.find_bundled(model_id) / "config.json").read_text())


# the one mxfp4-pack-quantized checkpoint bundled: Kimi-K3's (its family turns it into vLLM's mxfp4 method)
K3_QC = (
    _config("moonshotai/Kimi-K3").get("quantization_config")
    or _config("moonshotai/Kimi-K3")["text_config"]["quantization_config"]
)


def test_the_generic_parser_reads_mxfp4_pack_quantized_as_mxfp4():
    q = parse_quantization({"quantization_config": K3_QC}, {})
    assert K3_QC["format"] == "mxfp4-pack-quantized"
    assert (q.method, q.weight_bits, q.group_size, q.scale_granularity) == ("mxfp4", 4, 32, "group")
    assert q.scale_dtype == "uint8" and q.vllm_name == "compressed-tensors"


def test_nvfp4_stays_the_tensor_group_strategy_in_groups_of_16():
    qc = copy.deepcopy(K3_QC)
    qc["config_groups"]["group_0"]["weights"].update(strategy="tensor_group", group_size=16)
    qc["format"] = "nvfp4-pack-quantized"
    q = parse_quantization({"quantization_config": qc}, {})
    assert (q.method, q.group_size) == ("nvfp4", 16)


def _quantized(model_id: str, tmp: Path) -> Path:
    """The bundled config with Kimi-K3's MXFP4 quantization_config over every linear but lm_head."""
    cfg = _config(model_id)
    qc = copy.deepcopy(K3_QC)
    qc["ignore"] = ["lm_head"]
    cfg["quantization_config"] = qc
    (tmp / "config.json").write_text(json.dumps(cfg))
    return tmp


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen3-8B"])
@pytest.mark.parametrize("tp", [1, 2])
def test_every_linear_holds_17_32_bytes_per_weight(model_id, tp, tmp_path):
    base = inspect(model_id, tp=tp)
    r = inspect(load_model(str(_quantized(model_id, tmp_path))), tp=tp)
    # the decoder's linears: the model card's total less embeddings, norms and the (unquantized) head
    parts = base.params_breakdown
    linear = base.params_published - parts["embeddings"] - parts["norms"] - parts["lm_head"]
    assert linear == parts["attention"] + parts["mlp"] and linear % (32 * tp) == 0
    per_rank = linear // tp  # attention and MLP split evenly over TP 1 / 2 for these shapes
    got = r.weight_breakdown_per_gpu
    assert got["attention"] + got["mlp"] == per_rank * 17 // 32  # read as nvfp4 it was n/2 + n/16 + 8 each
    for part in ("embeddings", "norms", "lm_head"):
        assert got[part] == base.weight_breakdown_per_gpu[part]  # left in bf16
    # what the allocator sees adds at most 2 MiB of segment rounding per merged weight or scale (8 per layer)
    layers = sum(r.layer_types.values())
    assert 0 <= r.weight_bytes_per_gpu - sum(got.values()) <= 8 * layers * 2**21
    # the Hub's total of such a checkpoint: U8 packed pairs (n / 2) and U8 scales (n / 32) beside the BF16 rest
    assert r.params_checkpoint == base.params_published - linear + linear // 2 + linear // 32
    assert r.quantization == "compressed-tensors"
