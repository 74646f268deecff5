"""One small value type for a modelled figure: the value, the range its validation supports, its unit
and where both come from (as aiconfigurator's `PerformanceResult` carries its provenance). Used by
the memory budget, training and the performance model wherever a figure is estimated, not exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from planner.errors import PlannerError


@dataclass(frozen=True)
class Estimate:
    """A modelled figure with its range.

    The range is the spread the figure's own validation showed (cross-validated error on real runs,
    or a stated bound where none exists); `exact` figures have low == value == high. Construct with
    `exact`, `relative` (fractions under/over) or `plus_minus` (an absolute error); derive figures with
    `through` (a monotone function: bytes -> tokens) or `scaled` (another unit); write out with
    `range` or `to_json`."""

    value: float
    low: float
    """Lower end of the range, in `unit`."""
    high: float
    """Upper end of the range, in `unit`."""
    unit: str
    """e.g. "bytes", "tokens", "ms", "requests"."""
    source: str
    """What the range was derived from: "leave-one-GPU-class-out error on 90 start-ups", "exact"."""
    extrapolated: bool = False
    """True where the figure lies outside the envelope its data covers (another GPU class or release)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and math.isfinite(self.low) and math.isfinite(self.high)):
            raise PlannerError(
                f"estimate of {self.value!r} {self.unit} has a non-finite range [{self.low}, {self.high}]"
            )
        if not self.low <= self.value <= self.high:
            raise PlannerError(
                f"estimate {self.value:g} {self.unit} lies outside its range [{self.low:g}, {self.high:g}]"
            )

    @classmethod
    def exact(cls, value: float, unit: str) -> "Estimate":
        return cls(value, value, value, unit, "exact")

    @classmethod
    def relative(
        cls, value: float, unit: str, under: float, over: float, source: str, extrapolated: bool = False
    ) -> "Estimate":
        """`value` whose truth may lie `under` (fraction) below it to `over` above it, e.g. 0.02 / 0.05."""
        if under < 0 or over < 0:
            raise PlannerError(f"relative error bounds must be >= 0, got -{under} / +{over}")
        lo, hi = sorted((value * (1 - under), value * (1 + over)))
        return cls(value, min(lo, value), max(hi, value), unit, source, extrapolated)

    @classmethod
    def plus_minus(
        cls, value: float, error: float, unit: str, source: str, extrapolated: bool = False, floor: float | None = None
    ) -> "Estimate":
        """`value` +- `error` (in `unit`), the low end clamped at `floor` where the figure cannot go below it."""
        if error < 0:
            raise PlannerError(f"an error bound must be >= 0, got {error}")
        low = value - error if floor is None else min(value, max(floor, value - error))
        return cls(value, low, value + error, unit, source, extrapolated)

    def through(self, fn: Callable[[float], float], unit: str) -> "Estimate":
        """The figure a monotone function of this one gives, with the range mapped end to end (KV bytes
        -> tokens); the same source and extrapolation."""
        lo, hi = sorted((fn(self.low), fn(self.high)))
        return Estimate(fn(self.value), lo, hi, unit, self.source, self.extrapolated)

    def to_json(self, digits: int | None = None) -> dict[str, Any]:
        """{value, range, unit, source, extrapolated}: how a figure with its provenance is written out."""
        value = self.value if digits is None else round(self.value, digits)
        return {
            "value": value,
            "range": self.range(digits),
            "unit": self.unit,
            "source": self.source,
            "extrapolated": self.extrapolated,
        }

    @property
    def is_exact(self) -> bool:
        return self.low == self.value == self.high

    def scaled(self, factor: float, unit: str) -> "Estimate":
        """The same estimate in another unit (bytes -> GiB: factor 1 / 2**30)."""
        lo, hi = sorted((self.low * factor, self.high * factor))
        return Estimate(self.value * factor, lo, hi, unit, self.source, self.extrapolated)

    def range(self, digits: int | None = None) -> list[float]:
        """[low, high], rounded for display (`--json` `*_range` keys)."""
        if digits is None:
            return [self.low, self.high]
        return [round(self.low, digits), round(self.high, digits)]
