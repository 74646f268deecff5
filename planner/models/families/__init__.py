"""Model families added one module each, registered by `model_type` (as aiconfigurator's
`@register_model` does): a family module names the config types it reads, builds the whole
`ModelSpec` from a config.json, and may give the tensor builder for the specs it makes. Adding a
family touches nothing outside its own module and the import line below.

`planner.models.normalize` asks `find` before it reports an unknown model_type, and
`planner.models.tensors.from_spec` asks `tensor_builder`; both import this package lazily (the family
modules build on their helpers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

Config = dict[str, Any]


@dataclass(frozen=True)
class Family:
    """One registered family."""

    name: str
    """The family module's name (qwen3_5, deepseek_v32, ...)."""
    normalize: Callable[..., Any]
    """`(config, quant_files) -> ModelSpec` for the whole config.json (wrappers unwrapped by the family)."""


_BY_CONFIG_TYPE: dict[str, Family] = {}
_TENSORS: dict[str, Callable[..., list]] = {}
_STAGE_BUFFERS: dict[str, Callable[..., list]] = {}


def register(*model_types: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a normalizer for the top-level config `model_type`s it reads."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for mt in model_types:
            if mt in _BY_CONFIG_TYPE:
                raise ValueError(f"model_type {mt!r} is registered twice ({_BY_CONFIG_TYPE[mt].name}, {name})")
            _BY_CONFIG_TYPE[mt] = Family(name, fn)
        return fn

    return deco


def register_tensors(*spec_types: str) -> Callable[[Callable[..., list]], Callable[..., list]]:
    """Register the formula tensor builder for specs whose `model_type` is one of `spec_types`."""

    def deco(fn: Callable[..., list]) -> Callable[..., list]:
        for mt in spec_types:
            if mt in _TENSORS:
                raise ValueError(f"tensor builder for {mt!r} is registered twice")
            _TENSORS[mt] = fn
        return fn

    return deco


def register_stage_buffers(*spec_types: str) -> Callable[[Callable[..., list]], Callable[..., list]]:
    """Register `(spec, stage layer ranges) -> [Tensor]`: runtime buffers a stage builds for the layers it
    holds beyond the spec's rotary cache (Gemma 4's full layers' own RoPE), read by `accounting.runtime_buffers`."""

    def deco(fn: Callable[..., list]) -> Callable[..., list]:
        for mt in spec_types:
            _STAGE_BUFFERS[mt] = fn
        return fn

    return deco


def stage_buffer_builder(spec_model_type: str) -> Callable[..., list] | None:
    return _STAGE_BUFFERS.get(spec_model_type)


def find(model_type: str) -> Family | None:
    return _BY_CONFIG_TYPE.get(model_type)


def tensor_builder(spec_model_type: str) -> Callable[..., list] | None:
    return _TENSORS.get(spec_model_type)


def model_types() -> list[str]:
    return sorted(_BY_CONFIG_TYPE)


from planner.models.families import (  # noqa: E402,F401  (register on import; one line per family)
    deepseek_v4,
    deepseek_v32,
    gemma4,
    kimi_k3,
    kimi_k25,
    kimi_linear,
    mimo_v2,
    minimax_m2,
    minimax_m3,
    nemotron_h,
    nemotron_nas,
    qwen3_5,
    qwen3_vl,
)
