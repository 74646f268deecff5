"""The `vllm serve` settings of a plan, each with why it has its value, and their three spellings:
the command line (shell-quoted), the `vllm serve --config` YAML and the `LLM(...)` keyword arguments.
Only flags that exist in the targeted release are written.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from planner.budget import Budget, Settings
from planner.errors import PlannerError
from planner.launch.escape import comment, yaml_quoted
from planner.releases import ReleaseFacts
from planner.units import GIB

# A number YAML and Python read back as the same number: no leading zeros (YAML 1.1 reads 0123 as 83).
_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?")

Arg = tuple[str, "str | None", str]
"""(flag without dashes, value or None for a switch, reason)."""


@dataclass(frozen=True)
class ServeConfig:
    """The settings a launch writes, each with why it has that value."""

    model: str
    args: tuple[tuple[str, str | None, str], ...]
    """(flag without dashes, value or None for a switch, reason)."""
    env: tuple[tuple[str, str], ...] = ()

    def with_args(self, extra: list[Arg]) -> "ServeConfig":
        return ServeConfig(self.model, self.args + tuple(extra), self.env)

    def value(self, flag: str) -> str | None:
        return next((v for f, v, _ in self.args if f == flag), None)


def _parallel(b: Budget, s: Settings, expert_parallel: bool) -> list[Arg]:
    out: list[Arg] = []
    if b.tp > 1:
        why = "chosen" if s.tp > 1 else "the smallest tensor-parallel size whose weights and KV cache fit"
        out.append(("tensor-parallel-size", str(b.tp), f"{why}: {b.weights_gib:g} GiB of weights per GPU"))
    if b.pp > 1:
        out.append(("pipeline-parallel-size", str(b.pp), "layers split over stages, one TP group each"))
    if expert_parallel:
        out.append(("enable-expert-parallel", None, f"MoE: whole experts spread over the {b.tp} GPUs of the TP group"))
    return out


def _batch(b: Budget, s: Settings, device: str) -> list[Arg]:
    fit = f"KV cache holds {b.kv_cache_tokens:,} tokens, {b.max_concurrency:g} such requests at once"
    why = {None: "the model's full context", "auto": "auto-fit: the longest context the KV cache holds"}.get(
        s.max_model_len, "chosen context per request"
    )  # type: ignore[arg-type]
    out: list[Arg] = [("max-model-len", str(b.max_model_len), f"{why}; {fit}")]
    if device != "cpu":
        out.append(
            (
                "gpu-memory-utilization",
                f"{b.gpu_memory_utilization:g}",
                f"{b.requested_gib:g} of {b.total_gib:g} GiB per GPU for vLLM"
                + ("" if s.gpu_memory_utilization else " (the release's default)"),
            )
        )
    why = "chosen" if s.max_num_seqs else "the release's default for this GPU, pinned"
    out.append(("max-num-seqs", str(b.max_num_seqs), f"requests scheduled together ({why})"))
    why = "chosen" if s.max_num_batched_tokens else "the release's default for this GPU, pinned"
    out.append(
        (
            "max-num-batched-tokens",
            str(b.max_num_batched_tokens),
            f"tokens per scheduler step, the size of the profile run the plan assumes ({why})",
        )
    )
    return out


def _formats(b: Budget, s: Settings, dtype: str | None, quantization: str | None) -> list[Arg]:
    out: list[Arg] = []
    if s.kv_cache_dtype not in ("auto", None):
        out.append(("kv-cache-dtype", s.kv_cache_dtype, f"{b.kv_bytes_per_token:,} KV bytes per token per GPU"))
    if quantization:
        out.append(("quantization", quantization, "weight format"))
    if dtype and dtype != "auto":
        out.append(("dtype", dtype, "weight and activation dtype"))
    if s.block_size:
        out.append(("block-size", str(s.block_size), "differs from the attention backend's default"))
    if s.enforce_eager:
        out.append(("enforce-eager", None, "no CUDA graphs: no graph memory"))
    return out


def serve_config(
    model_ref: str,
    b: Budget,
    s: Settings,
    rel: ReleaseFacts,
    *,
    dtype: str | None = None,
    quantization: str | None = None,
    pin_kv_cache_bytes: int | None = None,
    device: str = "cuda",
    cpu_kvcache_gib: float | None = None,
    expert_parallel: bool = False,
) -> ServeConfig:
    """The flags that carry the plan, valid for `rel`. `pin_kv_cache_bytes` adds
    `--kv-cache-memory-bytes` so the real KV pool equals the plan's figure (0.10.2+)."""
    args = _parallel(b, s, expert_parallel) + _batch(b, s, device) + _formats(b, s, dtype, quantization)
    kv_bytes = pin_kv_cache_bytes if pin_kv_cache_bytes is not None else s.kv_cache_memory_bytes
    if kv_bytes is not None and rel.kv_cache_memory_bytes_flag:
        why = (
            "KV pool pinned to the plan's figure: vLLM skips its own profiling, so the server's KV cache "
            "matches the plan exactly"
            if pin_kv_cache_bytes is not None
            else "KV pool fixed by the plan's input"
        )
        args.append(("kv-cache-memory-bytes", str(kv_bytes), why))
    env: list[tuple[str, str]] = []
    if device == "cpu" and cpu_kvcache_gib is not None:
        env.append(("VLLM_CPU_KVCACHE_SPACE", f"{cpu_kvcache_gib:g}"))
    if s.allow_long_max_model_len and isinstance(s.max_model_len, int):  # the plan accepted a context above the limit
        env.append(("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1"))
    if s.model_runner is not None:  # the plan's activation and CUDA-graph terms assume this runner
        env.append(("VLLM_USE_V2_MODEL_RUNNER", "1" if s.model_runner == "v2" else "0"))
    return ServeConfig(model_ref, tuple(args), tuple(env))


