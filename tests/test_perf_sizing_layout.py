"""SLO sizing restricted to a layout (`plan --request-rate ... --tp N --pp M`) and written out
(`--emit`, `--pin-kv-cache`): the restricted sizing is the unrestricted one's entry for that layout,
the emitted files carry the chosen layout and replica count, nothing is overwritten without --force."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner import releases
from planner.api import load_model
from planner.budget import Settings
from planner.hardware import load_catalogue
from planner.perf.sizing import Targets, Traffic, Where, layouts_of, size
from planner.plan import Request

REPO = Path(__file__).resolve().parent.parent
CAT = load_catalogue()
RELEASE = "0.18.0"


def _req(model: str) -> Request:
    return Request(load_model(model), Settings(max_model_len=8192), releases.get(RELEASE))


def _layouts(result) -> list:
    return [x for o in result.options for x in o.layouts]


@pytest.mark.parametrize(
    "model, gpu, rate, tp, pp",
    [
        ("llama3.1-8b", "H100", 40.0, 2, None),
        ("llama3.1-8b", "H100", 40.0, 4, 1),
        ("llama3.1-70b", "H100", 4.0, 4, None),
        ("llama3.1-70b", "A100-80GB-SXM", 2.0, 8, None),
        ("qwen3-30b-a3b", "L40S", 8.0, 2, None),
    ],
)
def test_a_tp_pp_restriction_sizes_that_layout_only_and_as_the_full_search_does(model, gpu, rate, tp, pp):
    req, where = _req(model), Where.of_gpu(CAT.get(gpu))
    traffic, targets = Traffic(rate, 1024, 256), Targets(None, 60.0)
    only = size(req, [where], traffic, targets, "cost", CAT, tp, pp)
    assert only.best is not None
    assert all(x.tp == tp and (pp is None or x.pp == pp) for x in _layouts(only))
    # the same layout inside the unrestricted search has the same replicas and figures (same model)
    every = {(x.tp, x.pp): x for x in _layouts(size(req, [where], traffic, targets, "cost", CAT))}
    mine = only.best
    if (mine.tp, mine.pp) in every:
        assert every[(mine.tp, mine.pp)].replicas == mine.replicas
        assert every[(mine.tp, mine.pp)].figures.tpot_ms == pytest.approx(mine.figures.tpot_ms)
    assert mine.binding != "memory"  # the user chose the layout, memory did not


@pytest.mark.parametrize(
    "tp, pp, want",
    [
        (2, None, [(2, 1)]),
        (None, 2, [(8, 2)]),  # PP past one node's TP 8 only, as the plan's candidates
        (3, 1, [(3, 1)]),  # not a candidate: tried as given (the plan then judges it)
        (16, None, []),  # a TP group larger than a node of 8
    ],
)
def test_the_layouts_tried_follow_the_given_tp_and_pp(tp, pp, want):
    assert layouts_of(_req("llama3.1-8b"), Where(CAT.get("H100"), 8), tp, pp) == want


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, text=True, cwd=REPO)


SIZING = (
    "plan",
    "llama3.1-8b",
    "--gpu",
    "H100",
    "--max-model-len",
    "8192",
    "--vllm-version",
    RELEASE,
    "--request-rate",
    "60",
    "--input-len",
    "1024",
    "--output-len",
    "256",
    "--tpot-ms",
    "25",
)


@pytest.mark.parametrize("extra", [(), ("--tp", "2"), ("--pin-kv-cache",)])
def test_emit_with_sizing_writes_the_chosen_replicas_and_never_overwrites(tmp_path, extra):
    out = tmp_path / "deploy"
    p = _cli(*SIZING, *extra, "--json", "--emit", str(out))
    assert p.returncode == 0, p.stderr
    best = json.loads(p.stdout)["gpus"][0]["chosen"]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["tp"] == best["tp"] and plan["pp"] == best["pp"]
    k8s = (out / "k8s.yaml").read_text()
    assert f"replicas: {best['replicas']}" in k8s
    serve = (out / "serve.sh").read_text()
    assert f"--tensor-parallel-size {best['tp']}" in serve or best["tp"] == 1
    assert ("--kv-cache-memory-bytes" in serve) == ("--pin-kv-cache" in extra)
    before = {f.name: f.read_text() for f in out.iterdir()}
    again = _cli(*SIZING, *extra, "--emit", str(out))
    assert again.returncode == 2 and "--force" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert {f.name: f.read_text() for f in out.iterdir()} == before
    forced = _cli(*SIZING, *extra, "--emit", str(out), "--force")
    assert forced.returncode == 0, forced.stderr


def test_emit_with_sizing_and_no_gpu_type_meeting_the_targets_writes_nothing(tmp_path):
    args = [*SIZING[:-1], "4", "--gpu", "L4"]  # TPOT 4 ms: above the floor of no L4 layout
    p = _cli(*args, "--emit", str(tmp_path / "d"))
    assert p.returncode == 2 and not (tmp_path / "d").exists()
