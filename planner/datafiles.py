"""Reading the bundled YAML data: one loader for every file, libyaml's C parser where PyYAML has
it (the pure-Python parser alone costs a plan several hundred milliseconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml_text(text: str) -> Any:
    return yaml.load(text, Loader=LOADER)


def load_yaml(path: Path) -> Any:
    return load_yaml_text(path.read_text(encoding="utf-8"))
