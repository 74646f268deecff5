"""`vllm-planner perf`: throughput and latency of a plan at a load, and the throughput-vs-latency
table over concurrency (planner/perf/api.py estimates them)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from planner.cli.args import int_range, positive_float
from planner.cli.options import add_plan_options
from planner.cli.plan import build_request
from planner.cli.plot import add_plot_option, draw, plot_target
from planner.errors import PlannerError

HELP = "throughput and latency (TTFT, TPOT/ITL, tokens/s) of a plan at a load, with ranges"


def register(p: argparse.ArgumentParser) -> None:
    p.description = HELP + ". --concurrency is the closed-loop load."
    add_plan_options(p)
    p.add_argument(
        "--input-len", type=int_range(1, what="a token count"), required=True, help="prompt tokens per request"
    )
    p.add_argument(
        "--output-len", type=int_range(1, what="a token count"), required=True, help="output tokens per request"
    )
    p.add_argument(
        "--request-rate",
        type=positive_float("request rate (requests/s)"),
        help="open-loop Poisson arrivals, requests per second, instead of --concurrency (default: none)",
    )
    p.add_argument(
        "--curve",
        action="store_true",
        help="also print the throughput-vs-latency table over concurrency (default: off)",
    )
    add_plot_option(p, "the throughput-vs-latency curve over concurrency")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from planner.perf.api import check_load, curve, estimate

    if a.inventory:
        raise PlannerError("perf estimates one GPU type: give --gpu instead of --inventory")
    if a.device == "cpu":
        raise PlannerError("perf models GPUs only: drop --device cpu")
    check_load(a.input_len, a.output_len, a.concurrency, a.request_rate)
    plot = plot_target(a)
    req, gpu, _ = build_request(a)
    req = dataclasses.replace(req, concurrency=None)
    r = estimate(
        req, gpu, a.input_len, a.output_len, concurrency=a.concurrency, request_rate=a.request_rate, tp=a.tp, pp=a.pp
    )
    table = curve(req, gpu, a.input_len, a.output_len, r.tp, r.pp) if a.curve or plot else None
    if a.json:
        out = r.to_json()
        if a.curve:
            out["curve"] = [_curve_row(x) for x in table]
        print(json.dumps(out, indent=2))
    else:
        print(text(r))
        if a.curve:
            print("\n" + curve_text(table))
    if plot:
        from planner.plotting import write_curve

        draw(plot, write_curve, table)
    return 1 if r.kv_limited or r.saturated else 0


def _fmt(v: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}{unit}"


def _span(rng: list[float] | None, digits: int = 1) -> str:
    return "" if rng is None else f"  (range {rng[0]:,.{digits}f}-{rng[1]:,.{digits}f})"


def text(r: Any) -> str:
    j = r.to_json()
    load = f"concurrency {r.concurrency} (closed loop)" if r.concurrency else f"{r.request_rate:g} requests/s (Poisson)"
    lines = [
        f"{r.model} on {r.gpu}, vLLM {r.vllm_version}, TP {r.tp} x PP {r.pp}: input {r.input_len:,}, "
        f"output {r.output_len:,} tokens, {load}",
        "",
    ]
    if r.kv_limited or r.saturated:
        lines += [f"OVER CAPACITY: {n}" for n in r.notes[:1]] + [n for n in r.notes[1:]]
        if r.at_admissible is not None:
            lines += ["", f"at the admissible concurrency {r.max_concurrency_kv}:"]
            j = {**j, **(j["at_admissible_concurrency"] or {})}
    lines += [
        f"TTFT (estimated)        {_fmt(j['ttft_ms'], ' ms')}{_span(j['ttft_ms_range'])}",
        f"TPOT = ITL (estimated)  {_fmt(j['tpot_ms'], ' ms', 2)}{_span(j['tpot_ms_range'], 2)}",
        f"end-to-end (estimated)  {_fmt(j['e2e_latency_s'], ' s', 3)}",
        f"output tokens/s         {_fmt(j['output_tokens_per_s'])}{_span(j['output_tokens_per_s_range'])}"
        f" per replica, {_fmt(j['output_tokens_per_s_per_gpu'])} per GPU",
        f"requests/s              {_fmt(j['requests_per_s'], '', 3)}",
        f"KV: {_fmt(j['kv_tokens_in_use'], '', 0)} of {r.kv_cache_tokens:,} tokens in use; admissible concurrency "
        f"{r.max_concurrency_kv} ({r.max_concurrency_kv_no_preemption} without any preemption)",
    ]
    if not (r.kv_limited or r.saturated):
        lines += [f"note: {n}" for n in r.notes]
    c = j["calibration"]
    lines.append(f"calibration: {c['set']} ({c['fitted_on']})")
    lines += [f"extrapolated: {w}" for w in c["why"]]
    lines.append("ranges: the 10th-90th percentile of the fit's leave-one-model-out error; all figures are estimates")
    return "\n".join(lines)


def _curve_row(r: Any) -> dict[str, Any]:
    j = r.to_json()
    return {
        k: j[k]
        for k in (
            "concurrency",
            "ttft_ms",
            "tpot_ms",
            "output_tokens_per_s",
            "output_tokens_per_s_per_gpu",
            "requests_per_s",
            "kv_limited",
        )
    }


def curve_text(rows: list[Any]) -> str:
    from tabulate import tabulate

    body = [
        [
            x["concurrency"],
            _fmt(x["ttft_ms"]),
            _fmt(x["tpot_ms"], "", 2),
            _fmt(x["output_tokens_per_s"]),
            _fmt(x["output_tokens_per_s_per_gpu"]),
            _fmt(x["requests_per_s"], "", 3),
            "over KV capacity" if x["kv_limited"] else "",
        ]
        for x in map(_curve_row, rows)
    ]
    return tabulate(
        body,
        headers=["concurrency", "TTFT ms", "TPOT ms", "out tok/s", "per GPU", "req/s", ""],
        disable_numparse=True,
        colalign=("right",) * 6 + ("left",),
    )
