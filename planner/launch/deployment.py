"""What every deployment format needs from a plan: the serve flags, the layout over nodes, the
replicas, and the sizes the plan does not give directly (/dev/shm, CPU, memory, start-up allowance,
model cache), sized by `deploy/templates/sizing.yaml`.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from planner.budget import Budget
from planner.errors import PlannerError
from planner.hardware import GPU
from planner.inventory import nodes_per_replica
from planner.launch.escape import check_model_ref
from planner.launch.flags import Arg, ServeConfig, plan_serve_config
from planner.launch.templates import template_dir
from planner.plan import DEFAULT_GPUS_PER_NODE, Request
from planner.releases import ReleaseFacts
from planner.units import GIB

PORT = 8000
MAX_REPLICAS = 100_000
"""Far above any real deployment, far below Kubernetes' int32 `replicas`."""


@dataclass(frozen=True)
class Var:
    """An environment variable the launcher expands (`"$NAME"` in a shell, `$(NAME)` in Kubernetes args)."""

    name: str


Word = str | Var


@dataclass(frozen=True)
class Deployment:
    """One plan, ready for the deployment formats."""

    name: str
    """DNS-1035 label for Kubernetes objects, from the model id."""
    config: ServeConfig
    """Flags every node runs (multi-node: including --nnodes / --distributed-executor-backend)."""
    budget: Budget
    release: ReleaseFacts
    gpu: GPU | None
    device: str
    replicas: int
    nodes: int
    """Nodes one replica spans."""
    gpus_per_node: int
    """GPUs of one replica on each of its nodes (= GPUs per pod)."""
    backend: Literal["mp", "ray"] | None
    """How a replica spanning nodes joins them; None on one node."""
    weights_gib_per_node: float
    weights_gib_total: float
    sizing: dict[str, Any]
    pinned_kv: bool = False

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def multinode(self) -> bool:
        return self.nodes > 1

    @property
    def shm_gib(self) -> int:
        s = self.sizing["shm"]
        return int(math.ceil(s["base_gib"] + s["per_gpu_gib"] * self.gpus_per_node))

    @property
    def cpu(self) -> int:
        s = self.sizing["cpu"]
        return int(math.ceil(s["base"] + s["per_gpu"] * self.gpus_per_node))

    @property
    def memory_gib(self) -> int:
        s = self.sizing["memory"]
        own = s["base_gib"] + s["per_gpu_gib"] * self.gpus_per_node
        return int(math.ceil(own + s["weights_factor"] * self.weights_gib_per_node + self.shm_gib))

    @property
    def startup_s(self) -> int:
        s = self.sizing["startup"]
        raw = s["base_s"] + s["per_weights_gib_s"] * self.weights_gib_total
        return int(math.ceil(raw / s["period_s"]) * s["period_s"])

    @property
    def cache_gib(self) -> int:
        s = self.sizing["cache"]
        raw = self.weights_gib_total * s["headroom"] + s["extra_gib"]
        return int(math.ceil(raw / s["round_gib"]) * s["round_gib"])

    def node_args(self, rank: int | Var, master: Word) -> list[Word]:
        """The flags one node adds to `config` (none on a single node or for Ray)."""
        if self.backend != "mp":
            return []
        out: list[Word] = ["--node-rank", rank if isinstance(rank, Var) else str(rank), "--master-addr", master]
        return out + ([] if rank == 0 else ["--headless"])


@functools.cache
def _sizing() -> dict[str, Any]:
    path = template_dir() / "sizing.yaml"
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlannerError(f"{path} is missing; reinstall vllm-planner") from None


def k8s_name(model: str, limit: int = 40) -> str:
    """`vllm-<model>` as a DNS-1035 label: lower case, digits and '-', starting with a letter."""
    base = model.rstrip("/").rsplit("/", 1)[-1].lower()
    slug = re.sub(r"[^a-z0-9]+", "-", base).strip("-") or "model"
    return ("vllm-" + slug)[:limit].rstrip("-")


