"""`vllm-planner`: the command line, a thin layer over the Python API.

Exit status: 0 success (for `plan`: it fits), 1 a plan that does not fit, 2 bad input.
Bad input is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
from typing import Any, Callable, NoReturn, Sequence

from planner.cliargs import finite_float, fraction, human_int, int_range, word
from planner.errors import PlannerError

GIB = 2**30


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its default prints the whole usage first) and no silent
    prefix abbreviations (`--max-num` must not quietly mean one of two flags)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise PlannerError(f"{message} (see `{self.prog} --help`)")


def _fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _gib(b: int | float | None) -> str:
    return "-" if b is None else f"{b / GIB:,.2f} GiB"


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str], **kw: Any) -> str:
    from tabulate import tabulate  # small, but only the table-printing commands need it

    return tabulate(rows, headers=headers, disable_numparse=True, **kw)


# ---- inspect ----------------------------------------------------------------------------------

MODEL_HELP = "bundled id or alias (see `vllm-planner models`), a config.json / checkpoint folder, or a Hugging Face id"
MAX_PARALLEL = 4096
_positive_int = int_range(1)
_gpu_count = int_range(1, MAX_PARALLEL, "a GPU count")


def _add_format_options(p: argparse.ArgumentParser, kv_default: str | None) -> None:
    """The number formats, shared by inspect and plan."""
    p.add_argument(
        "--dtype",
        type=word("a dtype"),
        help="weight and activation dtype, as vLLM's --dtype: auto, bfloat16, float16, float32 "
        "(default: auto, the checkpoint's; float32 checkpoints run in bfloat16)",
    )
    p.add_argument(
        "--quantization",
        "-q",
        type=word("a quantization method"),
        help="vLLM's --quantization: fp8 (online), or the checkpoint's own scheme to confirm it "
        "(default: the checkpoint's scheme, else none)",
    )
    p.add_argument(
        "--kv-cache-dtype",
        type=word("a KV-cache dtype"),
        default=kv_default,
        help="KV-cache element type: auto, bfloat16, float16, fp8, fp8_e4m3, fp8_e5m2 "
        "(default: auto, the model dtype or the checkpoint's KV scheme)",
    )


def _add_parallel_options(p: argparse.ArgumentParser, default: int | None) -> None:
    """--tp/--pp with vLLM's own spellings, which the planner's serve commands print."""
    when = "1" if default else "the smallest that fits"
    p.add_argument(
        "--tp",
        "--tensor-parallel-size",
        "-tp",
        dest="tp",
        type=_gpu_count,
        default=default,
        help=f"tensor-parallel size, GPUs per pipeline stage (default: {when})",
    )
    p.add_argument(
        "--pp",
        "--pipeline-parallel-size",
        "-pp",
        dest="pp",
        type=_gpu_count,
        default=default,
        help=f"pipeline-parallel size, stages of whole layers (default: {'1' if default else '1, more when TP fills a node'})",
    )


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)
    _add_format_options(p, None)
    _add_parallel_options(p, 1)
    p.add_argument("--json", action="store_true", help="print one JSON object (default: a table)")


def _inspect_text(r: Any) -> str:
    est = set(r.estimated)
    mark = lambda key: " (estimated)" if key in est else ""  # noqa: E731
    head = [
        f"{r.model}  [{r.source}, {r.architecture}, tensors from {r.tensor_source}]",
        f"dtype {r.dtype} | quantization {r.quantization or 'none'} | KV cache {r.kv_cache_dtype} | TP {r.tp} x PP {r.pp}",
        "",
    ]
    total = r.params_total or 1
    rows = [
        [k, _fmt_int(v), f"{100 * v / total:.1f}%"]
        for k, v in sorted(r.params_breakdown.items(), key=lambda kv: -kv[1])
    ]
    rows.append(["total (loaded by vLLM)", _fmt_int(r.params_total), ""])
    if r.params_active != r.params_total:
        rows.append(["active per token", _fmt_int(r.params_active), ""])
    for k, v in r.params_not_loaded.items():
        rows.append([f"not loaded: {k}", _fmt_int(v), ""])
    rows.append(["checkpoint total", _fmt_int(r.params_checkpoint), ""])
    if r.params_published is not None:
        same = (
            "matches"
            if r.params_published == r.params_checkpoint
            else f"differs by {r.params_checkpoint - r.params_published:+,}"
        )
        rows.append(["published", _fmt_int(r.params_published), same])
    out = head + [_table(rows, ["parameters", "count", "share"], colalign=("left", "right", "right")), ""]
    wrows = [[k, _gib(v), _fmt_int(v)] for k, v in sorted(r.weight_breakdown_per_gpu.items(), key=lambda kv: -kv[1])]
    wrows.append(
        [
            f"weights per GPU{mark('weight_bytes_per_gpu')}",
            _gib(r.weight_bytes_per_gpu),
            _fmt_int(r.weight_bytes_per_gpu),
        ]
    )
    wrows.append(["weights, all GPUs of a replica", _gib(r.weight_bytes_total), _fmt_int(r.weight_bytes_total)])
    out += [_table(wrows, ["per GPU", "GiB", "bytes"], colalign=("left", "right", "right")), ""]
    kinds = ", ".join(f"{k} {v:,} B" for k, v in r.kv_bytes_per_token_by_kind.items())
    out += [
        f"KV cache per token per GPU: {r.kv_bytes_per_token_per_gpu:,} B ({kinds}); head size {r.head_size}, "
        f"{r.kv_heads_per_rank} KV head(s) per rank",
        "layer types: " + ", ".join(f"{k} {v}" for k, v in r.layer_types.items()),
        f"default max_model_len: {r.max_model_len_default:,}",
    ]
    if r.mamba_state_bytes_per_seq:
        out.append(f"recurrent state per sequence per GPU: {r.mamba_state_bytes_per_seq:,} B")
    if r.estimated:
        out.append("estimated: " + ", ".join(r.estimated))
    out += [f"warning: {w}" for w in r.warnings]
    return "\n".join(out)


def _cmd_inspect(a: argparse.Namespace) -> int:
    from planner.api import inspect

    r = inspect(a.model, tp=a.tp, pp=a.pp, dtype=a.dtype, quantization=a.quantization, kv_cache_dtype=a.kv_cache_dtype)
    print(json.dumps(r.to_json(), indent=2) if a.json else _inspect_text(r))
    return 0


# ---- models, dtypes ---------------------------------------------------------------------------


def _cmd_models(a: argparse.Namespace) -> int:
    from planner.catalog import models_table

    rows = models_table()
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        _table(
            [
                [
                    r["id"],
                    r["architecture"],
                    _fmt_int(r["params_total"]),
                    _fmt_int(r["max_model_len"]),
                    ", ".join(r["aliases"]),
                ]
                for r in rows
            ],
            ["model", "architecture", "parameters", "context", "aliases"],
            colalign=("left", "left", "right", "right", "left"),
        )
    )
    return 0


def _cmd_dtypes(a: argparse.Namespace) -> int:
    from planner.dtypes import formats_table

    rows = formats_table()
    if a.json:  # snake-case keys: "bytes per parameter" -> bytes_per_parameter
        print(json.dumps([{k.replace(" ", "_"): v for k, v in r.items()} for r in rows], indent=2))
        return 0
    g = lambda x: "-" if x is None else f"{x:g}"  # noqa: E731
    print(
        _table(
            [
                [
                    r["format"],
                    r["bits"],
                    g(r["exponent bits"]),
                    g(r["mantissa bits"]),
                    g(r["largest value"]),
                    g(r["smallest normal"]),
                    g(r["decimal digits"]),
                    g(r["bytes per parameter"]),
                    r["note"],
                ]
                for r in rows
            ],
            ["format", "bits", "exp", "mant", "largest", "smallest normal", "digits", "bytes/param", "note"],
        )
    )
    return 0


# ---- plan -------------------------------------------------------------------------------------

# Sanity bounds on the number flags (far above any real deployment): a typo must not become a
# plan with 10**308 tokens or a search over 100,000,000 GPUs.
MAX_TOKENS = 2**31 - 1  # vLLM indexes positions with int32
MAX_SEQS = 2**20
MAX_KV_POOL_BYTES = 2**50  # 1 PiB per GPU
MAX_GPU_GIB = 65536
_tokens = human_int(1, MAX_TOKENS)
_seqs = int_range(1, MAX_SEQS, "a request count")


def _max_model_len(text: str) -> int | str:
    if text.lower() in ("auto", "-1"):
        return "auto"
    return _tokens(text)


def _add_plan_options(p: argparse.ArgumentParser, inventory: bool = True) -> None:
    """The options of plan, emit and verify; `inventory=False` (verify checks one deployment) leaves
    out --inventory and --objective."""
    from planner.hardware import INTERCONNECT_CLASSES

    p.add_argument("model", help=MODEL_HELP)
    p.add_argument(
        "--gpu",
        type=word("a GPU name"),
        help="GPU type from `vllm-planner gpus`, name or alias (required unless --inventory or --device cpu)",
    )
    if inventory:
        p.add_argument(
            "--inventory",
            type=word("an inventory"),
            help="plan over an inventory instead of --gpu: NODESxGPUSxTYPE[,...], e.g. 2x8xH100,4x1xL4 (default: none)",
        )
        p.add_argument(
            "--objective",
            choices=("gpus", "cost"),
            help="how --inventory ranks the GPU types: fewest GPUs per replica, or lowest $/h per replica; "
            "with --request-rate: fewest GPUs or lowest $/h in all (default: gpus; with --request-rate: cost)",
        )
    else:
        p.set_defaults(inventory=None, objective="gpus")
    _add_parallel_options(p, None)
    p.add_argument(
        "--max-model-len",
        "--context",
        dest="max_model_len",
        type=_max_model_len,
        metavar="TOKENS",
        help="context per request in tokens (8192, 32k = 32,000, 32K = 32,768), or 'auto' for the longest "
        "that fits (default: the model's limit)",
    )
    p.add_argument(
        "--max-num-seqs",
        type=_seqs,
        metavar="N",
        help="requests vLLM schedules at once (default: the release's default for the GPU)",
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=_tokens,
        metavar="TOKENS",
        help="tokens per scheduler step, the profile run's size (default: the release's default for the GPU)",
    )
    p.add_argument(
        "--gpu-memory-utilization",
        type=fraction,
        metavar="FRACTION",
        help="share of the GPU's total memory vLLM may use, above 0 and at most 1 (default: the release's, 0.9)",
    )
    _add_format_options(p, "auto")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs, so no graph memory (default: off)")
    p.add_argument(
        "--kv-cache-memory-bytes",
        type=human_int(1, MAX_KV_POOL_BYTES, "a byte count"),
        metavar="BYTES",
        help="pin the KV pool per GPU in bytes (8G = 8 GiB); skips the measured terms, as vLLM does "
        "(default: sized from --gpu-memory-utilization)",
    )
    p.add_argument(
        "--block-size",
        type=int_range(1, 2**16, "a block size"),
        metavar="TOKENS",
        help="tokens per KV-cache block (default: the attention backend's, 16 for most models)",
    )
    p.add_argument(
        "--gpu-memory-gib",
        type=finite_float(0.001, MAX_GPU_GIB, "number of GiB"),
        metavar="GIB",
        help="override the GPU's total memory, GiB as torch reports it (default: the catalogue's)",
    )
    p.add_argument(
        "--gpu-file",
        type=word("a file path"),
        metavar="YAML",
        help="YAML file adding or overriding GPUs, same shape as profiles/gpus.yaml (default: none)",
    )
    p.add_argument(
        "--concurrency",
        type=_seqs,
        metavar="N",
        help="requests that must fit at once at the full context (default: none, one request)",
    )
    p.add_argument(
        "--vllm-version",
        type=word("a vLLM version"),
        metavar="VERSION",
        help="target vLLM release, e.g. 0.19.0 (default: the installed vllm distribution's, read from "
        "its metadata, else the newest the data describes)",
    )
    p.add_argument(
        "--interconnect",
        choices=INTERCONNECT_CLASSES,
        metavar="CLASS",
        help="how the TP ranks talk, for vLLM's communication buffers: "
        + ", ".join(INTERCONNECT_CLASSES)
        + " (default: the GPU catalogue's interconnect_class)",
    )
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cuda: a GPU; cpu: vLLM's CPU backend, KV from VLLM_CPU_KVCACHE_SPACE (default: cuda)",
    )
    p.add_argument(
        "--cpu-kvcache-gib",
        type=int_range(1, MAX_GPU_GIB, "a whole number of GiB"),
        metavar="GIB",
        help="VLLM_CPU_KVCACHE_SPACE for --device cpu, whole GiB as vLLM parses it (required there)",
    )
    p.add_argument(
        "--pin-kv-cache",
        action="store_true",
        help="add --kv-cache-memory-bytes with the plan's figure to the serve command (default: off)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object, a list with --inventory (default: text)")


def _add_verify_plan_options(p: argparse.ArgumentParser) -> None:
    _add_plan_options(p, inventory=False)


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


def build_request(a: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(Request, GPU or None, catalogue) from the plan options: the CLI's only wiring."""
    import os
    from pathlib import Path

    from planner import model_runner, releases
    from planner.api import load_model
    from planner.budget import Settings
    from planner.hardware import load_catalogue, with_memory
    from planner.plan import Request

    version = a.vllm_version
    if version is None:
        from planner.installed import default_release

        version, note = default_release(releases.supported_range())
        if note:  # the installed release, or why it is not used
            print(f"note: {note}", file=sys.stderr)
    rel = releases.get(version)
    settings = Settings(
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
    )
    _check_combination(a)
    catalogue = load_catalogue(Path(a.gpu_file) if a.gpu_file else None)
    gpu = None
    if a.device != "cpu" and not a.inventory:
        gpu = catalogue.get(a.gpu)
        if a.gpu_memory_gib is not None:
            gpu = with_memory(gpu, a.gpu_memory_gib)
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


