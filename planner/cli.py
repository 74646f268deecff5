"""`vllm-planner`: the command line, a thin layer over the Python API.

Exit status: 0 success (for `plan`: it fits), 1 a plan that does not fit, 2 bad input.
Bad input is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable, NoReturn, Sequence

from planner.cliargs import int_range
from planner.errors import PlannerError

GIB = 2**30


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its default prints the whole usage first)."""

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

def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="bundled id or alias, a config.json / checkpoint folder, or a Hugging Face id")
    p.add_argument("--dtype", help="weight dtype as vLLM's --dtype (auto, bfloat16, float16, float32)")
    p.add_argument("--quantization", "-q", help="vLLM's --quantization (fp8 online, or the checkpoint's scheme)")
    p.add_argument("--kv-cache-dtype", help="auto, bfloat16, float16, fp8, fp8_e4m3, fp8_e5m2")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel size")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _inspect_text(r: Any) -> str:
    est = set(r.estimated)
    mark = lambda key: " (estimated)" if key in est else ""  # noqa: E731
    head = [
        f"{r.model}  [{r.source}, {r.architecture}, tensors from {r.tensor_source}]",
        f"dtype {r.dtype} | quantization {r.quantization or 'none'} | KV cache {r.kv_cache_dtype} | TP {r.tp} x PP {r.pp}",
        "",
    ]
    total = r.params_total or 1
    rows = [[k, _fmt_int(v), f"{100 * v / total:.1f}%"] for k, v in sorted(r.params_breakdown.items(), key=lambda kv: -kv[1])]
    rows.append(["total (loaded by vLLM)", _fmt_int(r.params_total), ""])
    if r.params_active != r.params_total:
        rows.append(["active per token", _fmt_int(r.params_active), ""])
    for k, v in r.params_not_loaded.items():
        rows.append([f"not loaded: {k}", _fmt_int(v), ""])
    rows.append(["checkpoint total", _fmt_int(r.params_checkpoint), ""])
    if r.params_published is not None:
        same = "matches" if r.params_published == r.params_checkpoint else f"differs by {r.params_checkpoint - r.params_published:+,}"
        rows.append(["published", _fmt_int(r.params_published), same])
    out = head + [_table(rows, ["parameters", "count", "share"], colalign=("left", "right", "right")), ""]
    wrows = [[k, _gib(v), _fmt_int(v)] for k, v in sorted(r.weight_breakdown_per_gpu.items(), key=lambda kv: -kv[1])]
    wrows.append([f"weights per GPU{mark('weight_bytes_per_gpu')}", _gib(r.weight_bytes_per_gpu), _fmt_int(r.weight_bytes_per_gpu)])
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
    print(_table([[r["id"], r["architecture"], _fmt_int(r["params_total"]), _fmt_int(r["max_model_len"]),
                   ", ".join(r["aliases"])] for r in rows],
                 ["model", "architecture", "parameters", "context", "aliases"], colalign=("left", "left", "right", "right", "left")))
    return 0


def _cmd_dtypes(a: argparse.Namespace) -> int:
    from planner.dtypes import formats_table

    rows = formats_table()
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    g = lambda x: "-" if x is None else f"{x:g}"  # noqa: E731
    print(_table([[r["format"], r["bits"], g(r["exponent bits"]), g(r["mantissa bits"]), g(r["largest value"]),
                   g(r["smallest normal"]), g(r["decimal digits"]), g(r["bytes per parameter"]), r["note"]] for r in rows],
                 ["format", "bits", "exp", "mant", "largest", "smallest normal", "digits", "bytes/param", "note"]))
    return 0


# ---- plan -------------------------------------------------------------------------------------

_positive_int = int_range(1)


def _max_model_len(text: str) -> int | str:
    if text.lower() in ("auto", "-1"):
        return "auto"
    return _human_int(text)


