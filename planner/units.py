"""Byte units, and the one place figures in bytes become GiB for people (CLI, `--json`)."""

from __future__ import annotations

GIB = 2**30
MIB = 2**20


def gib(n_bytes: float, digits: int = 2) -> float:
    """Bytes as GiB rounded for display; the planner computes in bytes and rounds only here."""
    return round(n_bytes / GIB, digits)
