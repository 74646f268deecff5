"""The `--json` keys README.md documents for a command, read from its paragraph "`--json` keys ...":
the tests hold the code to them, so that a key added, renamed or dropped on one side fails."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_json_keys(command: str, until: str | None = None) -> set[str]:
    """The backticked snake-case names of the `--json` paragraph under `### {command}`, up to the
    paragraph's end or `until` (plan: "With `--inventory`", the inventory's own keys)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("`--json` keys", text.index(f"\n### {command}"))
    end = text.index("\n\n", start)
    if until is not None:
        end = min(end, text.index(until, start))
    keys = set(re.findall(r"`([a-z_]+)`", text[start:end]))
    assert len(keys) > 5, f"README.md: no `--json` keys found under ### {command}"
    return keys
