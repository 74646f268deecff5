"""Loading and checking `profiles/vllm/releases.yaml`: the supported window, and every fact of
`ReleaseFacts` as `{from, until, value}` ranges through the checked loader (planner/profile_data.py).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from planner.paths import profiles_dir
from planner.profile_data import Range, Version, data_error, load_ranges, read_mapping, version_field
from planner.releases import _DERIVED_FROM_DATA, _META_FIELDS, DATA_FILE, ReleaseFacts


class _Data(NamedTuple):
    """The checked release data: the supported window and each fact's ranges."""

    path: Path
    first: Version
    last_minor: tuple[int, int]
    newest: Version
    releases: tuple[Version, ...]
    facts: Mapping[str, tuple[Range, ...]]


def _fact_fields() -> dict[str, Any]:
    """Data-fact name -> expected type, for every field read from the ranges."""
    hints = typing.get_type_hints(ReleaseFacts)
    out: dict[str, Any] = {}
    for field in ReleaseFacts._fields:
        if field in _META_FIELDS and field not in _DERIVED_FROM_DATA:
            continue
        out[_DERIVED_FROM_DATA.get(field, field)] = str if field in _DERIVED_FROM_DATA else hints[field]
    return out


def _window(doc: dict[str, Any], path: Path) -> tuple[Version, tuple[int, int], Version, tuple[Version, ...]]:
    """(first, last minor, newest, releases) of the supported window, checked against each other."""
    sup = doc["supported"]
    if not isinstance(sup, dict) or "first" not in sup or "last_minor" not in sup:
        raise data_error(path, "'supported' needs 'first' and 'last_minor'")
    first = version_field(sup["first"], "supported.first", path)
    last = version_field(sup["last_minor"], "supported.last_minor", path)
    newest = version_field(doc["newest"], "newest", path)
    if not isinstance(doc["releases"], list) or not doc["releases"]:
        raise data_error(path, "'releases' must be a non-empty list")
    releases = tuple(version_field(r, "releases", path) for r in doc["releases"])
    if list(releases) != sorted(set(releases)):
        raise data_error(path, "'releases' must be sorted and without duplicates")
    if releases[0] != first or releases[-1] != newest:
        raise data_error(path, "'releases' must run from supported.first to newest")
    if (newest[0], newest[1]) != (last[0], last[1]):
        raise data_error(path, "newest must be a release of supported.last_minor")
    return first, (last[0], last[1]), newest, releases


def load_data(path: Path | None = None) -> _Data:
    """Read and validate the release data (the default file when `path` is None)."""
    path = path or profiles_dir() / "vllm" / DATA_FILE
    doc = read_mapping(path, "release data")
    for key in ("supported", "newest", "releases", "facts"):
        if key not in doc:
            raise data_error(path, f"missing top-level key {key!r}")
    first, last_minor, newest, releases = _window(doc, path)
    facts_raw = doc["facts"]
    if not isinstance(facts_raw, dict):
        raise data_error(path, "'facts' must be a mapping of fact name -> ranges")
    expected = _fact_fields()
    missing = sorted(set(expected) - set(facts_raw))
    unknown = sorted(set(facts_raw) - set(expected))
    if missing:
        raise data_error(path, f"facts missing: {', '.join(missing)}")
    if unknown:
        raise data_error(path, f"unknown facts (no ReleaseFacts field): {', '.join(unknown)}")
    facts = {name: load_ranges(name, facts_raw[name], tp, first, path) for name, tp in expected.items()}
    return _Data(path, first, last_minor, newest, releases, types.MappingProxyType(facts))
