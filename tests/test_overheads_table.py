"""profiles/vllm/overheads.yaml through the checked loader: the bundled file loads, every term it may
give is a Coefficients field, and each kind of bad data is a one-line error naming the file and the entry."""

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from planner import overhead_table, overheads
from planner.errors import PlannerError
from planner.paths import profiles_dir

PATH = profiles_dir() / "vllm" / "overheads.yaml"
DOC = yaml.safe_load(PATH.read_text())


def test_terms_are_the_coefficients_fields():
    names = {f.name for f in dataclasses.fields(overheads.Coefficients)} - {"source", "validated", "calibration"}
    assert set(overhead_table.TERMS) == names


def test_bundled_table_covers_every_release_once():
    t = overheads._table()
    main = [s for s in t.sets if s.runner is None]
    assert main and all(s.match is None for s in t.sets)
    for version in ("0.10.0", "0.16.0", "0.19.0", "0.26.0", "0.30.0", "0.33.0"):
        v = overhead_table.version_field(version, "t", PATH)
        assert sum(s.covers(v) for s in main) == 1


@pytest.mark.parametrize(
    "version,family,size", [("0.29.0", "blackwell", 512), ("0.30.0", "blackwell", 1024), ("0.30.0", "hopper", 512)]
)
def test_capture_max_size_by_family(version, family, size):
    assert overheads.capture_max_size(version, family) == size


def _edit(doc, how):
    d = copy.deepcopy(doc)
    how(d)
    return d


def _set(d, name):
    return next(x for x in d["sets"] if x["name"] == name)


BAD = [
    (
        "unknown term",
        lambda d: _set(d, "base")["coefficients"].update(sampler_copies=3),
        "unknown term 'sampler_copies'",
    ),
    ("wrong type", lambda d: _set(d, "base")["coefficients"].update(sampler_logits="3.6"), "expected a number"),
    ("gap", lambda d: _set(d, "older-sampler").update(until="0.16.0"), "gap between 0.16.0 and 0.17.0"),
    ("overlap", lambda d: _set(d, "base").update({"from": "0.16.0"}), "overlap"),
    ("unknown base", lambda d: _set(d, "older-sampler").update(base="basis"), "base 'basis' is not a set"),
    ("until before from", lambda d: _set(d, "runner-v2").update(until="0.25.0"), "is not after 'from'"),
    ("unknown key", lambda d: _set(d, "base").update(notes="x"), "unknown notes"),
    ("unquoted version", lambda d: _set(d, "base").update({"from": 0.17}), "versions must be quoted strings"),
    ("runner", lambda d: _set(d, "runner-v2").update(runner="v3"), "is not one of"),
    ("non-torch key", lambda d: _set(d, "base")["coefficients"]["non_torch_gib"].update(tp3=1.0), "unknown key 'tp3'"),
    ("comm buffers", lambda d: _set(d, "base")["coefficients"]["non_torch_comm_gib"]["pcie"].pop("tp2"), "missing tp2"),
    ("match in bundled", lambda d: _set(d, "base").update(match={"gpu": "L4", "interconnect": None, "tp": 1}), "match"),
    ("capture gap", lambda d: d["capture_max_size"]["blackwell"][1].update({"from": "0.31.0"}), "gap between 0.30.0"),
]


@pytest.mark.parametrize("name,how,message", BAD, ids=[b[0] for b in BAD])
def test_bad_data_is_one_line_naming_file_and_entry(name, how, message, tmp_path: Path):
    bad = tmp_path / "overheads.yaml"
    bad.write_text(yaml.safe_dump(_edit(DOC, how), sort_keys=False))
    with pytest.raises(PlannerError) as e:
        overhead_table.load(bad, overheads._first())
    text = str(e.value)
    assert message in text and str(bad) in text and "\n" not in text
