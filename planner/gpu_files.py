"""Reading and checking GPU files (the bundled `profiles/gpus.yaml` and a user's `--gpu-file`) through the
checked loader (planner/profile_data.py): each entry's fields typed as `GPU`'s, one line per problem
naming the file and the entry; a user's file also bounded in size, without YAML anchors, with printable names.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from planner.errors import PlannerError
from planner.hardware import GPU, _canon
from planner.profile_data import GENERIC_FIX, DataError, convert, convert_fields, read_mapping, read_user_mapping

_REQUIRED = ("name", "vendor", "memory_gib", "bandwidth_tbs")
_TUPLE_FIELDS = ("aliases", "sources")
_TEXT_FIELDS = ("name", "vendor", "compute_capability")
"""Read as text even when YAML reads a number (`compute_capability: 9.0`, `name: 4090`)."""
_AS_FLOAT = ("memory_gb", "memory_gib", "bandwidth_tbs", "nvlink_gbs", "scaleup_gbs")
"""The figures read as floats even when written whole; the others keep a whole number as written
(`bf16_tflops: 989` prints as 989 in `gpus --json`)."""
_FIELDS_HINT = "see profiles/gpus.yaml for the fields"
_LIKE = " with a `gpus:` list, like profiles/gpus.yaml"


_NAME_MAX_CHARS = 100


GPU_FILE_LIMIT = 4 * 2**20
"""The bundled catalogue is about 60 KiB."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _one_line(e: DataError) -> PlannerError:
    fix = e.fix if e.fix != GENERIC_FIX else "fix the value (profiles/gpus.yaml shows each field)"
    return PlannerError(f"GPU file {e.path}: {e.what}; {fix}")


def read_yaml(path: Path, user: bool = True) -> tuple[list[Any], dict[str, str]]:
    """The file's `gpus:` entries (unchecked) and its `sources:` (tag -> description)."""
    if user:
        data = read_user_mapping(path, "GPU file", GPU_FILE_LIMIT, _LIKE)
    else:  # ours: no size bound, and parsing it twice for anchors would slow every plan
        data = read_mapping(path, "GPU catalogue")
    if not isinstance(data.get("gpus"), list):
        raise PlannerError(f"GPU file {path} must be a mapping{_LIKE}")
    try:
        sources = convert(data.get("sources"), Optional[dict[str, str]], "sources", path)
    except DataError:
        raise PlannerError(f"GPU file {path}: `sources:` must map tags to descriptions") from None
    return data["gpus"], dict(sources or {})


def check_entry(raw: Any, path: Path, position: int) -> dict[str, Any]:
    """The fields an entry gives, each converted to the type of `GPU`'s field (text fields from numbers,
    a null list as empty); the names and aliases printable and short."""
    if not isinstance(raw, dict):
        raise PlannerError(f"GPU file {path}: entry {position} is not a mapping; write `- name: ...` entries")
    if raw.get("name") is None:
        raise PlannerError(f"GPU file {path}: an entry has no name; give each entry a `name:`")
    label = f"entry {raw.get('name', position)!r}"
    entry = dict(raw)
    for key in _TEXT_FIELDS:
        if _is_number(entry.get(key)):
            entry[key] = str(entry[key])
    for key in _TUPLE_FIELDS:
        if key in entry and entry[key] is None:
            entry[key] = []
        elif isinstance(entry.get(key), list):
            entry[key] = [str(v) if _is_number(v) else v for v in entry[key]]
    try:
        entry = convert_fields(entry, GPU, label, path, _FIELDS_HINT)
    except DataError as e:
        raise _one_line(e) from None
    for key, value in raw.items():
        if type(value) is int and key not in _AS_FLOAT and isinstance(entry[key], float):
            entry[key] = value
    for text in [entry.get("name") or "", *entry.get("aliases", ())]:
        if len(text) > _NAME_MAX_CHARS or not text.isprintable():
            raise PlannerError(
                f"GPU file {path}: {label}: the name or alias {text[:40]!r} must be printable text of at most "
                f"{_NAME_MAX_CHARS} characters (no control characters or line breaks); rename it"
            )
    return entry


def build(entry: dict[str, Any], path: Path) -> GPU:
    missing = [key for key in _REQUIRED if entry.get(key) is None]
    if missing:
        raise PlannerError(
            f"GPU file {path}: entry {entry.get('name', '?')!r} lacks {', '.join(missing)}; add them "
            "(memory_gib is the total torch reports)"
        )
    try:
        return GPU(**entry)
    except TypeError as exc:  # defensive: unknown keys are caught earlier
        raise PlannerError(f"GPU file {path}: entry {entry.get('name', '?')!r}: {exc}") from None


def load_file(path: Path, user: bool = True) -> tuple[list[dict[str, Any]], dict[str, str]]:
    raw_entries, notes = read_yaml(path, user)
    entries = [check_entry(raw, path, i + 1) for i, raw in enumerate(raw_entries)]
    seen: dict[str, str] = {}
    for entry in entries:
        if not entry.get("name"):
            raise PlannerError(f"GPU file {path}: an entry has no name; give each entry a `name:`")
        key = _canon(entry["name"])
        if key in seen:
            raise PlannerError(f"GPU file {path}: {entry['name']!r} appears twice; keep one entry per GPU")
        seen[key] = entry["name"]
    return entries, notes


def check_aliases(gpus: list[GPU], path: Path) -> None:
    owner: dict[str, str] = {}
    for gpu in gpus:
        for text in (gpu.name, *gpu.aliases):
            key = _canon(text)
            if owner.setdefault(key, gpu.name) != gpu.name:
                raise PlannerError(
                    f"GPU file {path}: {text!r} names both {owner[key]} and {gpu.name}; make the alias unique"
                )


def merge(base: GPU, override: dict[str, Any], path: Path) -> GPU:
    """`base` updated with the fields a user entry gives; aliases and sources are added, not replaced."""
    where = f"user file {path.name}"
    fields = {k: v for k, v in override.items() if k != "name"}
    fields["aliases"] = tuple(dict.fromkeys(base.aliases + override.get("aliases", ())))
    fields["sources"] = tuple(dict.fromkeys(base.sources + (override.get("sources") or (where,))))
    if "memory_gib" in override:
        fields.setdefault("memory_gib_measured", False)
        fields.setdefault("memory_note", f"set in {where}")
    if "price_per_gpu_hour_usd" in override:
        fields.setdefault("price_source", where)
        fields.setdefault("price_date", None)
    try:
        return dataclasses.replace(base, **fields)
    except TypeError as exc:  # defensive
        raise PlannerError(f"GPU file {path}: entry {base.name!r}: {exc}") from None
