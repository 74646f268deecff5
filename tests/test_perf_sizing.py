"""SLO sizing (`plan --request-rate`): replicas against the perf model's own figures at the per-replica
load, monotonicity in rate and targets, the objective over an inventory, the physical floor, the
M/D/1 TTFT percentiles against a simulation, bad input (one line, exit 2) and the layering."""

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from md1_reference import md1_wait_cdf, md1_wait_quantile, ttft_percentiles_ms

from planner import releases
from planner.api import load_model
from planner.budget import Settings
from planner.hardware import load_catalogue, parse_inventory
from planner.perf.api import estimate
from planner.perf.sizing import (
    Targets,
    Traffic,
    Where,
    capacity,
    fewest_replicas,
    nodes_for,
    size,
)
from planner.plan import Request

REPO = Path(__file__).resolve().parent.parent
CAT = load_catalogue()
RELEASE = "0.18.0"


def _req(model: str, max_model_len: int = 8192) -> Request:
    return Request(load_model(model), Settings(max_model_len=max_model_len), releases.get(RELEASE))


def _size(model, gpus, rate, i, o, ttft=None, tpot=None, objective="cost", inventory=None):
    wheres = (
        [Where.of_group(g) for g in parse_inventory(inventory, CAT)]
        if inventory
        else [Where.of_gpu(CAT.get(g)) for g in gpus]
    )
    return size(_req(model), wheres, Traffic(rate, i, o), Targets(ttft, tpot), objective, CAT)


def _meets(p, ttft, tpot) -> bool:
    f = p.figures
    return (
        not p.kv_limited
        and not p.saturated
        and (ttft is None or f.ttft_ms <= ttft)
        and (tpot is None or f.tpot_ms <= tpot)
    )


CASES = [  # model, GPU, rate (req/s), input, output, TTFT ms, TPOT ms
    ("llama3.1-8b", "H100", 30, 1024, 256, 500, 20),
    ("llama3.1-8b", "H100", 5, 1024, 256, None, 12),
    ("llama3.1-8b", "A100-80GB-SXM", 40, 2048, 128, 800, None),
    ("llama3.1-70b", "H100", 10, 1024, 256, 1000, 40),
    ("llama3.1-70b", "H200", 25, 512, 512, None, 30),
    ("gpt-oss-120b", "H100", 20, 1024, 1024, 600, 25),
    ("llama3.1-8b", "L4", 3, 1024, 256, 2000, None),
    ("llama3.1-8b", "H100", 50, 4096, 64, None, None),  # no target: KV capacity or throughput binds
]


@pytest.mark.parametrize("model, gpu, rate, i, o, ttft, tpot", CASES)
def test_replicas_are_the_fewest_the_perf_model_serves_within_the_targets(model, gpu, rate, i, o, ttft, tpot):
    best = _size(model, [gpu], rate, i, o, ttft, tpot).best
    assert best is not None
    req, g = _req(model), CAT.get(gpu)
    at = estimate(req, g, i, o, request_rate=rate / best.replicas, tp=best.tp, pp=best.pp)
    assert _meets(at, ttft, tpot)
    assert at.figures.ttft_ms == pytest.approx(best.figures.ttft_ms) and at.tp == best.tp
    if best.replicas > 1:
        fewer = estimate(req, g, i, o, request_rate=rate / (best.replicas - 1), tp=best.tp, pp=best.pp)
        assert not _meets(fewer, ttft, tpot)
    # the capacity search is within 2.2% below the true capacity: ceil(rate / capacity) is at most one over
    assert best.replicas <= math.ceil(rate / best.capacity_rps) <= best.replicas + 1
    assert best.gpus == best.replicas * best.tp * best.pp
    assert best.cost_per_hour_usd == pytest.approx(best.gpus * g.price_per_gpu_hour_usd)
    assert best.cost_per_million_output_tokens_usd == pytest.approx(best.cost_per_hour_usd / (rate * o * 3600 / 1e6))
    assert best.binding in ("memory", "KV capacity", "TTFT", "TPOT", "throughput")


def test_more_traffic_never_takes_fewer_gpus():
    gpus = [_size("llama3.1-8b", ["H100"], r, 1024, 256, 500, 20).best.gpus for r in (1, 5, 20, 40, 80, 160)]
    assert gpus == sorted(gpus) and gpus[-1] > gpus[0]


@pytest.mark.parametrize("which", ["ttft", "tpot"])
def test_a_looser_target_never_takes_more_gpus(which):
    targets = (55, 60, 65, 80, 400) if which == "ttft" else (9, 12, 20, 40, 80)
    gpus = [_size("llama3.1-8b", ["H100"], 40, 1024, 256, **{which: t}).best.gpus for t in targets]
    assert gpus == sorted(gpus, reverse=True) and gpus[0] > gpus[-1]


