"""The one checked loader for profile tables: typed rows, one-line errors naming the file and the
entry, range tables with no gap or overlap; and the tables it now reads (GPU families, the measured
figures the notes quote)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from planner import budget_notes, target
from planner.errors import PlannerError
from planner.profile_data import FrozenMap, convert, load_ranges, lookup, parse_version, read_mapping
from planner.target import Families, Target

P = Path("t.yaml")
FIRST = parse_version("0.10.0")


def _ranges(*rows):
    return load_ranges("f", list(rows), int, FIRST, P)


def test_a_range_table_gives_each_version_its_value():
    r = _ranges({"from": "0.10.0", "until": "0.15.0", "value": 1}, {"from": "0.15.0", "value": 2})
    assert [lookup(r, parse_version(v)) for v in ("0.10.0", "0.14.9", "0.15.0", "0.33.0")] == [1, 1, 2, 2]


@pytest.mark.parametrize(
    "rows,message",
    [
        (
            [{"from": "0.10.0", "until": "0.14.0", "value": 1}, {"from": "0.15.0", "value": 2}],
            "gap between 0.14.0 and 0.15.0",
        ),
        ([{"from": "0.10.0", "until": "0.16.0", "value": 1}, {"from": "0.15.0", "value": 2}], "overlap at 0.15.0"),
        ([{"from": "0.11.0", "value": 1}], "starts at 0.11.0"),
        ([{"from": "0.10.0", "until": "0.12.0", "value": 1}], "last range must have no 'until'"),
        ([{"from": "0.10.0", "value": "one"}], "expected an integer"),
        ([{"from": 0.1, "value": 1}], "quoted strings"),
        ([{"from": "0.10.0", "value": 1, "extra": 2}], "exactly 'from', 'value'"),
        ([], "non-empty list"),
    ],
)
def test_a_bad_range_table_is_one_line(rows, message):
    with pytest.raises(PlannerError) as e:
        load_ranges("f", rows, int, FIRST, P)
    assert message in str(e.value) and "t.yaml" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "value,tp,message",
    [
        (
            {"families": [], "perf_families": [], "fp8_weight_only_min_capability": "7.5", "non_cuda": "other"},
            Families,
            "missing default_compute_capability",
        ),
        (
            {
                "families": [{"name": "x", "min_major": "9"}],
                "perf_families": [],
                "fp8_weight_only_min_capability": "7.5",
                "non_cuda": "o",
                "default_compute_capability": "9.0",
            },
            Families,
            "expected an integer",
        ),
        ({"a": {"b": 1}}, FrozenMap, "name: scalar"),
        (True, int, "expected an integer"),
    ],
)
def test_typed_values_are_checked_field_by_field(value, tp, message):
    with pytest.raises(PlannerError, match=message):
        convert(value, tp, "where", P)


def test_a_missing_or_broken_file_is_one_line(tmp_path):
    with pytest.raises(PlannerError, match="missing"):
        read_mapping(tmp_path / "none.yaml", "table")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(PlannerError, match="not valid YAML"):
        read_mapping(tmp_path / "bad.yaml", "table")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(PlannerError, match="top level must be a mapping"):
        read_mapping(tmp_path / "list.yaml", "table")


# GPUs whose family vLLM's MLA choice turns on (compute capabilities from NVIDIA's CUDA GPU list).
@pytest.mark.parametrize(
    "cc,family",
    [
        ("8.0", "ampere"),
        ("8.6", "ampere"),
        ("8.9", "ampere"),
        ("9.0", "hopper"),
        ("10.0", "blackwell"),
        ("10.3", "blackwell"),
        ("12.0", "sm120"),
        ("gfx942", "other"),
        ("tpu-v5e", "other"),
        (None, "hopper"),
    ],
)
def test_gpu_families_come_from_the_table(cc, family):
    assert Target("g", 1, compute_capability=cc).arch_family == family


@pytest.mark.parametrize(
    "cc,family",
    [
        ("7.5", "turing"),
        ("8.6", "ampere"),
        ("9.0", "hopper"),
        ("10.0", "blackwell"),
        ("12.0", "blackwell"),
        (None, "other"),
        ("gfx942", "other"),
        ("6.1", "other"),
    ],
)
def test_perf_families_come_from_the_table(cc, family):
    """The coefficient set's family (sm120 measured with data-centre Blackwell); no compute capability: none."""
    assert target.gpu_families().perf_of(cc) == family


def test_fp8_weight_only_threshold_is_data(tmp_path, monkeypatch):
    from planner import hardware

    doc = yaml.safe_load((target.profiles_dir() / "gpu_families.yaml").read_text())
    t4 = next(g for g in hardware.load_catalogue().gpus if g.name == "T4")
    assert hardware._fp8_support(t4) == "weight-only"  # 7.5, FP8-Marlin
    doc["fp8_weight_only_min_capability"] = "8.0"
    (tmp_path / "gpu_families.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(target, "profiles_dir", lambda: tmp_path)
    target.gpu_families.cache_clear()
    try:
        assert hardware._fp8_support(t4) == "no"
    finally:
        target.gpu_families.cache_clear()


def test_gpu_family_table_must_rise(tmp_path, monkeypatch):
    (tmp_path / "gpu_families.yaml").write_text(
        yaml.safe_dump(
            {
                "families": [
                    {"name": "a", "min_major": 0},
                    {"name": "b", "min_major": 9},
                    {"name": "c", "min_major": 9},
                ],
                "perf_families": [{"name": "other", "min_major": 0}],
                "fp8_weight_only_min_capability": "7.5",
                "non_cuda": "other",
                "default_compute_capability": "9.0",
            }
        )
    )
    monkeypatch.setattr(target, "profiles_dir", lambda: tmp_path)
    target.gpu_families.cache_clear()
    try:
        with pytest.raises(PlannerError, match="rise strictly"):
            target.gpu_families()
    finally:
        target.gpu_families.cache_clear()


def test_the_observations_the_notes_quote_are_data():
    obs = budget_notes.observations()
    assert obs["v2_runner_cudagraphs_outside_budget"].text() == "1.00 GiB measured for Qwen3-8B on an H200, vLLM 0.26"
    assert all(o.source.startswith("benchmarks/data/") for o in obs.values())
    assert all((Path(__file__).parent.parent / o.source.split()[0]).is_file() for o in obs.values())


def test_the_uncertainty_table_is_a_checked_range_table(tmp_path, monkeypatch):
    from planner import uncertainty

    doc = yaml.safe_load((Path(uncertainty.__file__).parent.parent / "profiles/vllm/uncertainty.yaml").read_text())
    doc["families"][1]["from"] = "0.21.0"  # a gap after the first family's `until`
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "uncertainty.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(uncertainty, "profiles_dir", lambda: tmp_path)
    uncertainty._table.cache_clear()
    try:
        with pytest.raises(PlannerError, match="gap between"):
            uncertainty._table()
    finally:
        uncertainty._table.cache_clear()
