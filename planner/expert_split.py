"""Expert parallelism's split of the routed experts over the TP ranks, as vLLM places them. Pure."""

from __future__ import annotations

import re

from planner.models.spec import ModelSpec
from planner.models.tensors import Tensor

_ONE_EXPERT = re.compile(r"\.experts\.(\d+)\.")


def uneven_expert_split(spec: ModelSpec, tp: int, expert_parallel: bool) -> bool:
    """Whether --enable-expert-parallel over TP ranks places the routed experts unevenly (TP does not divide
    them). An even split holds the same bytes per rank as TP's split of the intermediate dimension."""
    return bool(expert_parallel and spec.moe and tp > 1 and spec.moe.num_experts % tp)


def busiest_expert_rank_shape(t: Tensor, spec: ModelSpec, tp: int) -> tuple[int, ...]:
    """An expert tensor's shape on rank 0 under uneven expert parallelism: vLLM's `determine_expert_map`
    (linear placement) gives the first E % TP ranks ceil(E / TP) whole experts, rank 0 experts 0 ...
    ceil(E / TP) - 1, unsplit."""
    assert spec.moe is not None
    per_rank = -(-spec.moe.num_experts // tp)
    one = _ONE_EXPERT.search(t.name)
    if one:  # one expert's own tensor: whole on rank 0, or not there
        return t.shape if int(one.group(1)) < per_rank else (0,)
    return (per_rank, *t.shape[1:])  # stacked [experts, ...]
