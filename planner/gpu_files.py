"""Reading and checking GPU files (the bundled `profiles/gpus.yaml` and a user's `--gpu-file`): one
line per problem naming the file and the entry, no YAML anchors, bounded size, printable names.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from planner.datafiles import LOADER as _YamlLoader
from planner.errors import PlannerError
from planner.hardware import GPU, _canon
from planner.input_files import read_text

_FIELDS = {f.name: f for f in dataclasses.fields(GPU)}
_REQUIRED = ("name", "vendor", "memory_gib", "bandwidth_tbs")
_TUPLE_FIELDS = ("aliases", "sources")


_NAME_MAX_CHARS = 100


GPU_FILE_LIMIT = 4 * 2**20
"""The bundled catalogue is about 60 KiB."""


def _no_aliases(text: str, path: Path) -> None:
    """Refuse YAML anchors and aliases: nested aliases expand exponentially (a "billion laughs"
    file) when the entries are walked, and a GPU list has no use for them."""
    for event in yaml.parse(text, Loader=_YamlLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise PlannerError(f"GPU file {path} uses YAML anchors or aliases (& / *): write each entry out in full")


def read_yaml(path: Path, user: bool = True) -> dict[str, Any]:
    text = read_text(path, GPU_FILE_LIMIT, "GPU file")
    try:
        if user:  # the bundled file is ours, and parsing it twice would slow every plan
            _no_aliases(text, path)
        data = yaml.load(text, Loader=_YamlLoader)
    except RecursionError:
        raise PlannerError(
            f"GPU file {path} nests too deeply; write a flat `gpus:` list like profiles/gpus.yaml"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise PlannerError(f"GPU file {path} is not valid YAML{at}; fix the syntax") from None
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise PlannerError(f"GPU file {path} must be a mapping with a `gpus:` list, like profiles/gpus.yaml")
    sources = data.get("sources") or {}
    if not isinstance(sources, dict):
        raise PlannerError(f"GPU file {path}: `sources:` must map tags to descriptions")
    return data


def check_entry(raw: Any, path: Path, position: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise PlannerError(f"GPU file {path}: entry {position} is not a mapping; write `- name: ...` entries")
    label = f"GPU file {path}: entry {raw.get('name', position)!r}"
    for key in raw:
        if key not in _FIELDS or key.startswith("_"):
            near = _close_matches(str(key), list(_FIELDS), n=1)
            hint = f"did you mean {near[0]!r}?" if near else "see profiles/gpus.yaml for the fields"
            raise PlannerError(f"{label}: unknown field {key!r}; {hint}")
    entry = dict(raw)
    for key in _TUPLE_FIELDS:
        if key in entry:
            value = entry[key]
            if value is None:
                value = []
            if isinstance(value, str) or not isinstance(value, list):
                raise PlannerError(f'{label}: {key} must be a list, e.g. {key}: ["..."]')
            entry[key] = tuple(str(v) for v in value)
    for key in ("name", "vendor", "compute_capability"):
        if key in entry and entry[key] is not None and not isinstance(entry[key], str):
            entry[key] = str(entry[key])
    for text in [entry.get("name") or "", *entry.get("aliases", ())]:
        if len(text) > _NAME_MAX_CHARS or not text.isprintable():
            raise PlannerError(
                f"{label}: the name or alias {text[:40]!r} must be printable text of at most "
                f"{_NAME_MAX_CHARS} characters (no control characters or line breaks); rename it"
            )
    for key in ("memory_gb", "memory_gib", "bandwidth_tbs", "nvlink_gbs", "scaleup_gbs"):
        if isinstance(entry.get(key), int) and not isinstance(entry.get(key), bool):
            entry[key] = float(entry[key])
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
    data = read_yaml(path, user)
    entries = [check_entry(raw, path, i + 1) for i, raw in enumerate(data["gpus"])]
    seen: dict[str, str] = {}
    for entry in entries:
        if not entry.get("name"):
            raise PlannerError(f"GPU file {path}: an entry has no name; give each entry a `name:`")
        key = _canon(entry["name"])
        if key in seen:
            raise PlannerError(f"GPU file {path}: {entry['name']!r} appears twice; keep one entry per GPU")
        seen[key] = entry["name"]
    notes = {str(k): str(v) for k, v in (data.get("sources") or {}).items()}
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


def _close_matches(word: str, possibilities: list[str], n: int, cutoff: float = 0.6) -> list[str]:
    import difflib  # only when a name is unknown

    return difflib.get_close_matches(word, possibilities, n=n, cutoff=cutoff)
