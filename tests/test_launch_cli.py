"""`vllm-planner emit` through the CLI, and `emit_all`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from launch_helpers import planned

from planner import cli
from planner.launch import FORMATS
from planner.launch.emit import emit_all

L8 = ["meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100", "--max-model-len", "32768"]
L405 = ["meta-llama/Llama-3.1-405B", "--gpu", "H100", "--max-model-len", "32768"]


@pytest.fixture
def run(capsys):
    def go(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["emit", *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return go


def test_emit_prints_one_format(run):
    code, out, _ = run(*L8, "--format", "k8s")
    assert code == 0
    assert [d["kind"] for d in yaml.safe_load_all(out) if d] == ["PersistentVolumeClaim", "Deployment", "Service"]


def test_a_format_that_cannot_express_the_plan_names_the_one_that_can(run):
    for fmt, names in [("compose", "lws"), ("k8s", "lws"), ("helm", "lws"), ("kserve", "lws")]:
        code, _, err = run(*L405, "--format", fmt)
        assert code == 2 and f"--format {fmt} cannot express this plan" in err and f"--format {names}" in err
    code, _, err = run(*L8, "--format", "lws")
    assert code == 2 and "--format k8s" in err


def test_emit_out_writes_the_file(run, tmp_path):
    code, out, _ = run(*L8, "--format", "serve", "--out", str(tmp_path))
    assert code == 0 and Path(out.strip()) == tmp_path / "serve.sh"
    assert (tmp_path / "serve.sh").stat().st_mode & 0o111


def test_inventory_plan_gives_the_replicas(run):
    code, out, _ = run("meta-llama/Llama-3.1-70B-Instruct", "--inventory", "2x8xH100", "--format", "k8s")
    dep = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"][0]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert code == 0 and dep["spec"]["replicas"] * int(c["resources"]["limits"]["nvidia.com/gpu"]) == 16


def test_bad_name_is_one_line(run):
    code, _, err = run(*L8, "--format", "k8s", "--name", "Bad_Name")
    assert code == 2 and "DNS label" in err


def test_emit_all_writes_every_format_that_fits_and_never_the_token(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SENTINEL_never_written")
    result, req, _ = planned(*L405)
    done = emit_all(result, req, tmp_path)
    assert set(done) == {*FORMATS, "plan"}
    written = {k for k, v in done.items() if not v.startswith("skipped: ")}
    assert written == {"plan", "serve", "yaml", "python", "docker", "lws"}
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["tp"] == 8 and plan["launch"]["nodes_per_replica"] == 2 and "lws" in plan["launch"]["formats"]
    for path in tmp_path.iterdir():
        assert "hf_SENTINEL" not in path.read_text()


def test_emit_all_for_a_misfit_writes_only_plan_json(tmp_path):
    result, req, _ = planned("meta-llama/Llama-3.1-70B-Instruct", "--gpu", "H100", "--tp", "1")
    done = emit_all(result, req, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"plan.json"}
    assert all(v.startswith("skipped: the plan does not fit") for k, v in done.items() if k != "plan")