def _human_int(text: str) -> int:
    """vLLM's human-readable ints: 1k = 1000, 1K = 1024, also m/M, g/G."""
    units = {"k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}
    t = text.strip()
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer such as 8192 or 32k, got {text!r}") from None


def _add_plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="bundled id or alias, a config.json / checkpoint folder, or a Hugging Face id")
    p.add_argument("--gpu", help="GPU type from `vllm-planner gpus` (name or alias)")
    p.add_argument("--inventory", help="plan over an inventory: NODESxGPUSxTYPE[,...], e.g. 2x8xH100,4x1xL4")
    p.add_argument("--objective", choices=("gpus", "cost"), default="gpus", help="ranking for --inventory")
    p.add_argument("--tp", type=_positive_int, help="tensor-parallel size (default: the smallest that fits)")
    p.add_argument("--pp", type=_positive_int, help="pipeline-parallel size")
    p.add_argument("--max-model-len", "--context", dest="max_model_len", type=_max_model_len,
                   help="context per request (tokens, or 'auto' to fit the memory); default: the model's limit")
    p.add_argument("--max-num-seqs", type=_positive_int)
    p.add_argument("--max-num-batched-tokens", type=_human_int)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--kv-cache-dtype", default="auto")
    p.add_argument("--quantization", "-q")
    p.add_argument("--dtype")
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--kv-cache-memory-bytes", type=_human_int, help="pin the KV pool per GPU (skips the measured terms, as vLLM does)")
    p.add_argument("--block-size", type=_positive_int)
    p.add_argument("--gpu-memory-gib", type=float, help="override the GPU's total memory (GiB, as torch reports it)")
    p.add_argument("--gpu-file", help="YAML file adding or overriding GPUs (same shape as profiles/gpus.yaml)")
    p.add_argument("--concurrency", type=_positive_int, help="requests that must fit at once at the context length")
    p.add_argument("--vllm-version", help="target vLLM release (default: the newest the data describes)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: vLLM's CPU backend (KV from VLLM_CPU_KVCACHE_SPACE)")
    p.add_argument("--cpu-kvcache-gib", type=_positive_int, help="VLLM_CPU_KVCACHE_SPACE for --device cpu (whole GiB, as vLLM parses it)")
    p.add_argument("--pin-kv-cache", action="store_true", help="add --kv-cache-memory-bytes with the plan's figure to the serve command")
    p.add_argument("--json", action="store_true", help="print one JSON object (a list with --inventory)")


