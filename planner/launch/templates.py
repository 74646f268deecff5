"""Templates as data: YAML files under `deploy/templates/` with `${name}` placeholders, filled by
value into the parsed documents (never pasted into text), then written back as YAML.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml

from planner.errors import PlannerError
from planner.launch.escape import comment_block, escape
from planner.paths import deploy_dir

OMIT = object()
"""A placeholder value that removes its key (or list item) from the output."""

_WHOLE = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")


def template_dir() -> Path:
    return deploy_dir() / "templates"


@functools.cache
def template_text(rel_path: str) -> str:
    """A template's raw text (shell templates are filled as text, with pre-quoted words)."""
    path = template_dir() / rel_path
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlannerError(f"deployment template {path} is missing; reinstall vllm-planner") from None


@functools.cache
def _read(rel_path: str) -> tuple[str, list[Any]]:
    text = template_text(rel_path)
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    return text, docs


def header(rel_path: str) -> list[str]:
    """The leading comment lines of a template (without '# '), placeholders unfilled."""
    text, _ = _read(rel_path)
    out = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        out.append(line[2:] if line.startswith("# ") else line[1:])
    return out


def documents(rel_path: str) -> list[Any]:
    """The template's YAML documents, parsed (a fresh copy each call)."""
    return _copy(_read(rel_path)[1])


def _copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


def fill(obj: Any, values: dict[str, Any], where: str = "") -> Any:
    """Replace the placeholders of one parsed document; OMIT drops the key or item."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            filled = fill(v, values, f"{where}.{k}")
            if filled is not OMIT:
                out[fill(k, values, where)] = filled
        return out
    if isinstance(obj, list):
        return [x for x in (fill(v, values, f"{where}[]") for v in obj) if x is not OMIT]
    if isinstance(obj, str):
        return fill_text(obj, values, where)
    return obj


def fill_text(text: str, values: dict[str, Any], where: str = "") -> Any:
    whole = _WHOLE.fullmatch(text)
    if whole:
        return _lookup(whole.group(1), values, where)

    def one(m: re.Match[str]) -> str:
        v = _lookup(m.group(1), values, where)
        if v is OMIT or isinstance(v, (dict, list)):
            raise PlannerError(f"template placeholder ${{{m.group(1)}}} at {where} must be text inside a string")
        return str(v)

    return _WHOLE.sub(one, text)


def _lookup(name: str, values: dict[str, Any], where: str) -> Any:
    if name not in values:
        raise PlannerError(
            f"deployment template uses ${{{name}}} at {where or 'top'}, which vllm-planner does not fill"
        )
    return values[name]


class _Dumper(yaml.SafeDumper):
    """Block style, keys in template order, long lines kept whole, lists indented under keys."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # A literal block for plain multi-line text; double quotes (every unsafe character escaped) for text
    # holding any other line break or control character, which plain and single-quoted styles would
    # fold into a space (NEL) or write raw (ESC); PyYAML's own choice otherwise.
    lines = text.split("\n")
    if len(lines) > 1 and all(escape(line) == line for line in lines) and not text.endswith(" "):
        style: str | None = "|"
    else:
        style = None if escape(text) == text else '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def dump(docs: list[Any], head: list[str]) -> str:
    """YAML text of the documents, after a comment header."""
    comment = comment_block(head)
    body = yaml.dump_all(
        docs,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=1 << 16,
        allow_unicode=True,
        explicit_start=len(docs) > 1,
    )
    return comment + body


def render(rel_path: str, values: dict[str, Any], extra_head: list[str] | None = None) -> str:
    """Fill a template and write it as YAML, its header comment filled too."""
    docs = [fill(d, values, rel_path) for d in documents(rel_path)]
    head = [fill_text(line, _textual(values)) for line in header(rel_path)] + (extra_head or [])
    return dump(docs, head)


def _textual(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, (str, int, float))}
