"""The Python API is what the CLI prints: `plan --json` equals `planner.api.plan(...).to_json()`
over a table of real plans, and the API validates its keyword arguments where they enter."""

from __future__ import annotations

import json
import shlex

import pytest

from planner import api, cli
from planner.errors import PlannerError

CASES = [
    (["qwen3-8b", "--gpu", "H100"], dict(gpu="H100")),
    (
        ["meta-llama/Llama-3.1-70B-Instruct", "--gpu", "A100-80GB", "--vllm-version", "0.15.0"],
        dict(gpu="A100-80GB", vllm_version="0.15.0"),
    ),
    (["Qwen/Qwen3-30B-A3B", "--gpu", "H100", "--tp", "2", "--pin-kv-cache"], dict(gpu="H100", tp=2, pin_kv_cache=True)),
    (
        ["deepseek-ai/DeepSeek-V2-Lite-Chat", "--gpu", "L4", "--max-model-len", "4096", "--kv-cache-dtype", "fp8"],
        dict(gpu="L4", max_model_len=4096, kv_cache_dtype="fp8"),
    ),
    (
        ["meta-llama/Llama-3.1-8B-Instruct", "--gpu", "L4", "--max-model-len", "131072"],  # a misfit, with fixes
        dict(gpu="L4", max_model_len=131072),
    ),
    (
        ["TinyLlama/TinyLlama-1.1B-Chat-v1.0", "--device", "cpu", "--cpu-kvcache-gib", "2", "--max-model-len", "1024"],
        dict(device="cpu", cpu_kvcache_gib=2, max_model_len=1024),
    ),
    (
        ["qwen3-8b", "--gpu", "H200", "--concurrency", "16", "--max-model-len", "8192", "--vllm-version", "0.26.0"],
        dict(gpu="H200", concurrency=16, max_model_len=8192, vllm_version="0.26.0"),
    ),
]


@pytest.mark.parametrize("argv,kwargs", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_plan_json_is_the_api_result(argv, kwargs, capsys):
    code = cli.main(["plan", *argv, "--json"])
    printed = json.loads(capsys.readouterr().out)
    result = api.plan(argv[0], **kwargs)
    assert printed == result.to_json()
    assert code == (0 if result.budget.fits else 1)
    words = shlex.split(result.serve_command)
    assert words[words.index("serve") + 1] == result.budget.model  # an alias is served by its model id
    assert list(printed)[list(printed).index("vllm_serve_command") + 1] == "binding"  # the documented key order


def test_the_plan_step_builds_no_serve_command():
    r = api.plan("qwen3-8b", gpu="H100").result
    assert not hasattr(r, "serve_command") and "vllm_serve_command" not in r.to_json()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(gpu="H100", max_num_seq=8), "unknown plan setting"),
        (dict(gpu="H100", gpu_memory_utilization=1.5), "outside (0, 1]"),
        (dict(gpu="H100", max_model_len=-4), "must be positive"),
        (dict(), "name a GPU"),
        (dict(device="cpu"), "cpu_kvcache_gib"),
        (dict(gpu="H1OO"), "H100"),
    ],
)
def test_bad_keyword_arguments_are_one_line_errors(kwargs, message):
    with pytest.raises(
        PlannerError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
    ):
        api.plan("qwen3-8b", **kwargs)
