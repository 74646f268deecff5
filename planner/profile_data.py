"""One checked loader for the data under `profiles/`: versions, typed values and range-keyed tables.

Every table is read into frozen, typed values (a dataclass or NamedTuple schema, checked field by field with
one-line errors that name the file and the entry), and a fact that changes by release is a list of
`{from, until, value}` ranges that must start at the first supported release, leave no gap, never
overlap and stay open at the end. `releases.py` (release facts), `overheads.py` (fitted coefficients)
and every newer table (interconnects, start state, performance coefficients) use this module.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union

import yaml

from planner.datafiles import LOADER, load_yaml, load_yaml_text
from planner.errors import PlannerError
from planner.input_files import read_text

Version = tuple[int, int, int, int]
"""A parsed version, always four parts: 0.19 -> (0, 19, 0, 0), 0.10.1.1 -> (0, 10, 1, 1)."""


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable mapping (so `ReleaseFacts` stays hashable)."""

    __slots__ = ("_d",)

    def __init__(self, data: Mapping[str, Any]):
        self._d = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._d.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"


_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.?post\d+)?(?:\+[0-9A-Za-z.]+)?$")
_PRERELEASE_RE = re.compile(r"(?:rc|a|b|\.?dev)\d*", re.IGNORECASE)


def parse_version(s: str) -> Version:
    """Parse '0.19', '0.19.0', 'v0.19.0', '0.10.1.1' (also '0.19.0+cu128', '0.19.0.post1') into a
    4-tuple. Pre-releases and dev builds ('0.20.0rc1') are refused: which facts they have is unknown."""
    if not isinstance(s, str):
        raise PlannerError(f"vLLM version must be a string like '0.19.0', got {s!r}")
    text = s.strip()
    m = _VERSION_RE.match(text)
    if not m:
        if _PRERELEASE_RE.search(text) and re.match(r"^v?\d+\.\d+", text):
            raise PlannerError(
                f"vLLM version {s!r} is a pre-release or dev build; pass the release it is closest to, e.g. '0.19.0'"
            )
        raise PlannerError(f"cannot read vLLM version {s!r}; write it like '0.19.0', 'v0.19.0' or '0.10.1.1'")
    return tuple(int(g) if g is not None else 0 for g in m.groups())  # type: ignore[return-value]


def format_version(v: Version) -> str:
    """Canonical text of a parsed version: three parts, four only when the fourth is set."""
    return ".".join(str(p) for p in (v if v[3] else v[:3]))


class Range(NamedTuple):
    """One `{from, until, value}` entry: `value` holds for start <= version < until."""

    start: Version
    until: Version | None
    value: Any

    def contains(self, v: Version) -> bool:
        return self.start <= v and (self.until is None or v < self.until)


GENERIC_FIX = "fix the data file"
"""What a `DataError` says to do when its caller names nothing better."""


class DataError(PlannerError):
    """A data file's problem: `{path}: {what}; {fix}` (the fix names what to do about it)."""

    def __init__(self, path: Path, what: str, fix: str = GENERIC_FIX):
        super().__init__(f"{path}: {what}; {fix}")
        self.path, self.what, self.fix = path, what, fix


def data_error(path: Path, what: str) -> PlannerError:
    return DataError(path, what)


class Bounds:
    """A number's allowed range, as `Annotated[float, Bounds(low, high)]` in a schema (both ends included).
    A plain class, not a NamedTuple: defining one costs the plan's start-up ~0.15 ms."""

    __slots__ = ("low", "high")

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high

    def __repr__(self) -> str:
        return f"Bounds({self.low:g}, {self.high:g})"

    def check(self, value: Any, where: str, path: Path) -> None:
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise data_error(path, f"{where}: must be a number in [{self.low:g}, {self.high:g}], got {value!r}")


class _VersionCheck:
    """`VersionText`'s check: the text parses as a release version."""

    def check(self, value: Any, where: str, path: Path) -> None:
        version_field(value, where, path)


VersionText = Annotated[str, _VersionCheck()]
"""A release version kept as its text ('0.19.0'), checked to parse (`parse_version`)."""


