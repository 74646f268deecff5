"""`vllm-planner inspect`, `models`, `dtypes` and `gpus`: what the planner knows, as tables or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from planner.cli.fmt import fmt_gib as _gib
from planner.cli.fmt import fmt_int as _fmt_int
from planner.cli.fmt import table as _table
from planner.cli.options import add_gpu_file_option, add_model_options, catalogue_from_args


def register_inspect(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.set_defaults(func=_cmd_inspect)


def register_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list (default: a table)")
    p.set_defaults(func=_cmd_models)


def register_dtypes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list, snake-case keys (default: a table)")
    p.set_defaults(func=_cmd_dtypes)


def register_gpus(p: argparse.ArgumentParser) -> None:
    add_gpu_file_option(p)
    p.add_argument(
        "--json", action="store_true", help="print a JSON list, snake-case keys with units (default: a table)"
    )
    p.set_defaults(func=_cmd_gpus)


def _inspect_text(r: Any) -> str:
    est = set(r.estimated)
    mark = lambda key: " (estimated)" if key in est else ""  # noqa: E731
    head = [
        f"{r.model}  [{r.source}, {r.architecture}, tensors from {r.tensor_source}]",
        f"dtype {r.dtype} | quantization {r.quantization or 'none'} | KV cache {r.kv_cache_dtype} | "
        f"TP {r.tp} x PP {r.pp}",
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


def _cmd_gpus(a: argparse.Namespace) -> int:
    from planner.hardware import GPU_TABLE_HEADERS, gpus_table

    rows = gpus_table(catalogue_from_args(a))
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
