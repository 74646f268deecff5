"""The options several subcommands share: the model, its number formats, the layout, the GPU and
the whole set of plan options (plan, emit, perf and verify take them)."""

from __future__ import annotations

import argparse
from typing import Any

from planner.cli.args import finite_float, fraction, human_int, int_range, positive_float, word
from planner.cli.fieldhelp import REQUEST, SETTINGS, TARGET, field_help
from planner.hardware import MAX_MEMORY_GIB  # 64 TiB, of a GPU, a CPU KV pool or a host

MODEL_HELP = "bundled id or alias (see `vllm-planner models`), a config.json / checkpoint folder, or a Hugging Face id"
MAX_PARALLEL = 4096
# Sanity bounds on the number flags (far above any real deployment): a typo must not become a
# plan with 10**308 tokens or a search over 100,000,000 GPUs.
MAX_TOKENS = 2**31 - 1  # vLLM indexes positions with int32
MAX_SEQS = 2**20
MAX_KV_POOL_BYTES = 2**50  # 1 PiB per GPU
_gpu_count = int_range(1, MAX_PARALLEL, "a GPU count")
_tokens = human_int(1, MAX_TOKENS)
_seqs = int_range(1, MAX_SEQS, "a request count")


def add_format_options(p: argparse.ArgumentParser, kv_default: str | None) -> None:
    """The number formats, shared by inspect and plan."""
    p.add_argument(
        "--dtype",
        type=word("a dtype"),
        help=field_help(REQUEST, "dtype", "default: auto, the checkpoint's; float32 checkpoints run in bfloat16"),
    )
    p.add_argument(
        "--quantization",
        "-q",
        type=word("a quantization method"),
        help=field_help(REQUEST, "quantization", "default: the checkpoint's scheme, else none"),
    )
    p.add_argument(
        "--kv-cache-dtype",
        type=word("a KV-cache dtype"),
        default=kv_default,
        help=field_help(SETTINGS, "kv_cache_dtype", "default: auto, the model dtype or the checkpoint's KV scheme"),
    )


def add_parallel_options(p: argparse.ArgumentParser, default: int | None) -> None:
    """--tp/--pp with vLLM's own spellings, which the planner's serve commands print."""
    when = "1" if default else "the smallest that fits"
    p.add_argument(
        "--tp",
        "--tensor-parallel-size",
        "-tp",
        dest="tp",
        type=_gpu_count,
        default=default,
        help=field_help(SETTINGS, "tp", f"default: {when}"),
    )
    pp_when = "1" if default else "1, more when TP fills a node"
    p.add_argument(
        "--pp",
        "--pipeline-parallel-size",
        "-pp",
        dest="pp",
        type=_gpu_count,
        default=default,
        help=field_help(SETTINGS, "pp", f"default: {pp_when}"),
    )


def add_model_options(p: argparse.ArgumentParser) -> None:
    """inspect's options: the model, its formats and a layout."""
    p.add_argument("model", help=MODEL_HELP)
    add_format_options(p, None)
    add_parallel_options(p, 1)
    p.add_argument("--json", action="store_true", help="print one JSON object (default: a table)")


def add_gpu_options(p: argparse.ArgumentParser, when: str) -> None:
    """--gpu, --gpu-memory-gib and --gpu-file: the GPU as plan and train take it (`gpu_from_args` reads them);
    `when` says when --gpu is needed, or its default."""
    p.add_argument("--gpu", type=word("a GPU name"), help=f"GPU type from `vllm-planner gpus`, name or alias ({when})")
    p.add_argument(
        "--gpu-memory-gib",
        type=finite_float(0.001, MAX_MEMORY_GIB, "number of GiB"),
        metavar="GIB",
        help=field_help(TARGET, "memory_bytes", "default: the catalogue's", ", in GiB"),
    )
    add_gpu_file_option(p)


def add_gpu_file_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpu-file",
        type=word("a file path"),
        metavar="YAML",
        help="YAML file adding or overriding GPUs, same shape as profiles/gpus.yaml (default: none)",
    )


def catalogue_from_args(a: argparse.Namespace) -> Any:
    """The GPU catalogue, with --gpu-file's GPUs added or overriding."""
    from pathlib import Path

    from planner.hardware import load_catalogue

    return load_catalogue(Path(a.gpu_file) if a.gpu_file else None)


def gpu_from_args(a: argparse.Namespace, catalogue: Any = None) -> Any:
    """The GPU --gpu names (from `catalogue`, else the one --gpu-file makes), its memory replaced by
    --gpu-memory-gib; None without --gpu, where --gpu-memory-gib and --gpu-file are errors."""
    from planner.errors import PlannerError
    from planner.hardware import with_memory

    if a.gpu is None:
        if a.gpu_memory_gib is not None or a.gpu_file:
            raise PlannerError(
                "--gpu-memory-gib and --gpu-file need --gpu: name the GPU type (see `vllm-planner gpus`)"
            )
        return None
    gpu = (catalogue or catalogue_from_args(a)).get(a.gpu)
    return with_memory(gpu, a.gpu_memory_gib) if a.gpu_memory_gib is not None else gpu