def lookup(ranges: tuple[Range, ...], v: Version) -> Any:
    """The value of the range that holds `v` (the ranges were checked to cover every version)."""
    return next(r.value for r in ranges if r.contains(v))


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; missing, unreadable or invalid files are one line."""
    try:
        doc = load_yaml(path)
    except FileNotFoundError:
        raise PlannerError(f"{what} {path} is missing; reinstall vllm-planner") from None
    except (OSError, UnicodeDecodeError) as e:
        raise data_error(path, f"cannot read it ({e})") from None
    except yaml.YAMLError as e:
        raise data_error(path, f"not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise data_error(path, "top level must be a mapping")
    return doc


def refuse_aliases(text: str, path: Path, what: str) -> None:
    """Refuse YAML anchors and aliases in a file a user names: nested aliases expand exponentially (a
    "billion laughs" file) when the entries are walked, and no table here has a use for them."""
    for event in yaml.parse(text, Loader=LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise PlannerError(f"{what} {path} uses YAML anchors or aliases (& / *): write each entry out in full")


def read_user_mapping(path: Path, what: str, limit: int, like: str = "") -> dict[str, Any]:
    """A YAML mapping file a user names (`--gpu-file`): a regular UTF-8 file of at most `limit` bytes
    (planner/input_files.py), no anchors or aliases, the top level a mapping; every problem one line
    naming `what` and the file (`like`: what the mapping should look like, for the error)."""
    text = read_text(path, limit, what)
    try:
        refuse_aliases(text, path, what)
        doc = load_yaml_text(text)
    except RecursionError:
        raise PlannerError(f"{what} {path} nests too deeply; write a flat mapping{like}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise PlannerError(f"{what} {path} is not valid YAML{at}; fix the syntax") from None
    if not isinstance(doc, dict):
        raise PlannerError(f"{what} {path} must be a mapping{like}")
    return doc


def load_table(path: Path, key: str, schema: Any, what: str) -> Any:
    """`doc[key]` of a YAML mapping file converted to `schema` (e.g. `tuple[Row, ...]` for a list of
    rows, `FrozenMap` for a flat mapping), every field checked."""
    doc = read_mapping(path, what)
    if key not in doc:
        raise data_error(path, f"missing top-level key {key!r}")
    return convert(doc[key], schema, key, path)


def load_document(path: Path, schema: Any, what: str, fix: str | None = None) -> Any:
    """A whole YAML mapping file converted to the record `schema`; `fix` replaces the errors' generic
    "fix the data file" (a generated file: which script writes it)."""
    try:
        return convert(read_mapping(path, what), schema, "", path)
    except DataError as e:
        if fix is None:
            raise
        raise DataError(e.path, e.what, fix) from None


def version_field(raw: Any, where: str, path: Path) -> Version:
    if not isinstance(raw, str):
        raise data_error(path, f"{where}: versions must be quoted strings, got {raw!r}")
    try:
        return parse_version(raw)
    except PlannerError as e:
        raise data_error(path, f"{where}: {e}") from None


def _is_record(tp: Any) -> bool:
    """A `typing.NamedTuple` schema (cheaper to define than a frozen dataclass, as frozen)."""
    return isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields")


@functools.cache
def _schema(tp: type) -> tuple[tuple[str, ...], dict[str, Any], tuple[str, ...]]:
    """A schema's field names, their types and the names a file must give (those without a default;
    read once per class: type hints are costly)."""
    if _is_record(tp):
        names, required = tp._fields, tuple(n for n in tp._fields if n not in tp._field_defaults)
    else:
        fields = dataclasses.fields(tp)
        names = tuple(f.name for f in fields)
        no_default = dataclasses.MISSING
        required = tuple(f.name for f in fields if f.default is no_default and f.default_factory is no_default)
    return names, typing.get_type_hints(tp, include_extras=True), required


def convert(value: Any, tp: Any, where: str, path: Path) -> Any:
    """Check `value` (as loaded from YAML) against type `tp` and convert it to the frozen form."""
    if tp is bool:
        if not isinstance(value, bool):
            raise data_error(path, f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise data_error(path, f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise data_error(path, f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise data_error(path, f"{where}: expected a string, got {value!r}")
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], where, path)
    if origin is Annotated:
        out = convert(value, args[0], where, path)
        for check in args[1:]:
            check.check(out, where, path)
        return out
    if origin is Literal:
        if value not in args:
            raise data_error(path, f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise data_error(path, f"{where}: expected a list, got {value!r}")
        item_tp = args[0]
        return tuple(convert(v, item_tp, f"{where}[{i}]", path) for i, v in enumerate(value))
    if tp is FrozenMap:
        if not isinstance(value, dict) or not value:
            raise data_error(path, f"{where}: expected a non-empty mapping, got {value!r}")
        for k, v in value.items():
            if not isinstance(k, str) or isinstance(v, (dict, list)) or v is None:
                raise data_error(path, f"{where}: mapping entries must be name: scalar, got {k!r}: {v!r}")
        return FrozenMap(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise data_error(path, f"{where}: expected a mapping, got {value!r}")
        key_tp, value_tp = args
        return FrozenMap(
            {
                convert(k, key_tp, f"{where} key", path): convert(v, value_tp, f"{where}.{k}", path)
                for k, v in value.items()
            }
        )
    if dataclasses.is_dataclass(tp) or _is_record(tp):
        return _record(value, tp, where, path)
    raise TypeError(f"profile data: no converter for type {tp!r}")  # a bug in this module, not in the data


def convert_fields(value: Mapping[Any, Any], tp: Any, where: str, path: Path, fix: str) -> dict[str, Any]:
    """The fields a mapping gives of the record `tp` (a dataclass or NamedTuple), each converted to its
    field's type, for an entry that may update a record field by field (a user's GPU file): which
    fields must be given is the caller's to say. A key `tp` has no field for is refused, naming the
    nearest field (else `fix`)."""
    names, hints, _ = _schema(tp)
    for key in value:
        if key not in names:
            import difflib  # only for an unknown key

            near = difflib.get_close_matches(str(key), names, n=1)
            raise DataError(path, f"{where}: unknown field {key!r}", f"did you mean {near[0]!r}?" if near else fix)
    return {k: convert(v, hints[k], f"{where}.{k}", path) for k, v in value.items()}


def _record(value: Any, tp: Any, where: str, path: Path) -> Any:
    """A mapping converted to the dataclass or NamedTuple `tp`: every field it has no default for
    given, no other key, each value of its field's type."""
    if not isinstance(value, dict):
        raise data_error(path, f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
    names, hints, required = _schema(tp)
    missing = [n for n in required if n not in value]
    extra = [k for k in value if k not in names]
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(extra)}"] if extra else []
        )
        raise data_error(path, f"{where or 'top level'}: {tp.__name__} {'; '.join(parts)}")
    inner = f"{where}." if where else ""
    return tp(**{n: convert(value[n], hints[n], inner + n, path) for n in names if n in value})


