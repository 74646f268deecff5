"""The estimate value type: a range that holds its value, finite, in the unit it names."""

import math

import pytest

from planner.errors import PlannerError
from planner.estimate import Estimate
from planner.units import GIB


def test_a_relative_range_brackets_the_value_and_converts_units():
    e = Estimate.relative(10 * GIB, "bytes", under=0.02, over=0.05, source="leave-one-out")
    g = e.scaled(1 / GIB, "GiB")
    assert g.range(2) == [9.8, 10.5] and g.value == 10 and g.unit == "GiB" and not g.is_exact


def test_an_exact_figure_has_no_spread():
    assert Estimate.exact(393_440, "tokens").range() == [393_440, 393_440]


@pytest.mark.parametrize("args", [(1.0, 2.0, 3.0), (5.0, 1.0, 4.0), (math.nan, 0.0, 1.0), (1.0, 0.0, math.inf)])
def test_a_range_that_does_not_hold_its_value_is_refused(args):
    with pytest.raises(PlannerError):
        Estimate(*args, unit="GiB", source="test")


def test_negative_bounds_are_refused():
    with pytest.raises(PlannerError):
        Estimate.relative(1.0, "GiB", under=-0.1, over=0.1, source="test")


def test_plus_minus_clamps_at_its_floor_and_maps_through_a_monotone_function():
    e = Estimate.plus_minus(1.0 * GIB, 1.5 * GIB, "bytes", source="kv error", floor=0)
    assert e.range() == [0, 2.5 * GIB] and not e.is_exact
    blocks = e.through(lambda b: b // (2 * 2**20), "blocks")
    assert (blocks.value, blocks.range(), blocks.unit, blocks.source) == (512, [0, 1280], "blocks", "kv error")
    assert e.to_json(0)["range"] == [0, 2684354560] and e.to_json()["source"] == "kv error"


def test_a_negative_error_is_refused():
    with pytest.raises(PlannerError):
        Estimate.plus_minus(1.0, -0.5, "GiB", source="test")