def test_the_objective_ranks_an_inventory_of_two_gpu_types():
    # 50 req/s of 8B: four H100s ($3.99/h each) or three H200s ($6.35/h each)
    inv = "2x8xH100,2x8xH200"
    cost = _size("llama3.1-8b", [], 50, 1024, 256, 500, 12, "cost", inv)
    few = _size("llama3.1-8b", [], 50, 1024, 256, 500, 12, "gpus", inv)
    chosen = [o.chosen for o in cost.options]
    assert cost.best.cost_per_hour_usd == min(x.cost_per_hour_usd for x in chosen)
    assert few.best.gpus == min(x.gpus for x in chosen)
    assert (cost.best.gpu, few.best.gpu) == ("H100-SXM-80GB", "H200")


def test_an_inventory_too_small_says_so_and_the_nodes_are_counted():
    r = _size("llama3.1-8b", [], 200, 1024, 256, 500, 20, inventory="1x2xH100")
    assert r.best is None and any("the inventory 1x2xH100-SXM-80GB holds" in u for u in r.options[0].unmet)
    assert nodes_for(9, 1, 1, 8) == 2 and nodes_for(2, 8, 2, 8) == 4 and nodes_for(3, 4, 1, 8) == 2


def test_a_target_below_every_floor_is_unreachable_with_what_would():
    r = _size("llama3.1-70b", ["H100"], 10, 1024, 256, None, 10)
    assert r.best is None and r.options[0].below_floor
    line = r.unreachable()
    assert "unreachable" in line and "because" in line and "\n" not in line
    assert "fp8 weights" in line and "another GPU" in line and f"above {r.options[0].floor.tpot_ms:.2f}" in line
    # just above the floor is reachable (with more replicas)
    assert _size("llama3.1-70b", ["H100"], 10, 1024, 256, None, r.options[0].floor.tpot_ms * 1.3).best is not None


def test_a_gpu_type_that_meets_no_target_beside_one_that_does_gets_suggestions():
    r = _size("llama3.1-8b", [], 5, 1024, 256, None, 12, inventory="1x8xH100,1x1xL4")
    assert r.best.gpu == "H100-SXM-80GB" and r.unreachable() is None
    l4 = next(o for o in r.options if o.gpu == "L4")
    assert l4.chosen is None and l4.below_floor
    assert any(s.startswith("a looser target: --tpot-ms above") for s in l4.suggestions)


def test_capacity_and_fewest_replicas_on_a_known_threshold():
    check = lambda rate: None if rate <= 7.3 else "TTFT"  # noqa: E731
    cap, why = capacity(check, 20.0)
    assert 7.3 / 1.023 <= cap <= 7.3 and why == "TTFT"
    assert fewest_replicas(check, 20.0, cap) == 3 and fewest_replicas(check, 20.0, 1.0) == 3


# ---- TTFT percentiles: M/D/1 waiting time --------------------------------------------------------


def _lindley(rho: float, n: int = 200_000, seed: int = 7) -> list[float]:
    """Waits of a simulated M/D/1 queue (service 1, Poisson arrivals at rate rho)."""
    rnd, w, out = random.Random(seed), 0.0, []
    for _ in range(n):
        out.append(w)
        w = max(0.0, w + 1.0 - rnd.expovariate(rho))
    return sorted(out)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.8])
def test_md1_wait_quantiles_match_a_simulated_queue(rho):
    sim = _lindley(rho)
    for q in (0.5, 0.9, 0.99):
        want = sim[int(q * len(sim))]
        assert md1_wait_quantile(q, rho) == pytest.approx(want, abs=0.03 + 0.05 * want)


def test_md1_wait_distribution_has_the_pollaczek_khinchine_mean():
    rho = 0.7
    assert md1_wait_cdf(0.0, rho) == pytest.approx(1 - rho)
    du = 0.01
    mean = sum((1 - md1_wait_cdf(k * du, rho)) * du for k in range(4000))
    assert mean == pytest.approx(rho / (2 * (1 - rho)), rel=0.01)


def test_ttft_percentiles_keep_the_models_mean_and_are_ordered():
    p = ttft_percentiles_ms(300.0, 50.0, 0.5)
    assert p["p50"] <= p["p90"] <= p["p99"]
    assert p["p50"] == pytest.approx(50 + 250 / 1.5, abs=0.05)  # rho 0.5: half the arrivals wait nothing
    assert ttft_percentiles_ms(300.0, 50.0, 1.0) is None


# ---- the command ---------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, text=True, cwd=REPO)


BASE = ("plan", "llama3.1-8b", "--gpu", "H100", "--max-model-len", "8192", "--vllm-version", RELEASE)
LOAD = ("--input-len", "1024", "--output-len", "256")


