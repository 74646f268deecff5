"""The performance coefficient file through the checked loader's schema: every field typed and bounded,
each broken file one line naming the file, the key and the fix; the file's schema follows the model's
coefficients, so a coefficient the model gains cannot go unchecked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from planner.errors import PlannerError
from planner.perf import coefficients as co
from planner.perf.step import Coefficients

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "profiles" / "perf" / "coefficients.yaml"


def _set0(d):
    return d["sets"][0]


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: _set0(d)["coefficients"].update(compute_fraction=0.0),
            "sets[0].coefficients.compute_fraction: must",
        ),
        (lambda d: _set0(d)["coefficients"].update(burst_share=1.2), "burst_share: must be a number in [0, 1]"),
        (lambda d: _set0(d)["coefficients"].update(step_floor_ms=-1), "step_floor_ms: must be a number in [0, 10000]"),
        (lambda d: _set0(d)["coefficients"].update(allreduce_us=float("nan")), "allreduce_us: must be a number"),
        (lambda d: _set0(d)["coefficients"].update(layer_floor_us="2"), "layer_floor_us: expected a number"),
        (lambda d: _set0(d)["coefficients"].update(launch_us=1.0), "CoefficientsRow unknown launch_us"),
        (lambda d: _set0(d).update(colour="red"), "sets[0]: SetRow unknown colour"),
        (lambda d: _set0(d).pop("fitted_on"), "sets[0]: SetRow missing fitted_on"),
        (lambda d: _set0(d)["releases"].update(last="soon"), "sets[0].releases.last: cannot read vLLM version"),
        (lambda d: _set0(d)["fitted_releases"].append(0.5), "fitted_releases[1]: expected a string"),
        (lambda d: _set0(d)["held_out_error"].update(e2e=_set0(d)["held_out_error"]["throughput"]), "key: 'e2e'"),
        (lambda d: _set0(d)["held_out_error"]["throughput"].update(rows=2.5), "throughput.rows: expected an integer"),
        (lambda d: _set0(d)["held_out_error"]["throughput"].update(p10=0.5, p90=0.1), "throughput: p10 above p90"),
        (lambda d: d.update(sets=[]), "`sets:` is empty"),
        (lambda d: d.update(schema_version=2), "schema_version: 2 is not one of [1]"),
    ],
)
def test_a_broken_coefficient_file_is_one_line_naming_file_key_and_fix(tmp_path, edit, message):
    doc = yaml.safe_load(BUNDLED.read_text())
    edit(doc)
    path = tmp_path / "coefficients.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PlannerError) as e:
        co.load(path)
    text = str(e.value)
    assert message in text and str(path) in text and "\n" not in text
    assert text.endswith("; rerun benchmarks/fit_perf.py (it writes this file)")


def test_a_coefficient_with_a_default_may_be_left_out_and_keeps_the_models_default(tmp_path):
    doc = yaml.safe_load(BUNDLED.read_text())
    for s in doc["sets"]:
        s["coefficients"].pop("link_fraction")
        s["coefficients"].pop("burst_share")
    path = tmp_path / "coefficients.yaml"
    path.write_text(yaml.safe_dump(doc))
    default = Coefficients(1, 1, 0, 0, 0, 0)
    for s in co.load(path):
        assert (s.coefficients.link_fraction, s.coefficients.burst_share) == (
            default.link_fraction,
            default.burst_share,
        )


def test_the_file_schema_has_a_bounded_line_for_every_coefficient_of_the_model():
    model = [(f.name, f.default) for f in dataclasses.fields(Coefficients)]
    row = co.CoefficientsRow
    schema = [(n, row._field_defaults.get(n, dataclasses.MISSING)) for n in row._fields]
    assert schema == model, "add the coefficient, with its bounds, to perf/coefficients.py CoefficientsRow"


def test_the_bundled_sets_keep_their_figures():
    sets = {s.name: s for s in co.bundled()}
    raw = {s["name"]: s for s in yaml.safe_load(BUNDLED.read_text())["sets"]}
    assert set(sets) == set(raw)
    for name, s in sets.items():
        assert dataclasses.asdict(s.coefficients) == raw[name]["coefficients"]
        assert {k: vars(v) for k, v in s.held_out.items()} == raw[name]["held_out_error"]
        assert (s.first, s.last) == (raw[name]["releases"]["first"], raw[name]["releases"]["last"])
