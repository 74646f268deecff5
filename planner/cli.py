"""`vllm-planner`: the command line, a thin layer over the Python API.

Exit status: 0 success (for `plan`: it fits), 1 a plan that does not fit, 2 bad input.
Bad input is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, NoReturn, Sequence

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


# ---- entry point ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