@pytest.mark.parametrize(
    "args, message",
    [
        (("--request-rate", "0", *LOAD), "--request-rate"),
        (("--request-rate", "-2", *LOAD), "--request-rate"),
        (("--request-rate", "5", *LOAD, "--ttft-ms", "0"), "--ttft-ms"),
        (("--request-rate", "5", *LOAD, "--tpot-ms", "-1"), "--tpot-ms"),
        (("--request-rate", "5", *LOAD, "--concurrency", "8"), "drop one of them"),
        (("--request-rate", "5", "--input-len", "1024"), "--output-len"),
        (("--request-rate", "5", "--input-len", "1024", "--output-len", "1", "--tpot-ms", "20"), "--output-len 2"),
        (("--request-rate", "5", "--input-len", "8000", "--output-len", "1000"), "exceeds max_model_len 8,192"),
        (("--request-rate", "5", *LOAD, "--tpot-ms", "1"), "unreachable on H100-SXM-80GB, because"),
        (("--request-rate", "5", *LOAD, "--ttft-ms", "5"), "unreachable on H100-SXM-80GB, because"),
        (("--request-rate", "5", *LOAD, "--tp", "3"), "does not divide the 32 attention heads"),
        (("--request-rate", "5", *LOAD, "--tp", "16"), "does not fit in a node of 8"),
        (("--request-rate", "nan", *LOAD), "--request-rate"),
        (("--request-rate", "inf", *LOAD), "--request-rate"),
        (("--request-rate", "5", *LOAD, "--replicas", "2"), "drop --replicas"),
        (
            (
                "--ttft-ms",
                "500",
            ),
            "add --request-rate",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    p = _cli(*BASE, *args)
    assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stdout == ""


def test_plan_json_with_a_rate_is_the_api_result():
    p = _cli(*BASE, "--request-rate", "20", *LOAD, "--ttft-ms", "500", "--tpot-ms", "30", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out.pop("pin_kv_cache") is False
    want = _size("llama3.1-8b", ["H100"], 20.0, 1024, 256, 500.0, 30.0).to_json()
    assert out == json.loads(json.dumps(want))
    best = out["gpus"][0]["chosen"]
    for key in (
        "tp",
        "pp",
        "replicas",
        "gpus_used",
        "nodes_used",
        "cost_per_hour_usd",
        "cost_per_million_output_tokens_usd",
        "binding",
        "ttft_ms",
        "ttft_ms_range",
        "tpot_ms",
        "tpot_ms_range",
        "ttft_percentiles_ms",
        "floor_tpot_ms",
    ):
        assert key in best
    assert set(best["ttft_percentiles_ms"]) == {"p50", "p90", "p99"} and "replicas" in out["estimated"]
    # each percentile's range is the mean's held-out band, relatively: it holds the percentile, and the
    # ratio of its ends to the percentile is the mean's
    lo, hi = (b / best["ttft_ms"] for b in best["ttft_ms_range"])
    for name, (p_lo, p_hi) in best["ttft_percentiles_ms_range"].items():
        v = best["ttft_percentiles_ms"][name]
        assert p_lo <= v <= p_hi
        assert p_lo == pytest.approx(v * lo, abs=0.06) and p_hi == pytest.approx(v * hi, abs=0.06)
    assert "ttft_percentiles_ms_range" in out["estimated"]


def test_plan_text_with_a_rate_names_the_best_and_says_estimated():
    p = _cli(*BASE, "--request-rate", "20", *LOAD, "--tpot-ms", "30")
    assert p.returncode == 0, p.stderr
    assert "best: 1 replica(s) of TP 1 x PP 1 on H100-SXM-80GB: 1 GPU(s)" in p.stdout and "TPOT (estimated)" in p.stdout


def test_plan_without_a_rate_is_unchanged_and_loads_no_perf_module():
    code = (
        "import sys; from planner.cli import main; main(['plan', 'qwen3-8b', '--gpu', 'H100', '--json']); "
        "print(sorted(m for m in sys.modules if m.startswith('planner.perf')), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stderr.strip().splitlines()[-1] == "[]"


# ---- layering --------------------------------------------------------------------------------------

SIZING_MODULES = (
    "planner.perf.sizing",
    "planner.perf.advice",
    "planner.perf.ttft_percentiles",
)


@pytest.mark.parametrize("module", SIZING_MODULES)
def test_sizing_imports_no_later_step_and_the_model_does_no_io(module):
    from test_layering import HEAVY, LATER_STEPS, NO_IO, imports_of

    found = imports_of(module)
    assert not {i for i in found for f in LATER_STEPS if i == f or i.startswith(f + ".")}
    assert not {i for i in found if i.split(".")[0] in HEAVY}
    assert not {i for i in found if i.split(".")[0] in NO_IO}
