"""The emitted arguments, parsed by vLLM's own `vllm serve` parser (the vLLM CPU build, 0.32.0):
they must parse and give back the planned values."""

from __future__ import annotations

import pytest
import yaml
from launch_helpers import VLLM_VERSION, WEIRD, deployment, vllm_parse

from planner.launch import config_yaml, llm_kwargs, render, serve_argv
from planner.launch.deployment import Var

V = ("--vllm-version", VLLM_VERSION)
PLANS = {
    "8b": ("meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100", "--max-model-len", "32768", *V),
    "70b-tp4-fp8kv": (
        "meta-llama/Llama-3.1-70B-Instruct",
        "--gpu",
        "H100",
        "--tp",
        "4",
        "--kv-cache-dtype",
        "fp8",
        "--enforce-eager",
        *V,
    ),
    "405b-2nodes": ("meta-llama/Llama-3.1-405B", "--gpu", "H100", "--max-model-len", "32768", *V),
    "405b-ray": (
        "meta-llama/Llama-3.1-405B",
        "--gpu",
        "H100",
        "--max-model-len",
        "32768",
        "--multinode-backend",
        "ray",
        *V,
    ),
    "moe-ep-pinned": ("Qwen/Qwen3-30B-A3B", "--gpu", "H100", "--tp", "2", "--pin-kv-cache", *V),
    "cpu": (
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "--device",
        "cpu",
        "--cpu-kvcache-gib",
        "2",
        "--max-model-len",
        "1024",
        *V,
    ),
    "weird-path": ("Qwen/Qwen3-30B-A3B", "--gpu", "H100", "--tp", "2", "--model-ref", WEIRD[3], *V),
}


def expected(d) -> dict:
    """The namespace values vLLM must give back for the plan's flags."""
    out: dict = {"model": d.model}
    for flag, value, _ in d.config.args:
        key = flag.replace("-", "_")
        if value is None:
            out[key] = True
        elif flag == "gpu-memory-utilization":
            out[key] = float(value)
        elif value.isdigit():
            out[key] = int(value)
        else:
            out[key] = value
    return out


def node_words(d, rank):
    return [w if not isinstance(w, Var) else "10.0.0.1" for w in d.node_args(rank, Var("MASTER_ADDR"))]


def items_for(d) -> list[tuple[str, dict, dict]]:
    """(what, request to vllm_serve_check, extra expected values)."""
    argv = serve_argv(d.config)
    out = [
        ("argv", {"argv": argv, "llm_kwargs": llm_kwargs(d.config)}, {}),
        ("config", {"argv": ["serve"], "config": config_yaml(d.config, ["header"])}, {}),
    ]
    if d.backend == "mp":
        out.append(
            ("worker", {"argv": argv + node_words(d, 1)}, {"node_rank": 1, "master_addr": "10.0.0.1", "headless": True})
        )
        out.append(
            (
                "leader+config",
                {"argv": ["serve", *node_words(d, 0)], "config": render("yaml", d)},
                {"node_rank": 0, "headless": False},
            )
        )
    return out


@pytest.fixture(scope="module")
def parsed():
    cases = []
    for name, argv in PLANS.items():
        d = deployment(*argv)
        for what, item, extra in items_for(d):
            cases.append((f"{name}/{what}", item, {**expected(d), **extra}))
        cases += [(f"{name}/{fmt}", item, expected(d)) for fmt, item in _deployment_items(d)]
    cases.append(("swap-space", {"argv": ["serve", "m", "--swap-space", "4"]}, {}))  # removed in 0.18
    results = vllm_parse([item for _, item, _ in cases])
    return [(what, want, got) for (what, _, want), got in zip(cases, results, strict=True)]


def _deployment_items(d) -> list[tuple[str, dict]]:
    """The vLLM arguments inside the Kubernetes, KServe and Helm outputs, as their launchers pass them."""
    if d.device == "cpu" or d.multinode:
        return []
    k8s = next(doc for doc in yaml.safe_load_all(render("k8s", d)) if doc["kind"] == "Deployment")
    c = k8s["spec"]["template"]["spec"]["containers"][0]
    kubelet = [a.replace("$$", "$") for a in c["args"]]  # what the kubelet hands the container
    ks = yaml.safe_load(render("kserve", d))["spec"]["predictor"]["model"]["args"]
    ks = [a.replace("$$", "$") for a in ks]
    model = next(a.split("=", 1)[1] for a in ks if a.startswith("--model_id="))
    ks_engine = [a for a in ks if not a.startswith(("--model_id=", "--model_name="))]
    spec = yaml.safe_load(render("helm", d))["servingEngineSpec"]["modelSpec"][0]
    return [
        ("k8s", {"argv": [*c["command"][1:], *kubelet]}),
        ("kserve", {"argv": ["serve", model, *ks_engine]}),
        ("helm", {"argv": helm_command(spec)}),
    ]


def helm_command(spec: dict) -> list[str]:
    """The `vllm serve` words the production-stack chart (0.1.12 deployment-vllm-multi.yaml) writes into
    the container's command, as the kubelet hands them over (`$$` becomes `$`)."""
    c = spec["vllmConfig"]
    out = ["serve", spec["modelURL"].replace("$$", "$"), "--host", "0.0.0.0", "--port", "8000"]
    out.append("--enable-prefix-caching" if c.get("enablePrefixCaching") else "--no-enable-prefix-caching")
    for key, flag in [
        ("maxModelLen", "--max-model-len"),
        ("dtype", "--dtype"),
        ("tensorParallelSize", "--tensor-parallel-size"),
        ("maxNumSeqs", "--max-num-seqs"),
        ("gpuMemoryUtilization", "--gpu_memory_utilization"),
    ]:
        if key in c:
            out += [flag, str(c[key])]
    return out + [a.replace("$$", "$") for a in c.get("extraArgs", [])]


def test_vllm_parses_every_emitted_argument_list(parsed):
    failures = [f"{what}: {got['error']}" for what, _, got in parsed if not got["ok"] and what != "swap-space"]
    assert not failures, failures


def test_vllm_gives_back_the_planned_values(parsed):
    wrong = []
    for what, want, got in parsed:
        args = got.get("args", {})
        wrong += [f"{what}: {k} = {args.get(k)!r}, planned {v!r}" for k, v in want.items() if args.get(k) != v]
    assert not wrong, wrong


def test_vllm_refuses_a_flag_the_release_removed(parsed):
    (got,) = [got for what, _, got in parsed if what == "swap-space"]
    assert not got["ok"] and "--swap-space" in str(got["error"])
