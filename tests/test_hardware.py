"""GPU catalogue, lookups, user files, inventory strings."""

import json
import math

import pytest

from planner.errors import PlannerError
from planner.hardware import GPU, gpus_table, load_catalogue, parse_inventory, with_memory


@pytest.fixture(scope="module")
def cat():
    return load_catalogue()


@pytest.mark.parametrize(
    "typed, name",
    [
        ("H100", "H100-SXM-80GB"),
        ("h100-80gb", "H100-SXM-80GB"),
        ("h100-sxm", "H100-SXM-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-SXM-80GB"),
        ("nvidia h100 80gb hbm3", "H100-SXM-80GB"),
        ("h100_sxm_80gb", "H100-SXM-80GB"),
        ("NVIDIA H100 PCIe", "H100-PCIe"),
        ("Tesla T4", "T4"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB-SXM"),
        ("NVIDIA A100 80GB PCIe", "A100-80GB-PCIe"),
        ("NVIDIA GeForce RTX 4090", "RTX-4090"),
        ("AMD Instinct MI300X", "MI300X"),
        ("l40s", "L40S"),
        ("Intel Gaudi 3", "Gaudi3"),
    ],
)
def test_aliases_resolve(cat, typed, name):
    assert cat.get(typed).name == name
    assert typed in cat


def test_h100_total_matches_calibration(cat, shared_dir):
    totals = {
        json.loads(line)["gpu_total_gib"]
        for line in (shared_dir / "calibration" / "vllm-startup-h100.jsonl").read_text().splitlines()
        if line.strip()
    } - {None}
    assert totals == {79.19}
    h100 = cat.get("H100")
    assert h100.memory_gib == 79.19 and h100.memory_gib_measured
    assert h100.memory_bytes == int(79.19 * 2**30)


def test_every_entry_is_complete(cat):
    assert len(cat) >= 25
    for gpu in cat:
        assert gpu.memory_gib > 0 and math.isfinite(gpu.memory_gib), gpu.name
        assert gpu.bandwidth_tbs > 0, gpu.name
        assert gpu.sources, gpu.name
        assert all(tag in cat.source_notes for tag in gpu.sources), gpu.name
        assert gpu.memory_gib_measured or gpu.memory_note, f"{gpu.name}: estimate without a note"
        if gpu.memory_gb is not None and gpu.devices_per_package == 1:
            assert gpu.memory_gib <= gpu.memory_gb, gpu.name  # torch total sits below the marketed size
        assert (gpu.price_per_gpu_hour_usd is None) or gpu.price_source, gpu.name


def test_unknown_gpu_suggests_nearest(cat):
    with pytest.raises(PlannerError, match=r"unknown GPU 'H1OO'; nearest: H100.*vllm-planner gpus"):
        cat.get("H1OO")


def test_user_yaml_adds_and_overrides(tmp_path, cat):
    extra = tmp_path / "my-gpus.yaml"
    extra.write_text(
        "gpus:\n"
        "  - name: H100\n"  # an alias: updates H100-SXM-80GB
        "    memory_gib: 79.0\n"
        "    price_per_gpu_hour_usd: 2.5\n"
        "  - name: RTX-A6000\n"
        "    vendor: nvidia\n"
        "    aliases: [NVIDIA RTX A6000, a6000]\n"
        "    memory_gib: 47.4\n"
        "    memory_gib_measured: true\n"
        "    bandwidth_tbs: 0.768\n"
    )
    mine = load_catalogue(extra)
    h100 = mine.get("nvidia h100 80gb hbm3")
    assert (h100.name, h100.memory_gib, h100.memory_gib_measured) == ("H100-SXM-80GB", 79.0, False)
    assert h100.price_source == "user file my-gpus.yaml" and h100.price_date is None
    assert h100.bf16_tflops == 989  # fields not given stay
    assert mine.get("a6000").memory_gib == 47.4
    assert mine.get("a6000").sources == ("user file my-gpus.yaml",)
    assert len(mine) == len(cat) + 1
    assert cat.get("H100").memory_gib == 79.19  # the cached bundled catalogue is untouched


@pytest.mark.parametrize(
    "body, message",
    [
        ("gpus:\n  - name: X1\n    vendor: acme\n    bandwidth_tbs: 1\n", "lacks memory_gib"),
        ("gpus:\n  - name: X1\n    vendor: acme\n    memory_gib: -1\n    bandwidth_tbs: 1\n", "memory_gib must be"),
        ("gpus:\n  - name: H100\n    memroy_gib: 70\n", "did you mean 'memory_gib'"),
        ("gpus: [\n", "not valid YAML"),
        ("name: X1\n", "`gpus:` list"),
        ("- X1\n", "must be a mapping with a `gpus:` list"),
        ("gpus:\n  - name: H100\n    memory_gib: lots\n", r"entry 'H100'\.memory_gib: expected a number, got 'lots'"),
        ("gpus:\n  - name: H100\n    aliases: h1\n", r"entry 'H100'\.aliases: expected a list"),
        ("gpus:\n  - name: H100\n    gpus_per_node_max: 8.5\n", "gpus_per_node_max: expected an integer"),
        ("gpus:\n  - name: H100\n    fp8_native: maybe\n", "fp8_native: expected true/false"),
        ("gpus:\n  - name: H100\n    zz: 1\n", "unknown field 'zz'; see profiles/gpus.yaml"),
        ("gpus:\n  - memory_gib: 1\n", "an entry has no name"),
        ("gpus:\n  - name: X1\nsources: [S1]\n", "`sources:` must map tags"),
        ("gpus:\n  - &a {name: X1}\n", "anchors or aliases"),
    ],
)
def test_bad_user_yaml(tmp_path, body, message):
    extra = tmp_path / "bad.yaml"
    extra.write_text(body)
    with pytest.raises(PlannerError, match=message):
        load_catalogue(extra)


def test_user_yaml_reads_numbers_as_written(tmp_path):
    """YAML reads `9.0` and `7777` as numbers: text fields take them as text, whole figures stay whole."""
    extra = tmp_path / "numbers.yaml"
    extra.write_text(
        "gpus:\n  - name: 7777\n    vendor: nvidia\n    aliases: [7777x]\n    compute_capability: 8.9\n"
        "    memory_gib: 23\n    bandwidth_tbs: 1\n    tdp_w: 450\n"
    )
    gpu = load_catalogue(extra).get("7777x")
    assert (gpu.name, gpu.aliases, gpu.compute_capability, gpu.cuda_capability) == ("7777", ("7777x",), "8.9", (8, 9))
    assert (type(gpu.memory_gib), type(gpu.tdp_w)) == (float, int)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2x8xH100,4x1xL4", [(2, 8, "H100-SXM-80GB"), (4, 1, "L4")]),
        ("8xH100", [(1, 8, "H100-SXM-80GB")]),
        (" 2 x 4 x A100-40GB , 1x8xMI300X ", [(2, 4, "A100-40GB-SXM"), (1, 8, "MI300X")]),
        ("1X2XNVIDIA L40S", [(1, 2, "L40S")]),
    ],
)
def test_inventory_parses(cat, text, expected):
    groups = parse_inventory(text, cat)
    assert [(g.nodes, g.gpus_per_node, g.gpu.name) for g in groups] == expected
    assert sum(g.total_gpus for g in groups) == sum(n * p for n, p, _ in expected)


