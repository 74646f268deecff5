"""Launch configuration from a plan: the `vllm serve` arguments (shell-quoted), valid for the
targeted release. Only flags that carry the plan or differ from vLLM's defaults are written.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from planner.budget import Budget, Settings
from planner.releases import ReleaseFacts


@dataclass(frozen=True)
class ServeConfig:
    """The settings a launch writes, each with why it has that value."""

    model: str
    args: tuple[tuple[str, str | None, str], ...]
    """(flag without dashes, value or None for a switch, reason)."""
    env: tuple[tuple[str, str], ...] = ()


def serve_config(model_ref: str, b: Budget, s: Settings, rel: ReleaseFacts, *, dtype: str | None = None,
                 quantization: str | None = None, pin_kv_cache_bytes: int | None = None, device: str = "cuda",
                 cpu_kvcache_gib: float | None = None) -> ServeConfig:
    args: list[tuple[str, str | None, str]] = []
    if b.tp > 1:
        args.append(("tensor-parallel-size", str(b.tp), "the smallest TP that fits" if s.tp == 1 else "chosen"))
    if b.pp > 1:
        args.append(("pipeline-parallel-size", str(b.pp), "layers split over stages"))
    args.append(("max-model-len", str(b.max_model_len), "planned context per request"))
    if device != "cpu":
        args.append(("gpu-memory-utilization", f"{b.gpu_memory_utilization:g}", "fraction of the GPU's memory vLLM may use"))
    if s.max_num_seqs:
        args.append(("max-num-seqs", str(b.max_num_seqs), "requests scheduled together"))
    if s.max_num_batched_tokens:
        args.append(("max-num-batched-tokens", str(b.max_num_batched_tokens), "tokens per scheduler step (the profile run's size)"))
    if s.kv_cache_dtype not in ("auto", None):
        args.append(("kv-cache-dtype", s.kv_cache_dtype, "KV bytes per token"))
    if quantization:
        args.append(("quantization", quantization, "weight format"))
    if dtype and dtype != "auto":
        args.append(("dtype", dtype, "weight and activation dtype"))
    if s.block_size:
        args.append(("block-size", str(s.block_size), "differs from the backend default"))
    if s.enforce_eager:
        args.append(("enforce-eager", None, "no CUDA graphs: no graph memory"))
    if pin_kv_cache_bytes is not None and rel.kv_cache_memory_bytes_flag:
        args.append(("kv-cache-memory-bytes", str(pin_kv_cache_bytes), "KV pool pinned to the plan's figure"))
    env: list[tuple[str, str]] = []
    if device == "cpu" and cpu_kvcache_gib is not None:
        env.append(("VLLM_CPU_KVCACHE_SPACE", f"{cpu_kvcache_gib:g}"))
    return ServeConfig(model_ref, tuple(args), tuple(env))


def serve_argv(cfg: ServeConfig) -> list[str]:
    """`vllm serve` arguments after the program name (no shell involved)."""
    out = ["serve", cfg.model]
    for flag, value, _ in cfg.args:
        out.append(f"--{flag}")
        if value is not None:
            out.append(value)
    return out


def serve_command(cfg: ServeConfig) -> str:
    """The command line to paste into a shell; every value is quoted."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cfg.env)
    cmd = shlex.join(["vllm", *serve_argv(cfg)])
    return f"{env} {cmd}" if env else cmd
