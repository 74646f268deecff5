"""GPU inventories: `2x8xH100,4x1xL4` (NODESxGPUSxTYPE, comma-separated) as node groups of one
catalogue GPU type each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from planner.errors import PlannerError
from planner.hardware import GPU, INVENTORY_FORM, Catalogue, load_catalogue


@dataclass(frozen=True)
class NodeGroup:
    """`nodes` identical machines with `gpus_per_node` devices of one type each."""

    nodes: int
    """How many machines."""
    gpus_per_node: int
    """Devices per machine."""
    gpu: GPU
    """The device type."""

    @property
    def total_gpus(self) -> int:
        """nodes x gpus_per_node."""
        return self.nodes * self.gpus_per_node

    def __str__(self) -> str:
        return f"{self.nodes}x{self.gpus_per_node}x{self.gpu.name}"

    def __repr__(self) -> str:
        return f"NodeGroup(nodes={self.nodes}, gpus_per_node={self.gpus_per_node}, gpu={self.gpu.name!r})"


_X = r"\s*[x×*]\s*"
_GROUP = re.compile(rf"^\s*(\d{{1,9}}){_X}(?:(\d{{1,9}}){_X})?(\S.*?)\s*$", re.IGNORECASE)


# Sanity bounds: the largest scale-up domains are 72-576 GPUs (NVL72 racks), clusters 100,000 nodes.
MAX_GPUS_PER_NODE = 1024
MAX_NODES = 100_000


def nodes_per_replica(tp: int, pp: int, gpus_per_node: int) -> int:
    """Nodes one TP x PP replica spans, as vLLM places its ranks: across nodes each of `n` nodes runs
    `tp * pp / n` consecutive ranks (`--nnodes`: the multiprocessing executor asserts that the world size
    divides by the nodes; the rendered Ray and Kubernetes nodes are alike too), and a TP group's `tp`
    consecutive ranks stay in one node (TP over NVLink), so whole pipeline stages share a node: the
    fewest `n = pp / k` with `k` dividing `pp` and `tp * k <= gpus_per_node`. TP 4 x PP 3 on nodes of
    8 takes 3 nodes of 4 GPUs (2 nodes of 6 would split a TP group). The plan, the inventory's and
    the sizing's counts and the launch files all use this."""
    if tp > gpus_per_node:
        raise PlannerError(
            f"tensor parallel {tp} does not fit in a node of {gpus_per_node} GPUs: TP stays inside a node"
        )
    stages = max(k for k in range(1, pp + 1) if pp % k == 0 and tp * k <= gpus_per_node)
    return pp // stages


def parse_inventory(text: str, catalogue: Catalogue | None = None) -> list[NodeGroup]:
    """Parse `2x8xH100,4x1xL4` (NODESxGPUSxTYPE, comma-separated); `8xH100` is one node of 8."""
    catalogue = catalogue if catalogue is not None else load_catalogue()
    if not isinstance(text, str) or not text.strip():
        raise PlannerError(f"empty GPU inventory; write it as {INVENTORY_FORM}")
    groups: list[NodeGroup] = []
    for part in text.split(","):
        m = _GROUP.match(part)
        if not m:
            raise PlannerError(f"cannot read GPU inventory part {part.strip()!r}; write it as {INVENTORY_FORM}")
        first, second, gpu_name = m.groups()
        if re.match(rf"\d+{_X}", gpu_name, re.IGNORECASE):  # "2x8x" or "2x8x4xH100"
            raise PlannerError(f"cannot read GPU inventory part {part.strip()!r}; write it as {INVENTORY_FORM}")
        nodes, per_node = (int(first), int(second)) if second is not None else (1, int(first))
        if not (1 <= nodes <= MAX_NODES and 1 <= per_node <= MAX_GPUS_PER_NODE):
            raise PlannerError(
                f"GPU inventory part {part.strip()!r}: counts must be 1-{MAX_NODES:,} nodes of 1-{MAX_GPUS_PER_NODE} "
                f"GPUs, as in {INVENTORY_FORM}"
            )
        groups.append(NodeGroup(nodes, per_node, catalogue.get(gpu_name)))
    return groups
