"""LoRA: the linear modules PEFT sees, `--lora-targets`, the adapters' shapes and their states."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from planner.errors import PlannerError
from planner.models.tensors import Tensor
from planner.training.states import ModelStates, PrecisionRule, optimizer_state_bytes

LORA_TARGET_ALIASES: dict[str, str] = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "down": "down_proj",
}
"""Short `--lora-targets` names -> the module names PEFT matches. Any module name listed by the
error message (qkv_proj, gate_up_proj, fc1, kv_b_proj, ...) is accepted as is; `all-linear` takes
every linear module of the decoder layers (PEFT's name; lm_head excluded)."""


@dataclass(frozen=True)
class LinearModule:
    """One linear module of a decoder layer, as PEFT sees it."""

    name: str
    """Module name PEFT matches: q_proj, gate_up_proj, fc1, kv_b_proj, ..."""
    layer: int
    in_features: int
    out_features: int
    copies: int = 1
    """Routed experts stacked in one tensor [E, out, in]: one module per expert."""
    routed: bool = False
    """A routed expert: each token goes through `experts_per_token` of them, not all."""


def _modules_of(t: Tensor) -> list[LinearModule]:
    assert isinstance(t.stage, int)
    routed = t.component == "experts"
    if len(t.shape) == 3:  # stacked experts [E, out, in]; gate_up splits into PEFT's gate_proj and up_proj
        e, out_f, in_f = t.shape
        if "gate_up" in t.name:
            return [LinearModule(n, t.stage, in_f, out_f // 2, e, True) for n in ("gate_proj", "up_proj")]
        return [LinearModule(t.name.rsplit(".", 1)[-1], t.stage, in_f, out_f, e, True)]
    name = t.name.rsplit(".", 2)[-2] if t.name.endswith(".weight") else t.name.rsplit(".", 1)[-1]
    return [LinearModule(name, t.stage, t.shape[1], t.shape[0], 1, routed)]


def decoder_linear_modules(tensors: Iterable[Tensor]) -> list[LinearModule]:
    """Every linear module of the decoder layers (vision tower, MTP layers and lm_head excluded)."""
    out: list[LinearModule] = []
    for t in tensors:
        if (
            t.linear
            and t.loaded
            and not t.runtime
            and isinstance(t.stage, int)
            and t.component not in ("vision", "mtp")
        ):
            out += _modules_of(t)
    return out


def resolve_lora_targets(
    targets: Sequence[str] | None, modules: Sequence[LinearModule], architecture: str
) -> tuple[str, ...]:
    """`--lora-targets` -> module names; a target the architecture lacks is an error naming the
    modules it has."""
    available = list(dict.fromkeys(m.name for m in modules))
    if targets is None or list(targets) == ["all-linear"]:
        return tuple(available)
    out: list[str] = []
    for t in targets:
        name = LORA_TARGET_ALIASES.get(t.strip().lower(), t.strip())
        if not name:
            raise PlannerError("--lora-targets has an empty entry: give a comma-separated list such as q,k,v,o")
        if name not in available:
            raise PlannerError(
                f"LoRA target {t!r} ({name}) is not a linear module of {architecture}: "
                f"use some of {', '.join(available)} (or all-linear)"
            )
        out.append(name)
    return tuple(dict.fromkeys(out))


def lora_adapter_shapes(modules: Iterable[LinearModule], targets: Iterable[str], rank: int) -> list[tuple[int, ...]]:
    """The A [r, in] and B [out, r] matrices PEFT adds to each targeted module (one pair per expert)."""
    wanted = set(targets)
    shapes: list[tuple[int, ...]] = []
    for m in modules:
        if m.name in wanted:
            shapes += [(rank, m.in_features), (m.out_features, rank)] * m.copies
    return shapes


def lora_trainable_params(modules: Iterable[LinearModule], targets: Iterable[str], rank: int) -> int:
    """r * (in + out) per targeted module: Llama-3-8B, r=16 on q,k,v,o,gate,up,down: 41,943,040."""
    return sum(math.prod(s) for s in lora_adapter_shapes(modules, targets, rank))


def adapter_states(
    shapes: list[tuple[int, ...]], rule: PrecisionRule, optimizer: str, adapter_bytes: int | None = None
) -> ModelStates:
    """Adapters are trained in their own dtype (fp32 under PEFT's autocast_adapter_dtype, the
    model's in torchtune): no separate master copy."""
    n = sum(math.prod(s) for s in shapes)
    ab = rule.adapter_bytes if adapter_bytes is None else adapter_bytes
    sb = rule.state_bytes if adapter_bytes is None else adapter_bytes  # torch states follow the parameter's dtype
    return ModelStates(
        adapter_weights=n * ab,
        adapter_gradients=n * ab,
        adapter_optimizer=sum(optimizer_state_bytes(s, optimizer, sb) for s in shapes),
    )