def _max_model_len(text: str) -> int | str:
    if text.lower() in ("auto", "-1"):
        return "auto"
    return _tokens(text)


def _add_where(p: argparse.ArgumentParser, inventory: bool) -> None:
    """The model and where it runs: one GPU type, or an inventory to choose from."""
    p.add_argument("model", help=MODEL_HELP)
    add_gpu_options(p, "required unless --inventory or --device cpu")
    if not inventory:
        p.set_defaults(inventory=None, objective="gpus")
        return
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


def _add_scheduler_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-model-len",
        "--context",
        dest="max_model_len",
        type=_max_model_len,
        metavar="TOKENS",
        help=field_help(SETTINGS, "max_model_len", "default: the model's limit", " (8192, 32k = 32,000, 32K = 32,768)"),
    )
    p.add_argument(
        "--max-num-seqs",
        type=_seqs,
        metavar="N",
        help=field_help(SETTINGS, "max_num_seqs", "default: the release's default for the GPU"),
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=_tokens,
        metavar="TOKENS",
        help=field_help(SETTINGS, "max_num_batched_tokens", "default: the release's default for the GPU"),
    )
    p.add_argument(
        "--gpu-memory-utilization",
        type=fraction,
        metavar="FRACTION",
        help=field_help(SETTINGS, "gpu_memory_utilization", "default: the release's, 0.9"),
    )


def _add_memory_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--enforce-eager", action="store_true", help=field_help(SETTINGS, "enforce_eager", "default: off"))
    p.add_argument(
        "--kv-cache-memory-bytes",
        type=human_int(1, MAX_KV_POOL_BYTES, "a byte count"),
        metavar="BYTES",
        help=field_help(
            SETTINGS, "kv_cache_memory_bytes", "default: sized from --gpu-memory-utilization", " (8G = 8 GiB)"
        ),
    )
    p.add_argument(
        "--block-size",
        type=int_range(1, 2**16, "a block size"),
        metavar="TOKENS",
        help=field_help(SETTINGS, "block_size", "default: the attention backend's, 16 for most models"),
    )


def _add_deployment_options(p: argparse.ArgumentParser) -> None:
    from planner.hardware import INTERCONNECT_CLASSES

    p.add_argument(
        "--concurrency",
        type=_seqs,
        metavar="N",
        help=field_help(REQUEST, "concurrency", "default: none, one request"),
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
        help=field_help(
            TARGET,
            "interconnect",
            "default: the GPU catalogue's interconnect_class",
            ": " + ", ".join(INTERCONNECT_CLASSES),
        ),
    )


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help=field_help(TARGET, "device", "default: cuda"),
    )
    p.add_argument(
        "--cpu-kvcache-gib",
        type=int_range(1, MAX_MEMORY_GIB, "a whole number of GiB"),
        metavar="GIB",
        help=field_help(
            TARGET, "cpu_kvcache_bytes", "required there", " for --device cpu, in whole GiB as vLLM parses it"
        ),
    )
    p.add_argument(
        "--pin-kv-cache",
        action="store_true",
        help="add --kv-cache-memory-bytes with the plan's figure to the serve command (default: off)",
    )
    p.add_argument(
        "--overheads",
        metavar="FILE",
        help="a calibration overlay from `vllm-planner calibrate` (default: the one in your config folder, if any)",
    )


def add_plan_options(p: argparse.ArgumentParser, inventory: bool = True) -> None:
    """The options of plan, emit, perf and verify; `inventory=False` (verify checks one deployment) leaves
    out --inventory and --objective."""
    _add_where(p, inventory)
    add_parallel_options(p, None)
    _add_scheduler_options(p)
    add_format_options(p, "auto")
    _add_memory_options(p)
    _add_deployment_options(p)
    _add_device_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object, a list with --inventory (default: text)")


def add_sizing_options(p: argparse.ArgumentParser) -> None:
    """plan's SLO sizing flags (planner/cli/sizing.py runs it; a plain plan never imports planner.perf)."""
    p.add_argument(
        "--request-rate",
        type=positive_float("request rate (requests/s)"),
        metavar="RPS",
        help="size for this Poisson request rate, requests/s over all replicas: replicas, layout, GPUs, "
        "$/h per GPU type instead of the memory plan (default: none, the memory plan)",
    )
    for flag, what in (("--input-len", "prompt"), ("--output-len", "output")):
        p.add_argument(
            flag,
            type=int_range(1, MAX_TOKENS, "a token count"),
            metavar="TOKENS",
            help=f"with --request-rate: {what} tokens per request (required there)",
        )
    for flag, what in (("--ttft-ms", "time-to-first-token"), ("--tpot-ms", "time-per-output-token")):
        p.add_argument(
            flag,
            type=positive_float("number of milliseconds"),
            metavar="MS",
            help=f"with --request-rate: mean {what} target, ms (default: none)",
        )
