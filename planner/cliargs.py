"""argparse value types shared by the subcommands: one message per kind of bad number."""

from __future__ import annotations

import argparse
import math
from typing import Callable, Optional


def int_range(minimum: int, maximum: Optional[int] = None, what: str = "an integer") -> Callable[[str], int]:
    """An int in [minimum, maximum]; argparse turns the error into a one-line usage message."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"{minimum}-{maximum}" if maximum is not None else f"of at least {minimum}"
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}")
        return value
    return parse


def positive_float(noun: str = "number", maximum: float = 1e9) -> Callable[[str], float]:
    """A finite float in (0, maximum], e.g. positive_float("number of seconds")."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {noun}, got {text!r}") from None
        if not math.isfinite(value) or value <= 0 or value > maximum:
            raise argparse.ArgumentTypeError(f"expected a positive {noun} of at most {maximum:g}, got {text!r}")
        return value
    return parse