def _backend(rel: ReleaseFacts, asked: str | None) -> Literal["mp", "ray"]:
    if asked is None:
        return "mp" if rel.native_multinode_flags else "ray"
    if asked not in rel.multinode_backends:
        raise PlannerError(
            f"vLLM {rel.version} cannot span nodes with {asked!r}: it has {', '.join(rel.multinode_backends)} "
            "(--nnodes/--node-rank/--master-addr arrived in 0.11.1)"
        )
    return asked  # type: ignore[return-value]


def _multinode_args(nodes: int, backend: str) -> list[Arg]:
    if backend == "ray":
        return [("distributed-executor-backend", "ray", f"the replica spans {nodes} nodes joined by a Ray cluster")]
    return [
        ("distributed-executor-backend", "mp", "vLLM's own processes on every node, no Ray"),
        ("nnodes", str(nodes), f"the replica spans {nodes} nodes"),
    ]


def _plan_parts(result: Any) -> tuple[Budget, GPU | None, int | None, int | None]:
    """(budget, GPU, GPUs per node, replicas) of a PlanResult or an InventoryPlan."""
    group = getattr(result, "group", None)
    gpu = group.gpu if group is not None else getattr(result, "gpu", None)
    gpn = group.gpus_per_node if group is not None else None
    return result.budget, gpu, gpn, getattr(result, "replicas", None)


def build(
    result: Any,
    req: Request,
    *,
    replicas: int | None = None,
    model_ref: str | None = None,
    name: str | None = None,
    pin_kv_cache: bool = False,
    multinode_backend: str | None = None,
    expert_parallel: bool | None = None,
    gpus_per_node: int | None = None,
) -> Deployment:
    """A Deployment from a plan (`PlanResult` or `InventoryPlan`) and its request."""
    b, gpu, group_gpn, plan_replicas = _plan_parts(result)
    gpn = (
        gpus_per_node
        or group_gpn
        or (gpu.gpus_per_node_max if gpu and gpu.gpus_per_node_max else DEFAULT_GPUS_PER_NODE)
    )
    reps = replicas if replicas is not None else plan_replicas or 1
    if not 1 <= reps <= MAX_REPLICAS:
        raise PlannerError(f"--replicas {reps} must be between 1 and {MAX_REPLICAS:,}")
    nodes = 1 if req.device == "cpu" else nodes_per_replica(b.tp, b.pp, gpn)
    pin = min(st.available_kv_bytes for st in b.stages) if pin_kv_cache and b.stages else None
    if pin_kv_cache and not req.release.kv_cache_memory_bytes_flag:
        raise PlannerError(
            f"--pin-kv-cache needs --kv-cache-memory-bytes, which vLLM {req.release.version} lacks (0.10.2+)"
        )
    ref = (
        check_model_ref(model_ref, "--model-ref")
        if model_ref is not None
        else check_model_ref(req.model.id, "the model")
    )
    cfg = plan_serve_config(b, req, model_ref=ref, pin_kv_cache_bytes=pin, expert_parallel=expert_parallel)
    backend = _backend(req.release, multinode_backend) if nodes > 1 else None
    if backend:
        cfg = cfg.with_args(_multinode_args(nodes, backend))
    per_stage = [st.weights_bytes for st in b.stages] or [int(b.weights_gib * GIB)] * b.pp
    total = b.tp * sum(per_stage) / GIB
    return Deployment(
        name=name or k8s_name(req.model.id),
        config=cfg,
        budget=b,
        release=req.release,
        gpu=gpu,
        device=req.device,
        replicas=reps,
        nodes=nodes,
        gpus_per_node=b.tp * b.pp // nodes,
        backend=backend,
        weights_gib_per_node=total / nodes,
        weights_gib_total=total,
        sizing=_sizing(),
        pinned_kv=pin is not None,
    )
