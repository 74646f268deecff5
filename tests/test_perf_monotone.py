"""The throughput-vs-latency curve is monotone in concurrency: more closed-loop clients never give
a lower TTFT, TPOT or throughput (the steady state is solved as one increasing equation, not by an
iteration that can oscillate near a full prefill queue), over a table of bundled models and GPUs
at the bundled coefficients, up to the admissible concurrency."""

import pytest

from planner import releases
from planner.api import load_model
from planner.budget import Settings
from planner.hardware import load_catalogue
from planner.perf import coefficients as co
from planner.perf.capacity import admission
from planner.perf.service import Workload, closed_loop, open_loop
from planner.perf.shape import inspection_of, step_shape
from planner.plan import Request, evaluate

CAT = load_catalogue()
CASES = [  # model, GPU, TP, input, output
    ("qwen3-8b", "H100", 1, 1024, 256),  # was not monotone between 256 and 338 clients
    ("qwen3-8b", "H100", 1, 8000, 200),
    ("llama3.1-8b", "A100-80GB-SXM", 1, 2048, 128),
    ("gpt-oss-120b", "H200", 2, 1024, 1024),
    ("nvidia/Llama-3.1-70B-Instruct-FP8", "H100", 4, 8192, 1024),
    ("MiniMaxAI/MiniMax-M2.5", "H200", 8, 1024, 1024),
]


def _setup(model, gpu_name, tp, isl, osl):
    gpu = CAT.get(gpu_name)
    req = Request(load_model(model), Settings(tp=tp), releases.get("0.18.0"))
    b = evaluate(req, gpu, tp, 1)
    shape = step_shape(req.model.spec, inspection_of(req, tp, 1), gpu)
    coef = co.choose(co.bundled(), "0.18.0", gpu).set.coefficients
    adm = admission(b.num_blocks, b.block_size, b.max_num_seqs, isl, osl).steady
    return shape, coef, Workload(isl, osl, b.max_num_batched_tokens), adm


@pytest.mark.parametrize("model,gpu,tp,isl,osl", CASES)
def test_closed_loop_figures_grow_with_concurrency(model, gpu, tp, isl, osl):
    shape, coef, work, adm = _setup(model, gpu, tp, isl, osl)
    loads = sorted({*range(1, adm + 1, max(1, adm // 40)), adm})
    rows = [closed_loop(shape, coef, work, c) for c in loads]
    for name in ("ttft_s", "tpot_s", "output_tokens_per_s"):
        values = [getattr(r, name) for r in rows]
        drops = [(loads[i], loads[i + 1]) for i in range(len(values) - 1) if values[i + 1] < values[i] * (1 - 1e-6)]
        assert not drops, f"{name} falls between concurrencies {drops[:3]}"


@pytest.mark.parametrize("model,gpu,tp,isl,osl", CASES[:4])
def test_open_loop_latencies_grow_with_the_rate_until_it_saturates(model, gpu, tp, isl, osl):
    shape, coef, work, adm = _setup(model, gpu, tp, isl, osl)
    top = closed_loop(shape, coef, work, adm).requests_per_s  # the most a closed loop gets through
    rows = [open_loop(shape, coef, work, top * k / 20) for k in range(1, 41)]
    live = [r for r in rows if not r.saturated]
    assert 10 <= len(live) < len(rows)  # up to about the closed loop's rate, and past it a saturation
    assert all(r.saturated for r in rows[len(live) :])  # once saturated, every higher rate too
    for name in ("ttft_s", "tpot_s", "running"):
        values = [getattr(r, name) for r in live]
        assert all(b >= a * (1 - 1e-6) for a, b in zip(values, values[1:])), name
