"""Launch flags: what each release gets, quoting through a real shell, the --config YAML and LLM kwargs."""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from launch_helpers import WEIRD, deployment

from planner import releases
from planner.errors import PlannerError
from planner.launch import FORMATS, config_yaml, llm_kwargs, render, serve_argv, serve_command
from planner.launch.flags import flag_argv

L8 = ("meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100", "--max-model-len", "32768")
L405 = ("meta-llama/Llama-3.1-405B", "--gpu", "H100", "--max-model-len", "32768")
MOE = ("Qwen/Qwen3-30B-A3B", "--gpu", "H100", "--tp", "2")


def flags(d) -> dict[str, str | None]:
    return {f: v for f, v, _ in d.config.args}


@pytest.mark.parametrize("version", releases.known_versions())
def test_every_release_gets_only_its_flags(version):
    rel = releases.get(version)
    if not rel.kv_cache_memory_bytes_flag:
        with pytest.raises(PlannerError, match="0.10.2"):
            deployment(*L405, "--vllm-version", version, "--pin-kv-cache")
    d = deployment(*L405, "--vllm-version", version, *(["--pin-kv-cache"] if rel.kv_cache_memory_bytes_flag else []))
    got = flags(d)
    assert "swap-space" not in got
    assert ("kv-cache-memory-bytes" in got) == rel.kv_cache_memory_bytes_flag
    if rel.native_multinode_flags:
        assert got["distributed-executor-backend"] == "mp" and got["nnodes"] == "2"
        text = render("serve", d)
        assert "--node-rank" in text and "--master-addr" in text and "--headless" in text and "ray start" not in text
    else:
        assert got["distributed-executor-backend"] == "ray" and "nnodes" not in got
        text = render("serve", d)
        assert "--nnodes" not in text and "--node-rank" not in text and "ray start --head" in text
    assert f"--gpu-memory-utilization {rel.gpu_memory_utilization_default:g}" in serve_command(d.config)


def test_ray_asked_on_a_new_release_and_refused_on_an_old_one():
    d = deployment(*L405, "--multinode-backend", "ray")
    assert flags(d)["distributed-executor-backend"] == "ray" and "nnodes" not in flags(d)
    with pytest.raises(PlannerError, match="0.11.1"):
        deployment(*L405, "--vllm-version", "0.10.1", "--multinode-backend", "mp")


def test_plan_values_carried():
    d = deployment(*L8, "--kv-cache-dtype", "fp8", "--max-num-seqs", "64", "--enforce-eager", "--block-size", "32")
    b, got = d.budget, flags(d)
    assert got["max-model-len"] == "32768" and got["max-num-seqs"] == "64"
    assert got["max-num-batched-tokens"] == str(b.max_num_batched_tokens)
    assert got["gpu-memory-utilization"] == f"{b.gpu_memory_utilization:g}"
    assert got["kv-cache-dtype"] == "fp8" and got["block-size"] == "32" and got["enforce-eager"] is None
    assert "tensor-parallel-size" not in got and "block-size" not in flags(deployment(*L8))


def test_expert_parallel_only_for_moe_with_tp():
    assert "enable-expert-parallel" in flags(deployment(*MOE))
    assert "enable-expert-parallel" not in flags(deployment(*MOE, "--no-expert-parallel"))
    assert "enable-expert-parallel" not in flags(deployment("Qwen/Qwen3-30B-A3B", "--gpu", "H100"))
    with pytest.raises(PlannerError, match="not a mixture-of-experts"):
        deployment(*L8, "--expert-parallel")


def test_pinned_kv_is_the_plan_figure_and_said_so():
    d = deployment(*MOE, "--pin-kv-cache")
    pinned = int(flags(d)["kv-cache-memory-bytes"])
    assert pinned == min(st.available_kv_bytes for st in d.budget.stages)
    assert "matches the plan exactly" in render("yaml", d) and "matches the plan exactly" in render("serve", d)


def test_every_yaml_line_says_why():
    d = deployment(*MOE, "--pin-kv-cache")
    text = render("yaml", d)
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(settings) == 1 + len(d.config.args)
    assert all("  # " in line and line.split("  # ", 1)[1].strip() for line in settings)
    loaded = yaml.safe_load(text)
    assert (
        loaded["model"] == d.model and loaded["tensor-parallel-size"] == 2 and loaded["enable-expert-parallel"] is True
    )


@pytest.mark.parametrize("path", WEIRD)
def test_weird_model_paths_round_trip_yaml_and_python(path):
    d = deployment(*MOE, "--model-ref", path)
    assert yaml.safe_load(config_yaml(d.config))["model"] == path
    call = ast.parse(render("python", d)).body[-1].value
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert kwargs == llm_kwargs(d.config) and kwargs["model"] == path
    assert shlex.split(serve_command(d.config))[2] == path
    assert serve_argv(d.config)[1] == path


# ---- the shell scripts, run by bash with stand-ins for vllm, docker, ray ------------------------

