"""`vllm-planner plan`: the options read into a plan request (`build_request`, the CLI's only wiring),
the command, and the plan as text."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from planner.cli.args import word
from planner.cli.fmt import table
from planner.cli.options import add_plan_options, add_sizing_options, catalogue_from_args, gpu_from_args
from planner.cli.plot import add_plot_option, draw, plot_target
from planner.errors import PlannerError
from planner.units import GIB


def register(p: argparse.ArgumentParser) -> None:
    add_plan_options(p)
    p.add_argument(
        "--emit",
        metavar="DIR",
        type=word("a folder"),
        help="also write every launch format that can express the plan, plus plan.json, into DIR (default: none)",
    )
    from planner.cli.launch_options import add_launch_options

    add_launch_options(p)
    add_sizing_options(p)
    add_plot_option(p, "the per-GPU memory budget, a stacked bar per stage, warm and first start")
    p.set_defaults(func=cmd_plan)


def _check_combination(a: argparse.Namespace) -> None:
    """Options that would be silently ignored together are errors: the plan must be what was asked."""
    target = "--device cpu" if a.device == "cpu" else "--inventory" if a.inventory else None
    if target and a.gpu:
        raise PlannerError(f"--gpu {a.gpu} has no effect with {target}: drop one of them")
    if target and getattr(a, "interconnect", None):
        raise PlannerError(f"--interconnect has no effect with {target}: drop it, or plan one GPU type with --gpu")
    if target and a.gpu_memory_gib is not None:
        raise PlannerError(f"--gpu-memory-gib has no effect with {target}: drop it, or plan one GPU type with --gpu")
    if a.device == "cpu" and a.cpu_kvcache_gib is None:
        raise PlannerError("--device cpu needs --cpu-kvcache-gib (VLLM_CPU_KVCACHE_SPACE, in GiB, above 0)")
    if a.device != "cpu" and a.cpu_kvcache_gib is not None:
        raise PlannerError("--cpu-kvcache-gib applies to --device cpu only: drop it, or add --device cpu")
    if target is None and not a.gpu:
        raise PlannerError("name a GPU with --gpu (see `vllm-planner gpus`) or an inventory with --inventory")


def _check_tp_in_node(a: argparse.Namespace, gpu: Any) -> None:
    """A TP group stays inside one node (vLLM's practice, and what `emit` writes): `plan --tp 16` on
    8-GPU nodes is refused here as `emit` refuses it, not planned as if it could launch."""
    from planner.plan import DEFAULT_GPUS_PER_NODE

    per_node = getattr(a, "gpus_per_node", None) or gpu.gpus_per_node_max or DEFAULT_GPUS_PER_NODE
    if a.tp and a.tp > per_node:
        stages = f"--tp {per_node} --pp {(a.pp or 1) * -(-a.tp // per_node)}"
        raise PlannerError(
            f"--tp {a.tp} does not fit in a node of {per_node} {gpu.name} GPUs (TP stays inside a node): "
            f"use {stages}, or give a larger node with --gpus-per-node"
        )


def _release(a: argparse.Namespace) -> Any:
    from planner import releases

    version = a.vllm_version
    if version is None:
        from planner.installed import default_release

        version, note = default_release(releases.supported_range())
        if note:  # the installed release, or why it is not used
            print(f"note: {note}", file=sys.stderr)
    return releases.get(version)


def _settings(a: argparse.Namespace) -> Any:
    import os

    from planner import model_runner
    from planner.budget import Settings

    return Settings(
        tp=a.tp or 1,
        pp=a.pp or 1,
        max_model_len=a.max_model_len,
        max_num_seqs=a.max_num_seqs,
        max_num_batched_tokens=a.max_num_batched_tokens,
        gpu_memory_utilization=a.gpu_memory_utilization,
        kv_cache_dtype=a.kv_cache_dtype.lower(),
        enforce_eager=a.enforce_eager,
        kv_cache_memory_bytes=a.kv_cache_memory_bytes,
        block_size=a.block_size,
        allow_long_max_model_len=os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") == "1",
        model_runner=model_runner.from_env(os.environ.get("VLLM_USE_V2_MODEL_RUNNER")),
        expert_parallel=getattr(a, "expert_parallel", None),
    )


def build_request(a: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(Request, GPU or None, catalogue) from the plan options: the CLI's only wiring."""
    from planner import overlay
    from planner.api import load_model
    from planner.plan import Request

    overlay.use(getattr(a, "overheads", None))  # None: the config folder's overlay, if there is one
    rel = _release(a)
    settings = _settings(a)
    _check_combination(a)
    catalogue = catalogue_from_args(a)
    gpu = None
    if a.device != "cpu" and not a.inventory:
        gpu = gpu_from_args(a, catalogue)
        if getattr(a, "interconnect", None):
            gpu = dataclasses.replace(gpu, interconnect_class=a.interconnect)
        _check_tp_in_node(a, gpu)
    cpu_bytes = int(a.cpu_kvcache_gib * GIB) if a.cpu_kvcache_gib else None
    req = Request(
        load_model(a.model),
        settings,
        rel,
        dtype=a.dtype,
        quantization=a.quantization,
        concurrency=a.concurrency,
        device=a.device,
        cpu_kvcache_bytes=cpu_bytes,
    )
    return req, gpu, catalogue


def cmd_plan(a: argparse.Namespace) -> int:
    from planner.api import make_plan
    from planner.plan import DEFAULT_GPUS_PER_NODE

    if a.plot and (a.inventory or a.request_rate is not None):
        where = "--inventory" if a.inventory else "--request-rate (sizing)"
        raise PlannerError(f"--plot draws one plan's budget: plan one GPU type with --gpu, without {where}")
    if a.request_rate is not None:
        from planner.cli.sizing import run

        return run(a)
    given = [f for f in ("input_len", "output_len", "ttft_ms", "tpot_ms") if getattr(a, f) is not None]
    if given:
        raise PlannerError(
            f"--{given[0].replace('_', '-')} applies to SLO sizing only: add --request-rate R, or drop it"
        )
    plot = plot_target(a)
    req, gpu, catalogue = build_request(a)
    if a.inventory:
        from planner.cli.inventory import run_inventory

        return run_inventory(a, req, catalogue)
    result = make_plan(req, gpu, catalogue, a.tp, a.pp, pin_kv_cache=a.pin_kv_cache, expert_parallel=a.expert_parallel)
    per_node = (
        None if gpu is None else getattr(a, "gpus_per_node", None) or gpu.gpus_per_node_max or DEFAULT_GPUS_PER_NODE
    )
    print(json.dumps(result.to_json(), indent=2) if a.json else plan_text(result, req, per_node))
    if plot:
        from planner.plotting import write_budget

        draw(plot, write_budget, result.budget)
    if a.emit:
        from planner.cli.launch_options import launch_options
        from planner.launch.emit import emit_all

        for name, where in emit_all(result, req, a.emit, a.force, **launch_options(a)).items():
            print(f"{name}: {where}", file=sys.stderr)
    return 0 if result.budget.fits else 1


# ---- the plan as text -------------------------------------------------------------------------


def _gpu_line(b: Any, per_node: int | None) -> list[str]:
    """How many GPUs (and nodes) one replica takes, when that is more than one GPU."""
    from planner.inventory import nodes_per_replica

    gpus = b.tp * b.pp
    if gpus == 1 or per_node is None:
        return []
    nodes = nodes_per_replica(b.tp, b.pp, per_node)
    where = f"on {nodes} nodes of {per_node} GPUs" if nodes > 1 else "in one node"
    return [f"one replica: {gpus} GPUs {where}"]


def _memory_table(b: Any) -> str:
    est = lambda k: " (est.)" if k in b.estimated else ""  # noqa: E731
    rows = [
        ["requested (total x %.2f)" % b.gpu_memory_utilization, f"{b.requested_gib:.2f}"],
        ["weights" + est("weights_gib"), f"{b.weights_gib:.2f}"],
        ["activation peak" + est("activation_gib"), f"{b.activation_gib:.2f}"],
        ["non-torch" + est("non_torch_gib"), f"{b.non_torch_gib:.2f}"],
        ["CUDA graphs" + est("cudagraph_gib"), f"{b.cudagraph_gib:.2f}"],
    ]
    if b.runner_buffers_gib:
        rows.append(["V2 runner sampler buffers", f"{b.runner_buffers_gib:.2f}"])
    rows.append(["KV cache" + est("kv_cache_gib"), f"{b.kv_cache_gib:.2f}"])
    if "kv_cache_gib" in b.estimated and b.kv_cache_gib_range[0] != b.kv_cache_gib_range[1]:
        lo, hi = b.kv_cache_gib_range
        rows.append(["  range (cross-validated)", f"{lo:.2f}-{hi:.2f}"])
        rows.append(["  first start, empty compile cache", f"{b.kv_cache_gib_cold:.2f}"])
    return table(rows, ["per GPU (binding stage)", "GiB"], colalign=("left", "right"))


def _span(b: Any, key: str, fmt: str, tail: str = "") -> str:
    """' (range lo-hi...)' for an estimated figure whose range is not a point, else ''."""
    lo, hi = getattr(b, key + "_range")
    return f" (range {lo:{fmt}}-{hi:{fmt}}{tail})" if key in b.estimated and lo != hi else ""


def _kv_lines(r: Any, b: Any) -> list[str]:
    est = lambda k: " (est.)" if k in b.estimated else ""  # noqa: E731
    cold = f"; first start {b.kv_cache_tokens_cold:,}"
    runner = "" if r.gpu is None else f" | model runner {b.model_runner.upper()}"
    lines = [
        f"KV: {b.kv_bytes_per_token:,} B/token/GPU, block {b.block_size}, {b.num_blocks:,} blocks, "
        f"{b.kv_cache_tokens:,} tokens{est('kv_cache_tokens')}" + _span(b, "kv_cache_tokens", ",", cold),
        f"max_model_len {b.max_model_len:,} | max_num_seqs {b.max_num_seqs:,} | "
        f"max_num_batched_tokens {b.max_num_batched_tokens:,}" + runner,
        f"maximum concurrency at {b.max_model_len:,} tokens: {b.max_concurrency:.2f}x{est('max_concurrency')}"
        + _span(b, "max_concurrency", ".2f", "x"),
        f"largest context for one request: {b.max_model_len_fit:,}{est('max_model_len_fit')}",
    ]
    if b.concurrency:
        lines.append(
            f"largest context for {b.concurrency} concurrent requests: {b.max_model_len_fit_concurrency or 0:,}"
            f"{est('max_model_len_fit_concurrency')}"
        )
    return lines


def _fix_lines(r: Any, b: Any) -> list[str]:
    lines = [f"not TP {rej.tp} x PP {rej.pp}: {rej.reason}" for rej in r.rejected]
    if r.fixes:
        lines += ["", "smallest changes that fit:"]
        for f, command in zip(r.fixes, r.fix_commands):
            fb = f.budget
            lines.append(
                f"  - {f.change}: TP {fb.tp}{f' x PP {fb.pp}' if fb.pp > 1 else ''} on {fb.gpu}, "
                f"{fb.kv_cache_tokens:,} KV tokens, "
                f"{fb.max_concurrency:.2f}x at {fb.max_model_len:,}"
            )
            lines.append(f"    {command}")
    elif not b.fits:
        lines += [
            "",
            "no single change in the catalogue makes it fit: consider more GPUs (--inventory) or a smaller model",
        ]
    return lines


def plan_text(r: Any, req: Any, per_node: int | None = None) -> str:
    b = r.budget
    where = f"{b.gpu} ({b.total_gib:.2f} GiB)" if r.gpu else "vLLM CPU backend"
    lines = [
        f"{b.model} on {where}, vLLM {b.vllm_version}, TP {b.tp} x PP {b.pp}: "
        + ("FITS" if b.fits else "DOES NOT FIT"),
        *_gpu_line(b, per_node),
        "",
        _memory_table(b),
        "",
        *_kv_lines(r, b),
        f"binding: {r.binding}",
    ]
    if b.error:
        lines += ["", f"vLLM would fail to start: {b.error}"]
    lines += _fix_lines(r, b)
    lines += [f"note: {n}" for n in b.notes]
    if b.estimated:
        lines.append("estimated (modelled, not measured): " + ", ".join(b.estimated))
    label = (
        "" if b.fits else f"the command as asked, which does NOT fit{' (the changes above fit)' if r.fixes else ''}:\n"
    )
    lines += ["", label + r.serve_command]
    return "\n".join(lines)