def load_ranges(name: str, raw: Any, tp: Any, first: Version, path: Path) -> tuple[Range, ...]:
    if not isinstance(raw, list) or not raw:
        raise data_error(path, f"fact {name!r} must be a non-empty list of {{from, until, value}} ranges")
    ranges: list[Range] = []
    for i, r in enumerate(raw):
        where = f"fact {name!r} range {i + 1}"
        if not isinstance(r, dict) or "from" not in r or "value" not in r or set(r) - {"from", "until", "value"}:
            raise data_error(path, f"{where}: needs exactly 'from', 'value' and optionally 'until'")
        start = version_field(r["from"], where, path)
        until = version_field(r["until"], where, path) if "until" in r else None
        if until is not None and until <= start:
            raise data_error(
                path, f"{where}: 'until' {format_version(until)} is not after 'from' {format_version(start)}"
            )
        ranges.append(Range(start, until, convert(r["value"], tp, where, path)))
    if ranges[0].start != first:
        raise data_error(
            path, f"fact {name!r} starts at {format_version(ranges[0].start)}, not at {format_version(first)}"
        )
    for a, b in zip(ranges, ranges[1:]):
        if a.until is None:
            raise data_error(path, f"fact {name!r}: a range from {format_version(a.start)} is open but is not the last")
        if b.start < a.until:
            raise data_error(path, f"fact {name!r}: ranges overlap at {format_version(b.start)}")
        if b.start > a.until:
            raise data_error(
                path, f"fact {name!r}: gap between {format_version(a.until)} and {format_version(b.start)}"
            )
    if ranges[-1].until is not None:
        raise data_error(path, f"fact {name!r}: the last range must have no 'until' (covers the newest release)")
    if tp is FrozenMap:
        keys = {frozenset(r.value) for r in ranges}
        if len(keys) > 1:
            raise data_error(path, f"fact {name!r}: every range must have the same keys")
    return tuple(ranges)
