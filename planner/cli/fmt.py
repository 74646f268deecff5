"""Text output shared by the subcommands: counts, GiB and tables."""

from __future__ import annotations

from typing import Any, Sequence

from planner.units import GIB


def fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def fmt_gib(b: int | float | None) -> str:
    return "-" if b is None else f"{b / GIB:,.2f} GiB"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], **kw: Any) -> str:
    from tabulate import tabulate  # small, but only the table-printing commands need it

    return tabulate(rows, headers=headers, disable_numparse=True, **kw)
