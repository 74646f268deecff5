"""DeepSeek sparse attention (the DSA indexer of DeepSeek-V3.2 / GLM-5, and DeepSeek-V4) on the GPUs vLLM has a
sparse MLA backend for: `plan` refuses the others in one line (exit 2), `plan --inventory` leaves them out with why,
and the capability table (profiles/gpu_families.yaml) matches the backends' own `supports_compute_capability`
in the installed vLLM build, read from its source (the CUDA kernels do not import on the CPU build)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from launch_helpers import VLLM_ABSENT, vllm_python

from planner.cli.entry import main
from planner.hardware import load_catalogue
from planner.target import gpu_families

SPARSE = ["deepseek-ai/DeepSeek-V3.2", "zai-org/GLM-5", "zai-org/GLM-5.2", "deepseek-ai/DeepSeek-V4-Flash"]
CASES = [
    (m, g, refused)
    for m in SPARSE
    for g, refused in [("A100-80GB-SXM", True), ("H100-SXM-80GB", False), ("H200", False), ("B200", False)]
]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("model", "gpu", "refused"), CASES)
def test_plan_refuses_sparse_attention_below_hopper(capsys, model, gpu, refused):
    code, out, err = _run(capsys, "plan", model, "--gpu", gpu)
    if refused:
        assert code == 2 and not out
        assert len(err.strip().splitlines()) == 1, err
        assert "compute capability 8.0" in err and "Hopper or Blackwell" in err and "9.0-10.9" in err
    else:
        assert code in (0, 1), err  # planned: fits (0) or a misfit with its fixes (1), never refused
        assert "sparse" not in err


def test_dense_mla_still_plans_on_ampere(capsys):
    code, _, err = _run(capsys, "plan", "deepseek-ai/DeepSeek-V2-Lite", "--gpu", "A100-80GB-SXM")
    assert code == 0, err


@pytest.mark.parametrize("json_out", [False, True])
def test_inventory_leaves_ampere_out_with_why(capsys, json_out):
    code, out, err = _run(
        capsys, "plan", "zai-org/GLM-5", "--inventory", "2x8xA100-80GB-SXM,2x8xH200", *(["--json"] if json_out else [])
    )
    assert code == 0, err
    if json_out:
        by = {e["inventory"]: e for e in json.loads(out)}
        assert by["2x8xH200"]["fits"] and not by["2x8xA100-80GB-SXM"]["fits"]
        off = by["2x8xA100-80GB-SXM"]
        assert "compute capability 8.0" in off["unusable"] and off["error"] == off["unusable"]
        # one schema for every entry: a consumer reads the same keys (null where there is no budget)
        assert set(off) - {"unusable"} == set(by["2x8xH200"])
        assert (off["gpu"], off["model"], off["replicas"], off["kv_cache_tokens"]) == (
            "A100-80GB-SXM",
            "zai-org/GLM-5",
            0,
            None,
        )
    else:
        line = next(x for x in out.splitlines() if x.startswith("2x8xA100-80GB-SXM"))
        assert "cannot be used" in line and "Hopper or Blackwell" in line
        assert any(x.startswith("2x8xH200 ") for x in out.splitlines())


def _vllm_sparse_majors(site: Path) -> dict[int, bool]:
    """Compute-capability majors 0..15 -> whether a CUDA sparse MLA backend class of vLLM accepts it."""
    ok = dict.fromkeys(range(16), False)
    for f in (site / "vllm/v1/attention/backends/mla").glob("*sparse*.py"):
        if f.name.startswith(("rocm", "xpu")):
            continue
        for cls in (n for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.ClassDef)):
            fns = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
            cap = fns.get("supports_compute_capability")  # the backend classes of a sparse file (is_sparse: True)
            if cap is None:
                continue
            expr = compile(ast.Expression(cap.body[-1].value), f.name, "eval")  # e.g. capability.major in [9, 10]
            for m in ok:
                ok[m] |= bool(eval(expr, {}, {"capability": type("C", (), {"major": m, "minor": 0})}))
    return ok


def test_capability_table_matches_vllm_sparse_backends():
    py = vllm_python()
    if py is None:
        pytest.skip(VLLM_ABSENT)
    site = next(Path(py).parent.parent.glob("lib/python3*/site-packages"))
    vllm_ok = _vllm_sparse_majors(site)
    assert vllm_ok[9] and not vllm_ok[8]  # the oracle found the backends
    fam = gpu_families()
    for m, ok in vllm_ok.items():
        assert fam.has_sparse_attention(f"{m}.0") == ok, m
    for g in load_catalogue():
        cc = g.compute_capability
        if g.vendor == "nvidia" and cc and cc[0].isdigit():
            assert fam.has_sparse_attention(cc) == vllm_ok[int(cc.split(".")[0])], g.name


SMALLER_THAN_SPARSE = {
    g.name for g in load_catalogue() if not gpu_families().has_sparse_attention(g.compute_capability)
}


def test_misfit_fixes_never_offer_a_gpu_without_a_sparse_backend(capsys):
    # GLM-5 at TP 1 on a 32 GB RTX 5090 (12.0, accepted) is a misfit; its fix search walks the larger
    # catalogue GPUs (L40S 8.9, A100 8.0, RTX 6000 Ada 8.9 among them) and must skip, not offer or raise
    code, out, err = _run(capsys, "plan", "zai-org/GLM-5", "--gpu", "RTX-5090", "--tp", "1", "--json")
    assert code == 1, err
    fixes = json.loads(out)["fixes"]
    assert fixes, "a misfit lists its fixes"
    assert not {f["flags"].get("gpu") for f in fixes} & SMALLER_THAN_SPARSE


def test_dense_model_fixes_still_reach_ampere(capsys):
    code, out, err = _run(capsys, "plan", "Qwen/Qwen3-32B", "--gpu", "L4", "--tp", "1", "--json")
    assert code == 1, err
    assert any(f["flags"].get("gpu") for f in json.loads(out)["fixes"])


@pytest.mark.parametrize("argv", [["--gpu", "A100-80GB-SXM"], ["--inventory", "8xA100-80GB-SXM,8xH200"]])
def test_slo_sizing_says_the_gpu_cannot_run_it(capsys, argv):
    slo = ["--request-rate", "2", "--input-len", "1000", "--output-len", "200", "--ttft-ms", "2000", "--tpot-ms", "100"]
    code, out, err = _run(capsys, "plan", "zai-org/GLM-5", *argv, *slo, "--json")
    assert "Traceback" not in err
    doc = json.loads(out)
    a100 = next(o for o in doc["gpus"] if o["gpu"] == "A100-80GB-SXM")
    assert a100["chosen"] is None and "sparse MLA backend" in a100["not_meeting"][0]
    assert not any("A100" in s or "L40S" in s for o in doc["gpus"] for s in o["suggestions"])


def test_perf_refuses_in_one_line(capsys):
    code, out, err = _run(
        capsys,
        "perf",
        "deepseek-ai/DeepSeek-V3.2",
        "--gpu",
        "L40S",
        "--input-len",
        "100",
        "--output-len",
        "10",
        "--concurrency",
        "1",
    )
    assert code == 2 and not out and len(err.strip().splitlines()) == 1 and "compute capability 8.9" in err
