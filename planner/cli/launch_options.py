"""The options that shape a deployment beyond the memory plan, shared by `emit` and `plan --emit`.
Light on purpose: `plan` adds them to its parser on every run, and imports planner.launch (the
deployment formats) only when it emits."""

from __future__ import annotations

import argparse
from typing import Any

from planner.cli.args import int_range


def _replicas(text: str) -> int:
    from planner.launch.deployment import MAX_REPLICAS  # read when --replicas is given, not on every plan

    return int_range(1, MAX_REPLICAS, "a replica count")(text)


def add_launch_options(p: argparse.ArgumentParser) -> None:
    """The options that shape a deployment beyond the memory plan (shared by `emit` and `plan --emit`);
    options the parser already has are left as they are."""
    if "--replicas" in p._option_string_actions:
        return
    p.add_argument(
        "--replicas",
        type=_replicas,
        help="replicas to deploy (default: the inventory plan's, else 1)",
    )
    p.add_argument("--name", metavar="NAME", help="Kubernetes object name, a DNS label (default: vllm-<model>)")
    p.add_argument(
        "--model-ref",
        metavar="REF",
        help="the model argument written into the launch, e.g. a local path "
        "or mirror (default: the planned model's id)",
    )
    p.add_argument(
        "--multinode-backend",
        choices=("mp", "ray"),
        help="how a replica spans nodes: mp = vLLM's --nnodes flags, ray = a Ray cluster "
        "(default: mp from vLLM 0.11.1, ray before)",
    )
    p.add_argument(
        "--expert-parallel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--enable-expert-parallel for MoE models (default: on when a MoE replica has TP > 1)",
    )
    p.add_argument(
        "--gpus-per-node",
        type=int_range(1, 1024, "a GPU count"),
        metavar="N",
        help="GPUs per node (default: the inventory's, else the GPU's typical count, 8 for most)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace files that already exist in the output folder (default: refuse and list them)",
    )


def launch_options(a: argparse.Namespace) -> dict[str, Any]:
    """The launch options given on the command line, as `emit_all` and `build` take them."""
    from planner.launch.emit import OPTION_KEYS

    return {k: getattr(a, k) for k in OPTION_KEYS if getattr(a, k, None) is not None}
