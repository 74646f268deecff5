"""The activation model of a whole model: what each decoder layer and the head keep (from
`planner.training.activations`), checkpointing (full or selective), activation offloading, and the
gradient workspace of one layer's backward pass, as functions of micro-batch and sequence length."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from planner.models.spec import ModelSpec
from planner.training.activations import ActivationAssumptions, Terms, head_terms, layer_terms
from planner.training.lora import LinearModule


@dataclass(frozen=True)
class ActivationModel:
    """Activation bytes of the whole model as a function of micro-batch and sequence length."""

    layers: tuple[tuple[int, int, int], ...]
    """Per decoder layer: (bytes per token, bytes per token per sequence token, fixed bytes)."""
    head: tuple[int, int, int]
    layer_input_bytes_per_token: int
    """What a checkpointed layer keeps: its input, in the residual stream's dtype."""
    checkpointing: bool
    checkpointed_layers: int = -1
    """Selective checkpointing: how many layers are checkpointed (-1: all when checkpointing)."""
    workspace_bytes_per_token: int = 0
    """Gradients alive inside one layer's backward pass beside what it saved: the MLP's three
    intermediate-wide gradients (gate, up, activation) and two hidden-wide ones."""
    forward_cache_bytes: int = 0
    """Autocast's cached casts of trained weights that checkpointing does not keep for the backward
    pass: alive together until the forward pass ends (torch AMP over fp32 weights)."""
    offload: bool = False
    """Activation offloading (torch's save_on_cpu, torchtune's enable_activation_offloading): what
    the layers keep goes to pinned host memory; two layers' worth stay on the GPU (the one being
    computed and the one in flight)."""

    def layer_bytes(self, b: int, s: int) -> list[int]:
        return [b * s * (lin + s * quad) + fixed for lin, quad, fixed in self.layers]

    def _checkpointed(self) -> int:
        if not self.checkpointing:
            return 0
        return len(self.layers) if self.checkpointed_layers < 0 else min(self.checkpointed_layers, len(self.layers))

    def _held_per_layer(self, b: int, s: int) -> list[int]:
        """What each layer keeps from its forward to its backward pass (a checkpointed one: its input)."""
        n, per_layer = self._checkpointed(), self.layer_bytes(b, s)
        return [b * s * self.layer_input_bytes_per_token] * n + per_layer[n:]

    def head_bytes(self, b: int, s: int) -> int:
        lin, quad, fixed = self.head
        return b * s * (lin + s * quad) + fixed

    def held_bytes(self, b: int, s: int) -> int:
        """On the GPU when the backward pass starts, beside the head (offload: two layers' worth)."""
        held = self._held_per_layer(b, s)
        return 2 * max(held) if self.offload and len(held) > 2 else sum(held)

    def host_bytes(self, b: int, s: int) -> int:
        """Pinned host memory activation offloading needs on one GPU's behalf."""
        return sum(self._held_per_layer(b, s)) if self.offload else 0

    def backward_layer_bytes(self, b: int, s: int) -> int:
        """Beside what is held, inside the backward pass of the costliest layer: its recomputed
        activations (checkpointing; offload: brought back) and the gradient workspace."""
        n, per_layer = self._checkpointed(), self.layer_bytes(b, s)
        back = max(per_layer[:n]) if n else (max(per_layer) if self.offload else 0)
        return back + b * s * self.workspace_bytes_per_token

    def breakdown(self, b: int, s: int) -> dict[str, int]:
        per_layer = self.layer_bytes(b, s)
        head = {"loss and final norm": self.head_bytes(b, s)}
        n = self._checkpointed()
        if self.offload:
            out = {"layers on the GPU (offloaded, two in flight)": self.held_bytes(b, s)}
            return out | {"layer being back-propagated": max(per_layer[:n] if n else per_layer)} | head
        if n == 0:
            return {"decoder layers": sum(per_layer)} | head
        out = {
            "checkpointed layer inputs": n * b * s * self.layer_input_bytes_per_token,
            "recomputed layer": max(per_layer[:n]),
        }
        if n < len(per_layer):
            out["layers kept whole (selective checkpointing)"] = sum(per_layer[n:])
        return out | head

    def bytes(self, b: int, s: int) -> int:
        return sum(self.breakdown(b, s).values())


def workspace_bytes_per_token(spec: ModelSpec, a: ActivationAssumptions) -> int:
    """A layer's backward-pass gradients beside its saved tensors (see ActivationModel)."""
    if spec.moe is not None:
        inter = spec.moe.experts_per_token * spec.moe.expert_intermediate_size
    else:
        inter = spec.intermediate_size
    return 3 * a.linear_out * inter + 2 * a.stream * spec.hidden_size


def _with_fixed(t: Terms) -> tuple[int, int, int]:
    return (*t.coefficients(), sum(t.fixed.values()))


def activation_model(
    spec: ModelSpec,
    a: ActivationAssumptions,
    modules: Sequence[LinearModule],
    checkpointing: bool,
    checkpointed_layers: int = -1,
    offload: bool = False,
) -> ActivationModel:
    layers = tuple(_with_fixed(layer_terms(spec, i, a, modules)) for i in range(spec.num_layers))
    n = (len(layers) if checkpointed_layers < 0 else min(checkpointed_layers, len(layers))) if checkpointing else 0
    cached = sum(fixed for _, _, fixed in layers[:n]) if a.trainable and a.weight_casts else 0
    return ActivationModel(
        layers,
        _with_fixed(head_terms(spec, a)),
        a.stream * spec.hidden_size,
        checkpointing,
        checkpointed_layers,
        workspace_bytes_per_token(spec, a),
        cached,
        offload,
    )
