"""The bundled model catalogue, for `vllm-planner models`."""

from __future__ import annotations

from typing import Any

from planner.models import sources


def models_table() -> list[dict[str, Any]]:
    """One row per bundled profile: id, architecture, parameters (exact, from the formula where the
    architecture's weights are modelled, else the published figure), default context, aliases."""
    from planner.api import inspect, load_model  # the accounting is only needed here

    rows = []
    for model_id in sources.bundled_ids():
        model = load_model(model_id)
        params = inspect(model).params_total if model.tensor_source != "none" else model.meta.get("params_published")
        rows.append(
            {
                "id": model.id,
                "architecture": model.spec.architecture,
                "model_type": model.spec.model_type,
                "params_total": params,
                "max_model_len": model.spec.max_model_len_default,
                "aliases": list(model.meta.get("aliases") or []),
            }
        )
    return rows
