"""argparse value types shared by the subcommands: one message per kind of bad number."""

from __future__ import annotations

import argparse
import math
from typing import Callable, Optional

from planner.units import GIB, MIB


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


# vLLM's human-readable ints (`--max-model-len 32k`): decimal k/m/g, binary K/M/G.
_UNITS = {"k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": MIB, "G": GIB}


def human_int(minimum: int, maximum: int, what: str = "a token count") -> Callable[[str], int]:
    """An int such as 8192, 32k (32,000) or 32K (32,768) in [minimum, maximum]; `infk`, `nank` and
    `1e308K` are refused, not turned into an overflow."""

    def parse(text: str) -> int:
        t = text.strip()
        try:
            if t and t[-1] in _UNITS:
                number = float(t[:-1])
                if not math.isfinite(number) or not math.isfinite(number * _UNITS[t[-1]]):
                    raise ValueError
                value = int(number * _UNITS[t[-1]])
            else:
                value = int(t)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {what} such as 8192, 32k or 32K, got {text!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"expected {what} from {minimum:,} to {maximum:,}, got {text!r}")
        return value

    return parse


def fraction(text: str) -> float:
    """A finite number in (0, 1], such as --gpu-memory-utilization 0.9."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.9, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(f"expected a fraction above 0 and at most 1, such as 0.9, got {text!r}")
    return value


def finite_float(minimum: float, maximum: float, noun: str = "number") -> Callable[[str], float]:
    """A finite float in [minimum, maximum] (`nan` and `inf` are refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {noun}, got {text!r}") from None
        if not (math.isfinite(value) and minimum <= value <= maximum):
            raise argparse.ArgumentTypeError(f"expected a finite {noun} from {minimum:g} to {maximum:g}, got {text!r}")
        return value

    return parse


def word(what: str) -> Callable[[str], str]:
    """A non-empty printable value: `--kv-cache-dtype ''` must not quietly mean the default."""

    def parse(text: str) -> str:
        if not text.strip() or not text.isprintable() or len(text) > 256:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}")
        return text.strip()

    return parse
