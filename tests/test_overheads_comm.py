"""Non-torch memory at TP >= 2 by interconnect, as a mechanism: NCCL's receive buffers per channel
where its transport keeps them on the GPU, plus vLLM's custom all-reduce buffers where it is enabled
(profiles/vllm/comm_buffers.yaml). overheads.yaml carries the figures fit_overheads.py built from it
(the one measured PCIe TP 2 start-up, 2x RTX A6000 on 0.30, attributes 0.047 GiB to them: 0.049 with P2P)."""

import copy

import pytest
import yaml

from planner import comm_buffers, overheads
from planner.errors import PlannerError
from planner.paths import profiles_dir
from planner.units import GIB

MiB = 2**20


@pytest.mark.parametrize(
    "link,version,mib",
    [
        ("pcie", "0.19.0", 0),  # SHM transport: host memory; custom all-reduce off without P2P
        ("pcie_p2p", "0.19.0", 2 * 9.1875 + 24),  # 2 channels x (4 MiB + 4.6875 + 0.5) + 3 x 8 MiB
        ("pcie_p2p", "0.30.0", 2 * 9.1875 + 32),  # 0.30's IPC buffer holds reduce-scatter's 16 MiB
        ("nvlink", "0.30.0", 16 * 9.1875 + 32),
    ],
)
def test_buffers_from_their_documented_sizes(link, version, mib):
    assert comm_buffers.tp2_bytes(link, version) == pytest.approx(mib * MiB)


@pytest.mark.parametrize("set_version,runner", [("0.19.0", "v1"), ("0.26.0", "v1"), ("0.30.0", "v2")])
def test_the_coefficient_sets_carry_the_mechanism(set_version, runner):
    """What a plan uses is what the mechanism gives for that release (NVLS aside: measured)."""
    c = overheads.coefficients(set_version, runner)
    comm = {k: a for k, a, _ in c.non_torch_comm_gib}
    mechanism_release = "0.27.0" if set_version >= "0.27" else "0.19.0"
    for link in comm_buffers.classes():
        assert comm[link] == comm_buffers.tp2_gib(link, mechanism_release), link


def _edit(how):
    doc = yaml.safe_load((profiles_dir() / "vllm" / "comm_buffers.yaml").read_text())
    d = copy.deepcopy(doc)
    how(d)
    return d


BAD = [
    ("gap", lambda d: d["custom_all_reduce"][1].update({"from": "0.28.0"}), "gap between 0.27.0 and 0.28.0"),
    ("channels", lambda d: d["classes"]["pcie_p2p"].update(nccl_channels="two"), "expected an integer"),
    ("unknown key", lambda d: d["classes"]["pcie"].update(nvls=True), "unknown nvls"),
    ("bytes", lambda d: d["nccl_connection_bytes"].update(simple=4.5), "whole number of bytes"),
]


@pytest.mark.parametrize("name,how,message", BAD, ids=[b[0] for b in BAD])
def test_bad_table_is_one_line(name, how, message, tmp_path, monkeypatch):
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "comm_buffers.yaml").write_text(yaml.safe_dump(_edit(how)))
    monkeypatch.setattr(comm_buffers, "profiles_dir", lambda: tmp_path)
    comm_buffers._table.cache_clear()
    try:
        with pytest.raises(PlannerError) as e:
            comm_buffers.tp2_bytes("pcie", "0.30.0")
    finally:
        comm_buffers._table.cache_clear()
    assert message in str(e.value) and "comm_buffers.yaml" in str(e.value) and "\n" not in str(e.value)


def test_gib_is_the_bytes():
    assert comm_buffers.tp2_gib("pcie_p2p", "0.30.0") == round(comm_buffers.tp2_bytes("pcie_p2p", "0.30.0") / GIB, 4)
