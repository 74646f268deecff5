"""A misfit whose model fits no TP inside one node: `plan`'s fixes add pipeline stages across nodes (the
node's largest TP per stage, the fewest stages of planner.plan.PP_SIZES that fit), with the node count;
where a larger TP inside the node fits, that is the fix and no PP is offered."""

from __future__ import annotations

import json

import pytest

from planner import releases
from planner.api import load_model
from planner.budget import Settings
from planner.cli import main
from planner.hardware import load_catalogue
from planner.plan import PP_SIZES, Request, evaluate, fixes, valid_tps

# model, GPU, asked TP: none of them fits at any TP of one 8-GPU node
TOO_LARGE = [
    ("zai-org/GLM-5.2", "H100-SXM-80GB", 8),
    ("zai-org/GLM-5.2", "H100-SXM-80GB", 4),
    ("meta-llama/Llama-3.1-405B", "A100-40GB-SXM", 8),
    ("deepseek-ai/DeepSeek-V4-Pro", "H100-SXM-80GB", 8),
    ("moonshotai/Kimi-K2-Instruct", "A100-80GB-SXM", 8),
]


def _request(model_id: str, tp: int) -> Request:
    return Request(load_model(model_id), Settings(tp=tp, max_model_len=8192), releases.get("0.32.0"))


@pytest.mark.parametrize("model_id, gpu_name, tp", TOO_LARGE)
def test_pipeline_stages_across_nodes_is_a_fix(model_id, gpu_name, tp):
    cat = load_catalogue()
    gpu = cat.get(gpu_name)
    req = _request(model_id, tp)
    full = valid_tps(req.model, 8)[-1]
    assert not evaluate(req, gpu, full, 1).fits  # the premise: no TP of one node fits
    found = [f for f in fixes(req, gpu, tp, 1, cat) if "pp" in f.flags]
    assert len(found) == 1
    f = found[0]
    p = f.flags["pp"]
    assert f.flags["tp"] == full and f.budget.fits and (f.budget.tp, f.budget.pp) == (full, p)
    assert all(not evaluate(req, gpu, full, q).fits for q in PP_SIZES if q < p)  # the fewest stages
    nodes = -(-p // (8 // full))
    assert f"pipeline parallel {p} across {nodes} nodes of 8 GPUs" in f.change


def test_the_text_and_json_name_the_stages_and_nodes(capsys):
    args = ["plan", "zai-org/GLM-5.2", "--gpu", "H100", "--tp", "8", "--max-model-len", "32768"]
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "pipeline parallel 3 across 3 nodes of 8 GPUs (TP 8 per stage): TP 8 x PP 3 on H100-SXM-80GB" in text
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 3" in text
    assert main([*args, "--json"]) == 1
    fix = next(f for f in json.loads(capsys.readouterr().out)["fixes"] if "pp" in f["flags"])
    assert (fix["tp"], fix["pp"]) == (8, 3) and "--pipeline-parallel-size 3" in fix["vllm_serve_command"]


@pytest.mark.parametrize(
    "model_id, gpu_name, tp",
    [("meta-llama/Llama-3.1-70B-Instruct", "H100-SXM-80GB", 1), ("Qwen/Qwen3-235B-A22B", "H200", 2)],
)
def test_no_pipeline_fix_where_a_larger_tp_fits(model_id, gpu_name, tp):
    cat = load_catalogue()
    found = fixes(_request(model_id, tp), cat.get(gpu_name), tp, 1, cat)
    assert any("tp" in f.flags and "pp" not in f.flags for f in found)
    assert not any("pp" in f.flags for f in found)