def build_request(a: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(Request, GPU or None, catalogue) from the plan options: the CLI's only wiring."""
    import os
    from pathlib import Path

    from planner import model_runner, releases
    from planner.api import load_model
    from planner.budget import Settings
    from planner.hardware import load_catalogue, with_memory
    from planner.plan import Request

    rel = releases.get(a.vllm_version)
    settings = Settings(
        tp=a.tp or 1, pp=a.pp or 1, max_model_len=a.max_model_len, max_num_seqs=a.max_num_seqs,
        max_num_batched_tokens=a.max_num_batched_tokens, gpu_memory_utilization=a.gpu_memory_utilization,
        kv_cache_dtype=a.kv_cache_dtype.lower(), enforce_eager=a.enforce_eager,
        kv_cache_memory_bytes=a.kv_cache_memory_bytes, block_size=a.block_size,
        allow_long_max_model_len=os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") == "1",
        model_runner=model_runner.from_env(os.environ.get("VLLM_USE_V2_MODEL_RUNNER")),
    )
    catalogue = load_catalogue(Path(a.gpu_file) if a.gpu_file else None)
    gpu = None
    if a.device == "cpu":
        if a.cpu_kvcache_gib is None or a.cpu_kvcache_gib <= 0:
            raise PlannerError("--device cpu needs --cpu-kvcache-gib (VLLM_CPU_KVCACHE_SPACE, in GiB, above 0)")
    elif not a.inventory:
        if not a.gpu:
            raise PlannerError("name a GPU with --gpu (see `vllm-planner gpus`) or an inventory with --inventory")
        gpu = catalogue.get(a.gpu)
        if a.gpu_memory_gib is not None:
            gpu = with_memory(gpu, a.gpu_memory_gib)
    cpu_bytes = int(a.cpu_kvcache_gib * GIB) if a.cpu_kvcache_gib else None
    req = Request(load_model(a.model), settings, rel, dtype=a.dtype, quantization=a.quantization,
                  concurrency=a.concurrency, device=a.device, cpu_kvcache_bytes=cpu_bytes)
    return req, gpu, catalogue


def _plan_text(r: Any) -> str:
    b = r.budget
    est = lambda k: " (est.)" if k in b.estimated else ""  # noqa: E731
    where = f"{b.gpu} ({b.total_gib:.2f} GiB)" if r.gpu else "vLLM CPU backend"
    lines = [f"{b.model} on {where}, vLLM {b.vllm_version}, TP {b.tp} x PP {b.pp}: "
             + ("FITS" if b.fits else "DOES NOT FIT"), ""]
    rows = [["requested (total x %.2f)" % b.gpu_memory_utilization, f"{b.requested_gib:.2f}"],
            ["weights" + est("weights_gib"), f"{b.weights_gib:.2f}"],
            ["activation peak" + est("activation_gib"), f"{b.activation_gib:.2f}"],
            ["non-torch" + est("non_torch_gib"), f"{b.non_torch_gib:.2f}"],
            ["CUDA graphs" + est("cudagraph_gib"), f"{b.cudagraph_gib:.2f}"]]
    if b.runner_buffers_gib:
        rows.append(["V2 runner sampler buffers", f"{b.runner_buffers_gib:.2f}"])
    rows.append(["KV cache" + est("kv_cache_gib"), f"{b.kv_cache_gib:.2f}"])
    lines += [_table(rows, ["per GPU (binding stage)", "GiB"], colalign=("left", "right")), ""]
    lines += [
        f"KV: {b.kv_bytes_per_token:,} B/token/GPU, block {b.block_size}, {b.num_blocks:,} blocks, {b.kv_cache_tokens:,} tokens{est('kv_cache_tokens')}",
        f"max_model_len {b.max_model_len:,} | max_num_seqs {b.max_num_seqs:,} | max_num_batched_tokens {b.max_num_batched_tokens:,}"
        + ("" if r.gpu is None else f" | model runner {b.model_runner.upper()}"),
        f"maximum concurrency at {b.max_model_len:,} tokens: {b.max_concurrency:.2f}x{est('max_concurrency')}",
        f"largest context for one request: {b.max_model_len_fit:,}{est('max_model_len_fit')}",
    ]
    if b.concurrency:
        lines.append(f"largest context for {b.concurrency} concurrent requests: {b.max_model_len_fit_concurrency or 0:,}"
                     f"{est('max_model_len_fit_concurrency')}")
    lines.append(f"binding: {r.binding}")
    if b.error:
        lines += ["", f"vLLM would fail to start: {b.error}"]
    for rej in r.rejected:
        lines.append(f"not TP {rej.tp} x PP {rej.pp}: {rej.reason}")
    if r.fixes:
        lines += ["", "smallest changes that fit:"]
        for f in r.fixes:
            fb = f.budget
            lines.append(f"  - {f.change}: TP {fb.tp} on {fb.gpu}, {fb.kv_cache_tokens:,} KV tokens, "
                         f"{fb.max_concurrency:.2f}x at {fb.max_model_len:,}")
    elif not b.fits:
        lines += ["", "no single change in the catalogue makes it fit: consider more GPUs (--inventory) or a smaller model"]
    lines += [f"note: {n}" for n in b.notes]
    if b.estimated:
        lines.append("estimated (modelled, not measured): " + ", ".join(b.estimated))
    lines += ["", r.serve_command]
    return "\n".join(lines)


def _inventory(a: argparse.Namespace, req: Any, catalogue: Any) -> int:
    from planner.hardware import parse_inventory
    from planner.plan import plan_inventory

    if a.tp or a.pp:
        raise PlannerError("--inventory chooses TP and PP per GPU type: drop --tp/--pp, or plan one GPU type with --gpu")
    groups = parse_inventory(a.inventory, catalogue)
    plans, misfits = plan_inventory(req, groups, a.objective)
    if a.json:
        out = []
        for p in plans:
            d = p.budget.to_json()
            d.update(inventory=str(p.group), replicas=p.replicas, gpus_used=p.gpus_used, nodes_used=p.nodes_used,
                     cost_per_hour=p.cost_per_hour, rejected_layouts=[dataclasses.asdict(r) for r in p.rejected])
            out.append(d)
        for g, rej in misfits:  # GPU types where no layout fits are listed too, with why
            out.append({"inventory": str(g), "gpu": g.gpu.name, "fits": False, "replicas": 0, "gpus_used": 0,
                        "nodes_used": 0, "cost_per_hour": None, "rejected_layouts": [dataclasses.asdict(r) for r in rej],
                        "error": rej[-1].reason if rej else "no layout fits this node size"})
        print(json.dumps(out, indent=2))
    else:
        rows = [[str(p.group), f"TP {p.budget.tp} x PP {p.budget.pp}", p.replicas, p.gpus_used, p.nodes_used,
                 f"{p.budget.kv_cache_tokens:,}", f"{p.budget.max_concurrency:.2f}x",
                 "-" if p.cost_per_hour is None else f"${p.cost_per_hour:,.2f}"] for p in plans]
        print(_table(rows, ["inventory", "layout", "replicas", "GPUs", "nodes", "KV tokens/replica", "concurrency", "$/h"]))
        for g, rej in misfits:
            print(f"{g}: no layout fits" + (f" (largest tried TP {rej[-1].tp} x PP {rej[-1].pp}: {rej[-1].reason})" if rej else ""))
        print("estimated: KV memory, tokens and concurrency use the modelled activation, non-torch and CUDA-graph terms")
    return 0 if plans else 1


def _cmd_plan(a: argparse.Namespace) -> int:
    from planner.api import make_plan

    req, gpu, catalogue = build_request(a)
    if a.inventory:
        return _inventory(a, req, catalogue)
    result = make_plan(req, gpu, catalogue, a.tp, a.pp, pin_kv_cache=a.pin_kv_cache)
    print(json.dumps(result.to_json(), indent=2) if a.json else _plan_text(result))
    if a.emit:
        from planner.launch.cli import emit_all, launch_options

        for name, where in emit_all(result, req, a.emit, a.force, **launch_options(a)).items():
            print(f"{name}: {where}", file=sys.stderr)
    return 0 if result.budget.fits else 1


def _cmd_gpus(a: argparse.Namespace) -> int:
    from pathlib import Path

    from planner.hardware import gpus_table, load_catalogue

    rows = gpus_table(load_catalogue(Path(a.gpu_file) if a.gpu_file else None))
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    from tabulate import tabulate

    print(tabulate(rows, headers="keys", missingval="-", disable_numparse=True))
    return 0


# ---- entry point ------------------------------------------------------------------------------

# Subcommands whose modules are heavy to import (server, load driver, deployment formats,
# training): the parser registers them fully only when they are the command being run, so that
# `inspect` and `plan` stay fast; for other commands (and `--help`) they are listed with a stub.
_HEAVY = {
    "emit": "write launch configs: serve, yaml, python, docker, compose, k8s, lws, helm, kserve",
    "verify": "start the real vLLM server with the plan, load it, report predicted vs observed",
    "train": "training and fine-tuning memory: full, LoRA, QLoRA",
}


def _register_heavy(sub: Any, name: str) -> None:
    if name == "emit":
        from planner.launch.cli import register

        register(sub, _add_plan_options, build_request)
    elif name == "verify":
        from planner.verify.command import register

        register(sub, _add_plan_options, build_request)
    else:
        from planner.training_cli import register

        register(sub)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `command`, the other heavy subcommands are stubs (see _HEAVY)."""
    parser = _Parser(prog="vllm-planner", description="Capacity planning for serving LLMs with vLLM.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("inspect", help="parameters, weight bytes and KV bytes per token per GPU")
    _add_model_options(p)
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("models", help="list the bundled models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)
    p = sub.add_parser("dtypes", help="the number formats: range, precision, bytes per parameter")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_dtypes)
    p = sub.add_parser("plan", help="vLLM's per-GPU memory budget, KV tokens, concurrency and layout")
    _add_plan_options(p)
    p.add_argument("--emit", metavar="DIR", help="also write every launch format that can express the plan, plus plan.json, into DIR")
    if command in (None, "plan"):
        from planner.launch.cli import add_launch_options

        add_launch_options(p)
    p.set_defaults(func=_cmd_plan)
    p = sub.add_parser("gpus", help="list the GPU catalogue")
    p.add_argument("--gpu-file", help="YAML file adding or overriding GPUs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_gpus)
    for name, text in _HEAVY.items():
        if command in (None, name):
            _register_heavy(sub, name)
        else:
            sub.add_parser(name, help=text)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
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
    except BrokenPipeError:
        return 0
    except (ValueError, TypeError, KeyError, AttributeError, ZeroDivisionError, IndexError) as exc:
        # Backstop: an input the validation above missed must still not end in a traceback.
        print(f"vllm-planner: error: cannot use this input ({exc.__class__.__name__}: {exc}); "
              "check the config.json or the options, and report it if they look valid", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