@pytest.mark.parametrize("text", ["", "H100", "2x8x", "2-8-H100", "2x8xH100,", "x8xH100", "2x8x4xH100", "0x8xH100"])
def test_malformed_inventory(cat, text):
    with pytest.raises(PlannerError, match=r"NODESxGPUSxTYPE.*2x8xH100"):
        parse_inventory(text, cat)


def test_inventory_unknown_gpu(cat):
    with pytest.raises(PlannerError, match="unknown GPU 'B300'"):
        parse_inventory("1x8xB300", cat)


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "80", True, None])
def test_with_memory_rejects(cat, value):
    with pytest.raises(PlannerError, match="--gpu-memory-gib must be a number > 0"):
        with_memory(cat.get("L4"), value)


def test_with_memory_overrides(cat):
    l4 = with_memory(cat.get("L4"), 21.5)
    assert (l4.memory_gib, l4.memory_bytes, l4.name) == (21.5, int(21.5 * 2**30), "L4")


def test_gpu_validates_at_construction():
    with pytest.raises(PlannerError, match="bandwidth_tbs must be a number > 0"):
        GPU(name="X", vendor="acme", memory_gib=10.0, bandwidth_tbs=0.0, sources=("me",))
    with pytest.raises(PlannerError, match="no sources"):
        GPU(name="X", vendor="acme", memory_gib=10.0, bandwidth_tbs=1.0)


def test_gpus_table(cat):
    rows = gpus_table(cat)
    assert len(rows) == len(cat)
    h100 = next(r for r in rows if r["gpu"] == "H100-SXM-80GB")
    assert h100["memory_gib"] == 79.19 and h100["memory_source"] == "measured" and h100["fp8_support"] == "native"
    assert next(r for r in rows if r["gpu"] == "A100-80GB-SXM")["fp8_support"] == "weight-only"
