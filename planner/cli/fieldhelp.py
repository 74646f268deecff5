"""Flag help from the field docstrings of the dataclass the flag fills, as vLLM's `get_kwargs` reads
its config classes' attribute docstrings: the help and the code's documentation cannot drift.

A flag's help is the first sentence of its field's docstring (the rest is for readers of the code),
then what the CLI adds (the spellings it accepts) and the default as the CLI applies it. The source
is read with `ast` (1.5-10 ms for planner/target.py on a busy machine), so only for a parser that
may print its help: `build_parser` turns it off for a command line that asks for no help.
"""

from __future__ import annotations

import functools

_enabled = True


def enable(on: bool) -> None:
    """Read the docstrings (a parser that may print help) or not (a parser built to run one command)."""
    global _enabled
    _enabled = on


@functools.cache
def field_docs(module: str, cls: str) -> dict[str, str]:
    """{field: docstring, whitespace collapsed} of the class `cls` in `module` (read, not imported)."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    docs = {}
    for field, doc in zip(node.body, node.body[1:]):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)
        ):
            docs[field.target.id] = " ".join(doc.value.value.split())
    return docs


def first_sentence(doc: str) -> str:
    """'Tokens per block. None: ...' -> 'tokens per block' (lower-cased start, no full stop)."""
    head = doc.split(". ", 1)[0].rstrip(".")
    return head[:1].lower() + head[1:] if head[:2] != head[:2].upper() else head


def field_help(where: str, field: str, tail: str, extra: str = "") -> str:
    """The help of the flag that fills `field` of `where` ("planner.target:Settings"): the docstring's
    first sentence, `extra` as it stands (", in GiB"), then `tail` in parentheses ("default: 1")."""
    if not _enabled:
        return f"({tail})"
    module, cls = where.split(":")
    docs = field_docs(module, cls)
    if field not in docs:
        raise KeyError(f"{where}.{field} has no docstring: document the field, its flag's help is read from it")
    return f"{first_sentence(docs[field])}{extra} ({tail})"


SETTINGS = "planner.target:Settings"
TARGET = "planner.target:Target"
REQUEST = "planner.plan:Request"
