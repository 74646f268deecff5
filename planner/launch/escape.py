"""Text that goes into an emitted file, made safe for that file: the model reference checked where it
enters the launch step, comments that cannot end early, YAML strings that parse back to themselves.

Every emitter writes user-reachable text (the model reference, a local folder's name, GPU names
from `--gpu-file`) through one of these; the quoting of command words lives with each format.
"""

from __future__ import annotations

from planner.errors import PlannerError

# Characters YAML and some editors treat as line breaks although str.isprintable() is False for
# them anyway; listed so the intent is explicit.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
MODEL_REF_MAX_CHARS = 4096
"""PATH_MAX on Linux: no real model id or path is longer."""


def _unsafe(ch: str) -> bool:
    """Control, format, surrogate, unassigned and line-break characters (and every space but ' ')."""
    return not ch.isprintable() or ch in _LINE_BREAKS or ch == "\ufeff"


def check_model_ref(ref: str, what: str = "the model reference") -> str:
    """`ref` unchanged if a launch file can carry it as one argument; else a one-line PlannerError."""
    if not ref or not ref.strip():
        raise PlannerError(f"{what} is empty: give a Hugging Face id or a local folder")
    if len(ref) > MODEL_REF_MAX_CHARS:
        raise PlannerError(
            f"{what} is {len(ref):,} characters long (at most {MODEL_REF_MAX_CHARS:,}): "
            "give a shorter path or a Hugging Face id"
        )
    bad = next((i for i, ch in enumerate(ref) if _unsafe(ch)), None)
    if bad is not None:
        raise PlannerError(
            f"{what} '{escape(ref)}' holds the control or invisible character U+{ord(ref[bad]):04X} at "
            f"position {bad}: rename the folder or pass --model-ref with a plain name"
        )
    if ref.startswith("-"):
        raise PlannerError(
            f"{what} {ref!r} begins with '-', which vLLM would read as an option: "
            f"pass a local folder as ./{ref}, or --model-ref with another name"
        )
    return ref


def escape(text: str) -> str:
    """`text` on one line: every unsafe character as a backslash escape (\\n, \\x1b, \\u2028)."""
    if not any(_unsafe(ch) for ch in text):
        return text
    return "".join(_escape_char(ch) if _unsafe(ch) else ch for ch in text)


def _escape_char(ch: str) -> str:
    code = ord(ch)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if ch in named:
        return named[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def comment(text: str, prefix: str = "# ") -> str:
    """One comment line for shell, YAML or Python: unsafe characters escaped, so nothing after the
    prefix can leave the comment (a newline in a model name becomes the two characters \\n)."""
    return f"{prefix}{escape(text)}".rstrip()


def comment_block(lines: list[str], prefix: str = "# ") -> str:
    """Comment lines, each ending in a newline."""
    return "".join(comment(line, prefix) + "\n" for line in lines)


def yaml_quoted(text: str) -> str:
    """A YAML double-quoted scalar that parses back to exactly `text` (YAML 1.1 and 1.2)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif _unsafe(ch) or ch == "\t":
            out.append(_escape_char(ch) if ch != "\t" else "\\t")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