def expert_parallel_for(model: Any, b: Budget, asked: bool | None = None, counted: bool = False) -> bool:
    """--enable-expert-parallel: on by default when a MoE replica has TP > 1 and whole experts split
    evenly over the TP group; asked for a dense model, an error. Asked over an uneven split, only where
    the budget counted it (`counted`: the plan's Settings.expert_parallel)."""
    moe = model.spec.moe
    if asked and moe is None:
        raise PlannerError(f"{model.id} is not a mixture-of-experts model: expert parallelism does not apply")
    if asked is None:
        return moe is not None and b.tp > 1 and moe.num_experts % b.tp == 0
    if asked and not counted and moe is not None and b.tp > 1 and moe.num_experts % b.tp:
        # vLLM's determine_expert_map gives the first E % TP ranks one expert more; a budget computed
        # without Settings.expert_parallel counted E / TP
        raise PlannerError(
            f"--expert-parallel over TP {b.tp}: vLLM would place {model.id}'s {moe.num_experts} routed experts "
            f"unevenly ({-(-moe.num_experts // b.tp)} on the first {moe.num_experts % b.tp} GPUs), which the plan "
            f"does not count: use a TP that divides {moe.num_experts}, or --no-expert-parallel"
        )
    return asked and b.tp > 1


def plan_serve_config(
    b: Budget,
    req: Any,
    *,
    model_ref: str | None = None,
    pin_kv_cache_bytes: int | None = None,
    expert_parallel: bool | None = None,
) -> ServeConfig:
    """The serve settings of a plan's budget for its request (`planner.plan.Request`)."""
    return serve_config(
        model_ref or req.model.id,
        b,
        req.settings,
        req.release,
        dtype=req.dtype,
        quantization=req.quantization,
        pin_kv_cache_bytes=pin_kv_cache_bytes,
        device=req.device,
        cpu_kvcache_gib=req.cpu_kvcache_bytes / GIB if req.cpu_kvcache_bytes else None,
        expert_parallel=expert_parallel_for(req.model, b, expert_parallel, req.settings.expert_parallel is True),
    )


def flag_argv(args: tuple[Arg, ...] | list[Arg]) -> list[str]:
    out: list[str] = []
    for flag, value, _ in args:
        out.append(f"--{flag}")
        if value is not None:
            out.append(value)
    return out


def serve_argv(cfg: ServeConfig) -> list[str]:
    """`vllm serve` arguments after the program name (no shell involved)."""
    return ["serve", cfg.model, *flag_argv(cfg.args)]


def serve_command(cfg: ServeConfig) -> str:
    """The command line to paste into a shell; every value is quoted."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cfg.env)
    cmd = shlex.join(["vllm", *serve_argv(cfg)])
    return f"{env} {cmd}" if env else cmd


# ---- vllm serve --config YAML -----------------------------------------------------------------


def _yaml_scalar(value: str | None) -> str:
    """A value as one YAML line: numbers stay numbers, text is a double-quoted string."""
    if value is None:
        return "true"
    if _is_number(value):
        return value
    return yaml_quoted(value)


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text) is not None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def config_yaml(cfg: ServeConfig, header: list[str] | None = None) -> str:
    """The file for `vllm serve --config FILE`: one setting a line, each with why."""
    lines = [comment(_one_line(h)) for h in (header or [])]
    lines.append(f"model: {yaml_quoted(cfg.model)}  # the model to serve")  # quoted even when it looks like a number
    lines += [f"{flag}: {_yaml_scalar(value)}  {comment(_one_line(why))}" for flag, value, why in cfg.args]
    return "\n".join(lines) + "\n"


# ---- LLM(...) keyword arguments ---------------------------------------------------------------


def _py_value(value: str | None) -> bool | int | float | str:
    if value is None:
        return True
    if _is_number(value):
        return float(value) if "." in value else int(value)
    return value


def llm_kwargs(cfg: ServeConfig) -> dict[str, bool | int | float | str]:
    """`LLM(**kwargs)`: the engine arguments of the serve flags (dashes become underscores)."""
    out: dict[str, bool | int | float | str] = {"model": cfg.model}
    for flag, value, _ in cfg.args:
        out[flag.replace("-", "_")] = _py_value(value)
    return out


def llm_source(cfg: ServeConfig, header: list[str] | None = None) -> str:
    """A Python file that builds `LLM(...)` with the plan's keyword arguments, each with why."""
    lines = [comment(_one_line(h)) for h in (header or [])]
    if cfg.env:
        lines += ["import os", ""]
        lines += [f"os.environ.setdefault({k!r}, {v!r})" for k, v in cfg.env]
    lines += ["from vllm import LLM", "", "llm = LLM("]
    kwargs = llm_kwargs(cfg)
    reasons = {"model": "the model to serve", **{f.replace("-", "_"): why for f, _, why in cfg.args}}
    lines += [f"    {k}={v!r},  {comment(_one_line(reasons[k]))}" for k, v in kwargs.items()]
    lines.append(")")
    return "\n".join(lines) + "\n"
