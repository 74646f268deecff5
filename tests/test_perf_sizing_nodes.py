"""SLO sizing on one GPU type keeps to the node size (`--gpus-per-node`, else the GPU's typical node):
TP stays inside a node, PP spans nodes only once TP fills one, and the nodes a sizing uses are the
fewest in which plan's inventory (planner.plan.replicas_in) places its replicas."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner import releases
from planner.api import load_model
from planner.budget import Settings
from planner.hardware import NodeGroup, load_catalogue
from planner.perf.sizing import Targets, Traffic, Where, layouts_of, size
from planner.plan import Request, replicas_in

REPO = Path(__file__).resolve().parent.parent
CAT = load_catalogue()
RELEASE = "0.18.0"
TRAFFIC, TARGETS = Traffic(4.0, 1024, 256), Targets(None, 80.0)


def _req(model: str) -> Request:
    return Request(load_model(model), Settings(max_model_len=8192), releases.get(RELEASE))


PPS = (2, 3, 4, 6, 8, 12, 16)


def _tried(tps: tuple[int, ...]) -> list[tuple[int, int]]:
    """Each TP alone, then the widest with each PP (written out: the table's shorthand)."""
    return [(t, 1) for t in tps] + [(tps[-1], p) for p in PPS]


# (model, GPU, GPUs per node (None: the GPU's typical node), the layouts sizing tries, the smallest that holds it)
CASES = [
    ("llama3.1-70b", "H100", 2, _tried((1, 2)), (2, 1)),
    ("llama3.1-70b", "H100", 4, _tried((1, 2, 4)), (2, 1)),
    ("llama3.1-70b", "H100", None, _tried((1, 2, 4, 8)), (2, 1)),
    ("llama3.1-70b", "L40S", 4, _tried((1, 2, 4)), (4, 1)),
    ("llama3.1-8b", "L4", 1, _tried((1,)), (1, 1)),
    ("llama3.1-70b", "L4", 3, _tried((1, 2)), (2, 4)),  # 3 GPUs a node: TP 2 is the widest that divides the heads
]


def _fewest_nodes(gpn: int, gpu, tp: int, pp: int, replicas: int) -> int:
    """The fewest nodes of `gpn` in which plan's inventory places `replicas` of TP x PP."""
    nodes = 1
    while replicas_in(NodeGroup(nodes, gpn, gpu), tp, pp)[0] < replicas:
        nodes += 1
    return nodes


@pytest.mark.parametrize("model, gpu, gpn, tried, smallest", CASES)
def test_layouts_and_nodes_follow_the_node_size(model, gpu, gpn, tried, smallest):
    req, g = _req(model), CAT.get(gpu)
    where = Where.of_gpu(g, gpn)
    per_node = gpn or g.gpus_per_node_max
    assert where.gpus_per_node == per_node and layouts_of(req, where) == tried
    result = size(req, [where], TRAFFIC, TARGETS, "cost", CAT).options[0]
    fitting = [x for x in tried if not any(u.startswith(f"TP {x[0]} x PP {x[1]}: memory") for u in result.unmet)]
    assert fitting[0] == smallest
    for x in result.layouts:
        assert x.tp <= per_node and (x.pp == 1 or x.tp == tried[-1][0])  # PP only once TP fills what it can
        assert x.gpus == x.replicas * x.tp * x.pp
        assert x.nodes == _fewest_nodes(per_node, g, x.tp, x.pp, x.replicas), (x.tp, x.pp, x.replicas)
    # the same GPU as an inventory of as many such nodes as it takes sizes alike
    group = NodeGroup(10_000, per_node, g)
    inv = size(req, [Where.of_group(group)], TRAFFIC, TARGETS, "cost", CAT).options[0]
    assert [(x.tp, x.pp, x.replicas, x.nodes) for x in inv.layouts] == [
        (x.tp, x.pp, x.replicas, x.nodes) for x in result.layouts
    ]


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "planner", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)


BASE = ("plan", "llama3.1-70b", "--gpu", "H100", "--max-model-len", "8192", "--vllm-version", RELEASE)
LOAD = ("--request-rate", "4", "--input-len", "1024", "--output-len", "256", "--tpot-ms", "80")


@pytest.mark.parametrize("gpn", [1, 2, 4])
def test_plan_with_a_rate_keeps_every_layout_inside_the_given_node(gpn):
    p = _cli(*BASE, *LOAD, "--gpus-per-node", str(gpn), "--json")
    assert p.returncode in (0, 1), p.stderr
    (gpu,) = json.loads(p.stdout)["gpus"]
    for x in [gpu["chosen"], *gpu["alternatives"]] if gpu["chosen"] else []:
        assert x["tp"] <= gpn and x["nodes_used"] * gpn >= x["gpus_used"]
        assert x["nodes_used"] == _fewest_nodes(gpn, CAT.get("H100"), x["tp"], x["pp"], x["replicas"])
    assert gpu["chosen"] is not None or any("memory" in u for u in gpu["not_meeting"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--gpus-per-node", "2", "--tp", "4"), "--tp 4 does not fit in a node of 2"),
        (("--inventory", "2x8xH100", "--gpus-per-node", "4"), "drop --gpus-per-node"),
    ],
)
def test_a_node_size_that_contradicts_is_one_line_and_exit_2(extra, message):
    args = [a for a in BASE if a not in ("--gpu", "H100")] if "--inventory" in extra else list(BASE)
    p = _cli(*args, *LOAD, *extra)
    assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
