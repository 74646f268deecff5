"""Fixes for a training setup that does not fit: the smallest changes, each recomputed (as `plan`
lists its fixes). A candidate is kept only when the recomputed reserved footprint fits; one the
setup cannot take (optimizer-in-backward under DeepSpeed, say) is an error and is dropped."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from planner.errors import PlannerError
from planner.units import GIB

if TYPE_CHECKING:
    from planner.training.config import TrainingConfig
    from planner.training.resolve import Resolved

Evaluate = Callable[["TrainingConfig"], tuple[bool, int]]
GPU_COUNTS = (2, 4, 8, 16, 32, 64)


def _candidates(
    c: TrainingConfig, r: Resolved, max_b: int | None, max_s: int | None
) -> list[tuple[str, str, TrainingConfig]]:
    rep = dataclasses.replace
    out: list[tuple[str, str, TrainingConfig]] = []
    if not c.gradient_checkpointing:
        out.append(("gradient checkpointing", "--gradient-checkpointing", rep(c, gradient_checkpointing=True)))
    if max_b and max_b < c.micro_batch_size:
        accum = c.grad_accum * -(-c.micro_batch_size // max_b)
        out.append(
            (
                f"micro-batch {max_b} with {accum} accumulation steps (same effective batch)",
                f"--micro-batch-size {max_b} --grad-accum {accum}",
                rep(c, micro_batch_size=max_b, grad_accum=accum),
            )
        )
    if max_s and max_s < r.seq_len:
        out.append((f"sequences of {max_s:,} tokens", f"--seq-len {max_s}", rep(c, seq_len=max_s)))
    if not c.activation_offload:
        out.append(("activation offload to pinned host RAM", "--activation-offload", rep(c, activation_offload=True)))
    if c.method == "full" and not c.optimizer_in_backward and c.grad_accum == 1 and c.offload == "none":
        out.append(
            (
                "optimizer step in the backward pass (one gradient alive)",
                "--optimizer-in-backward",
                rep(c, optimizer_in_backward=True),
            )
        )
    if c.optimizer in ("adamw", "paged-adamw") and r.states.optimizer + r.states.adapter_optimizer:
        out.append(("8-bit AdamW (bitsandbytes)", "--optimizer adamw-8bit", rep(c, optimizer="adamw-8bit")))
        out.append(
            ("paged 8-bit AdamW (bitsandbytes)", "--optimizer paged-adamw-8bit", rep(c, optimizer="paged-adamw-8bit"))
        )
    if (
        c.offload == "none"
        and c.optimizer not in ("paged-adamw", "paged-adamw-8bit")
        and r.framework.sharding == "deepspeed"
    ):
        z = max(c.zero, 2)
        out.append(
            (
                f"ZeRO-Offload of the optimizer to host RAM (ZeRO {z})",
                f"--zero {z} --offload optimizer",
                rep(c, zero=z, offload="optimizer"),
            )
        )
    for n in GPU_COUNTS:
        if n > c.gpus:
            out.append((f"{n} GPUs with ZeRO 3", f"--gpus {n} --zero 3", rep(c, gpus=n, zero=3)))
    if c.method in ("full", "lora") and r.spec.quant is None:
        lora = {} if c.method == "lora" else {"lora_rank": 16}
        out.append(("QLoRA (NF4 base)", "--method qlora", rep(c, method="qlora", **lora)))
    return out


def _try(evaluate: Evaluate, k: TrainingConfig) -> tuple[bool, int] | None:
    try:
        return evaluate(k)
    except PlannerError:
        return None  # a candidate the setup cannot take (e.g. a framework without ZeRO-Offload)


def find_fixes(
    evaluate: Evaluate, c: TrainingConfig, r: Resolved, max_b: int | None, max_s: int | None
) -> list[dict[str, Any]]:
    """Single changes that fit, in the order of the list above (only the fewest GPUs that fit);
    when none does, gradient checkpointing combined with each."""
    found = _fitting(evaluate, _candidates(c, r, max_b, max_s))
    if not found and not c.gradient_checkpointing:
        ck = dataclasses.replace(c, gradient_checkpointing=True)
        combos = [
            (f"gradient checkpointing and {what}", f"--gradient-checkpointing {flags}", k)
            for what, flags, k in _candidates(ck, r, None, None)
            if k.gradient_checkpointing and k != ck
        ]
        found = _fitting(evaluate, combos)
    return found


def _fitting(evaluate: Evaluate, candidates: list[tuple[str, str, TrainingConfig]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    gpus_done = False
    for what, flags, k in candidates:
        if gpus_done and "GPUs with ZeRO 3" in what:
            continue
        got = _try(evaluate, k)
        if got and got[0]:
            out.append({"change": what, "flags": flags, "reserved_gib": round(got[1] / GIB, 2), "fits": True})
            gpus_done = gpus_done or "GPUs with ZeRO 3" in what
    return out