STUB = """#!{python}
import json, os, sys
with open(os.environ["STUB_OUT"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\\n")
if os.path.basename(sys.argv[0]) == "python3":
    print(os.environ.get("STUB_NODES", "1"))
"""


def run_script(text: str, tmp_path: Path, **env: str) -> list[list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("vllm", "docker", "ray", "python3"):
        (bin_dir / name).write_text(STUB.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    out = tmp_path / "calls.jsonl"
    out.unlink(missing_ok=True)
    script = tmp_path / "launch.sh"
    script.write_text(text)
    full_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": "/home/u", "STUB_OUT": str(out), **env}
    subprocess.run(["bash", str(script)], env=full_env, check=True, cwd=tmp_path, timeout=60)
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("path", WEIRD)
def test_serve_script_cannot_be_broken_by_the_model_path(path, tmp_path):
    d = deployment(*L8, "--model-ref", path)
    calls = run_script(render("serve", d), tmp_path)
    assert calls == [["vllm", *serve_argv(d.config)]]
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("path", WEIRD[:2])
def test_docker_script_passes_token_by_name_and_pins_the_image(path, tmp_path):
    d = deployment(*L8, "--model-ref", path)
    text = render("docker", d)
    assert "HF_TOKEN=" not in text
    (call,) = run_script(text, tmp_path, HF_TOKEN="hf_secret_value")
    image = d.release.docker_image
    assert image.endswith(":v" + d.release.version)
    i = call.index(image)
    assert call[i + 1 :] == serve_argv(d.config)
    opts = call[:i]
    assert opts[opts.index("--env") + 1] == "HF_TOKEN" and "--ipc" in opts
    assert opts[opts.index("-v") + 1] == "/home/u/.cache/huggingface:/root/.cache/huggingface"
    assert opts[opts.index("--gpus") + 1] == "1"


@pytest.mark.parametrize("fmt", ["serve", "docker"])
def test_multinode_scripts_give_each_node_its_rank(fmt, tmp_path):
    d = deployment(*L405, "--model-ref", WEIRD[2])
    text = render(fmt, d)
    base = serve_argv(d.config)
    (leader,) = run_script(text, tmp_path, NODE_RANK="0", MASTER_ADDR="10.0.0.1")
    (worker,) = run_script(text, tmp_path, NODE_RANK="1", MASTER_ADDR="10.0.0.1")
    leader, worker = leader[leader.index("serve") :], worker[worker.index("serve") :]
    assert leader == base + ["--node-rank", "0", "--master-addr", "10.0.0.1"]
    assert worker == base + ["--node-rank", "1", "--master-addr", "10.0.0.1", "--headless"]


def test_ray_script_starts_the_cluster_then_vllm(tmp_path):
    d = deployment(*L405, "--vllm-version", "0.10.1")
    text = render("serve", d)
    head = run_script(text, tmp_path, NODE_RANK="0", STUB_NODES="2")
    assert head[0][:3] == ["ray", "start", "--head"] and head[-1] == ["vllm", *serve_argv(d.config)]
    (worker,) = run_script(text, tmp_path, NODE_RANK="1", MASTER_ADDR="10.0.0.1")
    assert worker == ["ray", "start", "--address=10.0.0.1:6379", "--block"]


def test_cpu_plans_only_get_the_plain_formats(tmp_path):
    d = deployment(
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "--device", "cpu", "--cpu-kvcache-gib", "2", "--max-model-len", "1024"
    )
    assert "VLLM_CPU_KVCACHE_SPACE=2" in render("serve", d) and "gpu-memory-utilization" not in flags(d)
    (call,) = run_script(render("serve", d), tmp_path)
    assert call == ["vllm", *serve_argv(d.config)]
    for fmt in ("docker", "compose", "k8s", "helm", "kserve"):
        with pytest.raises(PlannerError, match="CPU"):
            render(fmt, d)


def test_a_plan_that_does_not_fit_is_not_emitted():
    d = deployment("meta-llama/Llama-3.1-70B-Instruct", "--gpu", "H100", "--tp", "1")
    for fmt in FORMATS:
        with pytest.raises(PlannerError, match="does not fit"):
            render(fmt, d)


def test_flag_argv_switches_have_no_value():
    assert flag_argv([("enforce-eager", None, ""), ("max-num-seqs", "4", "")]) == [
        "--enforce-eager",
        "--max-num-seqs",
        "4",
    ]


def test_sizes_grow_with_the_plan():
    small, large = deployment(*L8), deployment("meta-llama/Llama-3.1-70B-Instruct", "--gpu", "H100", "--tp", "4")
    assert large.startup_s > small.startup_s and large.cache_gib > small.cache_gib
    assert large.shm_gib > small.shm_gib and large.memory_gib > small.memory_gib and large.cpu > small.cpu
    assert small.cache_gib >= small.weights_gib_total
    k8s = [doc for doc in yaml.safe_load_all(render("k8s", large)) if doc and doc["kind"] == "Deployment"][0]
    probe = k8s["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] == large.startup_s
