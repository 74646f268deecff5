"""One node count for a TP x PP replica (planner.inventory.nodes_per_replica): what the plan prints, what an
inventory and a sizing count, and what the launch files render (`--nnodes`, the LeaderWorkerSet's size, the
GPUs each node asks for) agree. vLLM's rule: across nodes every node runs world / nnodes consecutive ranks
(the multiprocessing executor asserts the world size divides by the nodes) and a TP group stays in one node,
so whole pipeline stages share a node: TP 4 x PP 3 on nodes of 8 is 3 nodes of 4 GPUs, not 2."""

from __future__ import annotations

import re

import pytest
import yaml
from launch_helpers import deployment

from planner.cli import main
from planner.errors import PlannerError
from planner.hardware import load_catalogue
from planner.inventory import NodeGroup, nodes_per_replica
from planner.launch import render
from planner.perf.sizing import nodes_for
from planner.plan import replicas_in

MODEL = ("llama3.1-70b", "--gpu", "H100", "--max-model-len", "8192", "--vllm-version", "0.18.0")
H100 = load_catalogue().get("H100")

# (TP, PP, GPUs per node, nodes one replica spans)
CASES = [
    (4, 3, 8, 3),  # 2 nodes of 6 would split the second TP group: 3 nodes of 4
    (2, 3, 4, 3),  # 3 stages do not pair up on 4-GPU nodes
    (8, 2, 8, 2),
    (2, 6, 8, 2),  # 3 stages of 2 per node
    (2, 4, 6, 2),  # 2 stages of 2 per node (3 stages would not divide 4)
    (4, 2, 8, 1),
    (1, 3, 2, 3),
    (2, 8, 8, 2),
    (4, 4, 8, 2),
]


@pytest.mark.parametrize("tp, pp, gpn, nodes", CASES, ids=[f"tp{c[0]}-pp{c[1]}-node{c[2]}" for c in CASES])
def test_the_plan_counts_the_nodes_the_launch_files_render(tp, pp, gpn, nodes, capsys):
    assert nodes_per_replica(tp, pp, gpn) == nodes
    argv = (*MODEL, "--tp", str(tp), "--pp", str(pp))
    assert main(["plan", *argv, "--gpus-per-node", str(gpn)]) == 0
    text = capsys.readouterr().out
    said = re.search(r"one replica: (\d+) GPUs (?:on (\d+) nodes of (\d+) GPUs|in one node)", text)
    assert said and int(said.group(1)) == tp * pp, text[:300]
    assert int(said.group(2) or 1) == nodes and (said.group(3) is None or int(said.group(3)) == gpn)
    # an inventory of exactly that many nodes holds one replica on all of them; a sizing counts as many
    assert replicas_in(NodeGroup(nodes, gpn, H100), tp, pp) == (1, nodes)
    assert nodes == 1 or replicas_in(NodeGroup(nodes - 1, gpn, H100), tp, pp)[0] == 0
    assert nodes_for(1, tp, pp, gpn) == nodes
    # the launch files
    d = deployment(*argv, gpus_per_node=gpn)
    assert (d.nodes, d.gpus_per_node) == (nodes, tp * pp // nodes)
    serve = render("serve", d)
    if nodes == 1:
        assert "--nnodes" not in serve
        return
    assert re.search(rf"--nnodes['\s]+{nodes}\b", serve), serve
    (lws,) = [doc for doc in yaml.safe_load_all(render("lws", d)) if doc and doc.get("kind") == "LeaderWorkerSet"]
    group = lws["spec"]["leaderWorkerTemplate"]
    assert group["size"] == nodes
    for pod in (group["leaderTemplate"], group["workerTemplate"]):
        (container,) = pod["spec"]["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == tp * pp // nodes


@pytest.mark.parametrize("tp, gpn", [(16, 8), (8, 4), (3, 2)])
def test_a_tp_group_wider_than_a_node_is_refused(tp, gpn):
    with pytest.raises(PlannerError, match=f"tensor parallel {tp} does not fit in a node of {gpn} GPUs"):
        nodes_per_replica(tp, 1, gpn)
    assert replicas_in(NodeGroup(100, gpn, H100), tp, 1) == (0, 0)