def nodes_of(tp: int, pp: int, per_node: int) -> int:
    """Nodes one replica spans: whole TP groups per node, its PP stages over as many nodes as needed."""
    return -(-pp // max(1, per_node // tp))


def _gpu_line(b: Any, per_node: int | None) -> list[str]:
    """How many GPUs (and nodes) one replica takes, when that is more than one GPU."""
    gpus = b.tp * b.pp
    if gpus == 1 or per_node is None:
        return []
    nodes = nodes_of(b.tp, b.pp, per_node)
    where = f"on {nodes} nodes of {per_node} GPUs" if nodes > 1 else "in one node"
    return [f"one replica: {gpus} GPUs {where}"]


def _plan_text(r: Any, req: Any, per_node: int | None = None) -> str:
    b = r.budget
    est = lambda k: " (est.)" if k in b.estimated else ""  # noqa: E731
    where = f"{b.gpu} ({b.total_gib:.2f} GiB)" if r.gpu else "vLLM CPU backend"
    lines = [
        f"{b.model} on {where}, vLLM {b.vllm_version}, TP {b.tp} x PP {b.pp}: "
        + ("FITS" if b.fits else "DOES NOT FIT"),
        *_gpu_line(b, per_node),
        "",
    ]
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
    lines += [_table(rows, ["per GPU (binding stage)", "GiB"], colalign=("left", "right")), ""]
    lines += [
        f"KV: {b.kv_bytes_per_token:,} B/token/GPU, block {b.block_size}, {b.num_blocks:,} blocks, {b.kv_cache_tokens:,} tokens{est('kv_cache_tokens')}"
        + (
            f" (range {b.kv_cache_tokens_range[0]:,}-{b.kv_cache_tokens_range[1]:,}; first start {b.kv_cache_tokens_cold:,})"
            if "kv_cache_tokens" in b.estimated and b.kv_cache_tokens_range[0] != b.kv_cache_tokens_range[1]
            else ""
        ),
        f"max_model_len {b.max_model_len:,} | max_num_seqs {b.max_num_seqs:,} | max_num_batched_tokens {b.max_num_batched_tokens:,}"
        + ("" if r.gpu is None else f" | model runner {b.model_runner.upper()}"),
        f"maximum concurrency at {b.max_model_len:,} tokens: {b.max_concurrency:.2f}x{est('max_concurrency')}"
        + (
            f" (range {b.max_concurrency_range[0]:.2f}-{b.max_concurrency_range[1]:.2f}x)"
            if "max_concurrency" in b.estimated and b.max_concurrency_range[0] != b.max_concurrency_range[1]
            else ""
        ),
        f"largest context for one request: {b.max_model_len_fit:,}{est('max_model_len_fit')}",
    ]
    if b.concurrency:
        lines.append(
            f"largest context for {b.concurrency} concurrent requests: {b.max_model_len_fit_concurrency or 0:,}"
            f"{est('max_model_len_fit_concurrency')}"
        )
    lines.append(f"binding: {r.binding}")
    if b.error:
        lines += ["", f"vLLM would fail to start: {b.error}"]
    for rej in r.rejected:
        lines.append(f"not TP {rej.tp} x PP {rej.pp}: {rej.reason}")
    if r.fixes:
        lines += ["", "smallest changes that fit:"]
        for f, command in zip(r.fixes, r.fix_commands):
            fb = f.budget
            lines.append(
                f"  - {f.change}: TP {fb.tp} on {fb.gpu}, {fb.kv_cache_tokens:,} KV tokens, "
                f"{fb.max_concurrency:.2f}x at {fb.max_model_len:,}"
            )
            lines.append(f"    {command}")
    elif not b.fits:
        lines += [
            "",
            "no single change in the catalogue makes it fit: consider more GPUs (--inventory) or a smaller model",
        ]
    lines += [f"note: {n}" for n in b.notes]
    if b.estimated:
        lines.append("estimated (modelled, not measured): " + ", ".join(b.estimated))
    label = (
        "" if b.fits else f"the command as asked, which does NOT fit{' (the changes above fit)' if r.fixes else ''}:\n"
    )
    lines += ["", label + r.serve_command]
    return "\n".join(lines)


def _inventory_entry(
    req: Any, catalogue: Any, group: Any, tp: int, pp: int, rejected: list, placed: Any
) -> dict[str, Any]:
    """One `plan --inventory --json` entry: the plan's keys (budget, serve command, binding, fixes) for
    the chosen layout, or for the largest layout tried where none fits, plus the inventory's keys."""
    from planner.api import make_plan

    r = make_plan(req, group.gpu, catalogue, tp, pp)
    d = r.to_json()
    d.update(
        inventory=str(group),
        replicas=placed.replicas if placed else 0,
        gpus_used=placed.gpus_used if placed else 0,
        nodes_used=placed.nodes_used if placed else 0,
        cost_per_hour=placed.cost_per_hour if placed else None,
        rejected_layouts=[dataclasses.asdict(x) for x in rejected],
    )
    return d


def _inventory(a: argparse.Namespace, req: Any, catalogue: Any) -> int:
    from planner.hardware import parse_inventory
    from planner.plan import plan_inventory

    if a.tp or a.pp:
        raise PlannerError(
            "--inventory chooses TP and PP per GPU type: drop --tp/--pp, or plan one GPU type with --gpu"
        )
    groups = parse_inventory(a.inventory, catalogue)
    plans, misfits = plan_inventory(req, groups, a.objective or "gpus")
    if a.json:
        out = [_inventory_entry(req, catalogue, p.group, p.budget.tp, p.budget.pp, p.rejected, p) for p in plans]
        for g, rej in misfits:  # GPU types where no layout fits: the largest layout tried, with why and its fixes
            last = rej[-1] if rej else None
            out.append(_inventory_entry(req, catalogue, g, last.tp if last else 1, last.pp if last else 1, rej, None))
        print(json.dumps(out, indent=2))
    else:
        rows = [
            [
                str(p.group),
                f"TP {p.budget.tp} x PP {p.budget.pp}",
                p.replicas,
                p.gpus_used,
                p.nodes_used,
                f"{p.budget.kv_cache_tokens:,}",
                f"{p.budget.max_concurrency:.2f}x",
                "-" if p.cost_per_hour is None else f"${p.cost_per_hour:,.2f}",
            ]
            for p in plans
        ]
        print(
            _table(
                rows, ["inventory", "layout", "replicas", "GPUs", "nodes", "KV tokens/replica", "concurrency", "$/h"]
            )
        )
        for g, rej in misfits:
            print(
                f"{g}: no layout fits"
                + (f" (largest tried TP {rej[-1].tp} x PP {rej[-1].pp}: {rej[-1].reason})" if rej else "")
            )
        print(
            "estimated: KV memory, tokens and concurrency use the modelled activation, non-torch and CUDA-graph terms"
        )
    return 0 if plans else 1


def _add_sizing_options(p: argparse.ArgumentParser) -> None:
    """plan's SLO sizing flags (planner/perf/sizing_cli.py runs it; a plain plan never imports planner.perf)."""
    from planner.cliargs import positive_float

    p.add_argument(
        "--request-rate",
        type=positive_float("request rate (requests/s)"),
        metavar="RPS",
        help="size for this Poisson request rate, requests/s over all replicas: replicas, layout, GPUs, "
        "$/h per GPU type instead of the memory plan (default: none, the memory plan)",
    )
    p.add_argument(
        "--input-len",
        type=int_range(1, MAX_TOKENS, "a token count"),
        metavar="TOKENS",
        help="with --request-rate: prompt tokens per request (required there)",
    )
    p.add_argument(
        "--output-len",
        type=int_range(1, MAX_TOKENS, "a token count"),
        metavar="TOKENS",
        help="with --request-rate: output tokens per request (required there)",
    )
    p.add_argument(
        "--ttft-ms",
        type=positive_float("number of milliseconds"),
        metavar="MS",
        help="with --request-rate: mean time-to-first-token target, ms (default: none)",
    )
    p.add_argument(
        "--tpot-ms",
        type=positive_float("number of milliseconds"),
        metavar="MS",
        help="with --request-rate: mean time-per-output-token target, ms (default: none)",
    )


def _cmd_plan(a: argparse.Namespace) -> int:
    from planner.api import make_plan
    from planner.plan import DEFAULT_GPUS_PER_NODE

    if a.request_rate is not None:
        from planner.perf.sizing_cli import run

        return run(a, build_request)
    given = [f for f in ("input_len", "output_len", "ttft_ms", "tpot_ms") if getattr(a, f) is not None]
    if given:
        raise PlannerError(
            f"--{given[0].replace('_', '-')} applies to SLO sizing only: add --request-rate R, or drop it"
        )
    req, gpu, catalogue = build_request(a)
    if a.inventory:
        return _inventory(a, req, catalogue)
    result = make_plan(req, gpu, catalogue, a.tp, a.pp, pin_kv_cache=a.pin_kv_cache)
    per_node = (
        None if gpu is None else getattr(a, "gpus_per_node", None) or gpu.gpus_per_node_max or DEFAULT_GPUS_PER_NODE
    )
    print(json.dumps(result.to_json(), indent=2) if a.json else _plan_text(result, req, per_node))
    if a.emit:
        from planner.launch.cli import emit_all, launch_options

        for name, where in emit_all(result, req, a.emit, a.force, **launch_options(a)).items():
            print(f"{name}: {where}", file=sys.stderr)
    return 0 if result.budget.fits else 1


def _cmd_gpus(a: argparse.Namespace) -> int:
    from pathlib import Path

    from planner.hardware import GPU_TABLE_HEADERS, gpus_table, load_catalogue

    rows = gpus_table(load_catalogue(Path(a.gpu_file) if a.gpu_file else None))
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    from tabulate import tabulate

    print(
        tabulate(
            [{GPU_TABLE_HEADERS[k]: v for k, v in r.items()} for r in rows],
            headers="keys",
            missingval="-",
            disable_numparse=True,
        )
    )
    return 0


# ---- entry point ------------------------------------------------------------------------------

# Subcommands whose modules are heavy to import (server, load driver, deployment formats,
# training): the parser registers them fully only when they are the command being run, so that
# `inspect` and `plan` stay fast; for other commands (and `--help`) they are listed with a stub.
_HEAVY = {
    "emit": "write launch configs: serve, yaml, python, docker, compose, k8s, lws, helm, kserve",
    "verify": "start the real vLLM server with the plan, load it, report predicted vs observed",
    "train": "training and fine-tuning memory: full, LoRA, QLoRA",
    "perf": "throughput and latency (TTFT, TPOT/ITL, tokens/s) of a plan at a load, with ranges",
}


def _register_heavy(sub: Any, name: str) -> None:
    if name == "emit":
        from planner.launch.cli import register

        register(sub, _add_plan_options, build_request)
    elif name == "verify":
        from planner.verify.command import register

        register(sub, _add_verify_plan_options, build_request)
    elif name == "perf":
        from planner.perf.cli import register

        register(sub, _add_plan_options, build_request)
    else:
        from planner.training_cli import register

        register(sub)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `command`, the other heavy subcommands are stubs (see _HEAVY)."""
    from planner import __version__

    parser = _Parser(
        prog="vllm-planner",
        description="Capacity planning for serving LLMs with vLLM. Exit status: "
        "0 success (plan: it fits), 1 a plan that does not fit, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("inspect", help="parameters, weight bytes and KV bytes per token per GPU")
    _add_model_options(p)
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("models", help="list the bundled models")
    p.add_argument("--json", action="store_true", help="print a JSON list (default: a table)")
    p.set_defaults(func=_cmd_models)
    p = sub.add_parser("dtypes", help="the number formats: range, precision, bytes per parameter")
    p.add_argument("--json", action="store_true", help="print a JSON list, snake-case keys (default: a table)")
    p.set_defaults(func=_cmd_dtypes)
    p = sub.add_parser("plan", help="vLLM's per-GPU memory budget, KV tokens, concurrency and layout")
    _add_plan_options(p)
    p.add_argument(
        "--emit",
        metavar="DIR",
        type=word("a folder"),
        help="also write every launch format that can express the plan, plus plan.json, into DIR (default: none)",
    )
    if command in (None, "plan"):
        from planner.launch.cli import add_launch_options

        add_launch_options(p)
    _add_sizing_options(p)
    p.set_defaults(func=_cmd_plan)
    p = sub.add_parser("gpus", help="list the GPU catalogue")
    p.add_argument(
        "--gpu-file",
        type=word("a file path"),
        metavar="YAML",
        help="YAML file adding or overriding GPUs, same shape as profiles/gpus.yaml (default: none)",
    )
    p.add_argument(
        "--json", action="store_true", help="print a JSON list, snake-case keys with units (default: a table)"
    )
    p.set_defaults(func=_cmd_gpus)
    for name, text in _HEAVY.items():
        if command in (None, name):
            _register_heavy(sub, name)
        else:
            sub.add_parser(name, help=text)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def _run(argv: Sequence[str] | None) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser(_command_of(argv)).parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except PlannerError as exc:
        print(f"vllm-planner: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vllm-planner: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help and --version (argparse's errors are PlannerErrors, see _Parser)
        return exc.code if isinstance(exc.code, int) else 0


def _drop_stdout(stream: Any) -> None:
    """Point the process's stdout at /dev/null, so that Python's flush at exit does not fail again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass


def _write_out(stream: Any, text: str, code: int) -> int:
    """Write the command's output; the exit status survives a reader that stopped early."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:  # `| head`: the verdict (fits 0, misfit 1) still stands
        _drop_stdout(stream)
        return code
    except OSError as exc:  # `> /dev/full`, a closed stdout
        _drop_stdout(stream)
        print(
            f"vllm-planner: error: cannot write the output ({exc.strerror or exc}): "
            "check where stdout goes (a full disk?)",
            file=sys.stderr,
        )
        return 2
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 success (plan: it fits), 1 a plan that does not fit, 2 bad input or unwritable
    output. Internal errors are not caught: they are bugs, and a traceback shows where."""
    real, buffer = sys.stdout, io.StringIO()
    sys.stdout = buffer  # written at the end, so that a write error cannot hide the exit status
    try:
        code = _run(argv)
    finally:
        sys.stdout = real
    return _write_out(real, buffer.getvalue(), code)


if __name__ == "__main__":
    sys.exit(main())
