"""The notes a budget carries: what the release allocates outside its budget, the hybrid layout,
load-time extras, an encoder-bound activation peak, and how far the measured terms were checked.
Measured figures quoted here come from `profiles/vllm/observations.yaml`, not from prose.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, NamedTuple

from planner import overheads as oh
from planner.inspection import Model
from planner.linear_prefill import linear_prefill_transient_bytes
from planner.paths import profiles_dir
from planner.profile_data import convert, data_error, read_mapping
from planner.releases import ReleaseFacts
from planner.target import Settings, Target
from planner.units import GIB, MIB

if TYPE_CHECKING:
    from planner.budget import Resolved, StageBudget


class Observation(NamedTuple):
    """A figure real start-ups showed, as a range in GiB, with what and where it was measured."""

    low_gib: float
    high_gib: float
    what: str
    measured_on: str
    source: str

    def text(self) -> str:
        span = (
            f"{self.low_gib:.2f} GiB"
            if self.low_gib == self.high_gib
            else f"{self.low_gib:.1f}-{self.high_gib:.1f} GiB"
        )
        return f"{span} measured for {self.measured_on}"


@functools.cache
def observations() -> dict[str, Observation]:
    path = profiles_dir() / "vllm" / "observations.yaml"
    doc = read_mapping(path, "observation table").get("observations")
    if not isinstance(doc, dict) or not doc:
        raise data_error(path, "'observations' must map names to {low_gib, high_gib, what, measured_on, source}")
    out = {name: convert(entry, Observation, f"observations.{name}", path) for name, entry in doc.items()}
    bad = [n for n, o in out.items() if not 0 <= o.low_gib <= o.high_gib]
    if bad:
        raise data_error(path, f"{bad[0]}: needs 0 <= low_gib <= high_gib")
    return out


def headroom_notes(
    model: Model, target: Target, rel: ReleaseFacts, s: Settings, r: "Resolved", bind: "StageBudget"
) -> list[str]:
    """What the release allocates outside the budget, from the 1 - utilization headroom."""
    if target.device == "cpu" or r.runner != "v2" or s.kv_cache_memory_bytes is not None:
        return []
    headroom = target.memory_bytes - math.ceil(target.memory_bytes * r.util)
    outside = []
    if rel.budget_formula != "total_consumed":  # before 0.27 the sampler buffers are not charged
        outside.append(
            f"its sampler buffers ({oh.v2_runner_buffer_bytes(r.seqs, model.spec.vocab_size) / GIB:.2f} GiB)"
        )
    if not bind.cudagraph_bytes and not s.enforce_eager:
        outside.append(f"its CUDA graphs ({observations()['v2_runner_cudagraphs_outside_budget'].text()})")
    if not outside:
        return []
    return [
        f"V2 model runner: {' and '.join(outside)} are not in vLLM's budget; they come from the "
        f"1 - gpu_memory_utilization headroom ({headroom / GIB:.2f} GiB here)"
    ]


def hybrid_note(bind: "StageBudget") -> list[str]:
    lay = bind.layout
    if not lay.mamba_state_bytes:
        return []
    mamba_groups = sum(1 for g in lay.groups if g.kind == "mamba")
    padded = 100 * (lay.page_bytes - lay.mamba_state_bytes) / lay.mamba_state_bytes
    return [
        f"hybrid: attention block size {lay.block_size} tokens (page {lay.page_bytes:,} B >= Mamba state "
        f"{lay.mamba_state_bytes:,} B, padded by {padded:.2f}%); {len(lay.groups)} groups of {lay.group_size} layers "
        f"({mamba_groups} Mamba, {lay.padding_layers} padding layers); mamba_cache_mode {lay.mamba_mode}"
    ]


_CORE = {"gdn": "gated-delta-net", "mamba2": "Mamba2 SSD", "kda": "Kimi Delta Attention"}


def linear_prefill_note(model: Model, target: Target, rel: ReleaseFacts, s: Settings, r: "Resolved") -> list[str]:
    """A GDN, Mamba2 or KDA hybrid's prefill tensors, which the profiled peak leaves out: they come from the memory
    outside the requested budget at run time."""
    if target.device == "cpu" or not rel.profile_skips_linear_attention_core or s.kv_cache_memory_bytes is not None:
        return []
    extra = linear_prefill_transient_bytes(model.spec, r.mnbt, s.tp, 2)  # 16-bit activations (fp32 runs in bf16)
    if not extra:
        return []
    headroom = target.memory_bytes - math.ceil(target.memory_bytes * r.util)
    verdict = (
        ", beside the CUDA context and whatever else the process keeps outside the budget"
        if extra <= headroom
        else ", which is too little: a long prompt may fail with CUDA out of memory; lower --max-num-batched-tokens "
        "(the extra scales with it) or --gpu-memory-utilization"
    )
    core = _CORE[model.spec.mamba.kind]  # type: ignore[union-attr]
    return [
        f"linear attention: vLLM's profile run skips the {core} kernels (no attention metadata; vllm#52872), "
        f"so a prefill chunk of {r.mnbt:,} tokens holds about {extra / GIB:.2f} GiB per GPU (est., the Triton path's "
        f"chunk tensors of one layer) that the budget does not; it comes from the 1 - gpu_memory_utilization headroom "
        f"({headroom / GIB:.2f} GiB here){verdict}"
    ]


def gdn_graph_estimate_note(model: Model, rel: ReleaseFacts, s: Settings, r: "Resolved") -> list[str]:
    """What the planner does not model of the V1 runner's graph estimate on a GDN hybrid (vllm#50780)."""
    m = model.spec.mamba
    if (
        m is None
        or m.kind != "gdn"
        or r.runner != "v1"
        or s.enforce_eager
        or not rel.v1_graph_estimate_charges_gdn_context
    ):
        return []
    return [
        f"not modelled: on GDN hybrids vLLM {rel.version}'s V1-runner CUDA-graph estimate has been reported to charge "
        f"about 128 KiB per batched token of its first FULL sample's context (vllm#50780: 4.2 GiB against 0.56 "
        f"on 0.23; about {128 * 1024 * r.mnbt / GIB:.1f} GiB at {r.mnbt:,} tokens), which would lower the KV cache "
        "by as much; the V2 model runner does not run that sample"
    ]


def load_extra_notes(model: Model, target: Target, rel: ReleaseFacts, r: "Resolved") -> list[str]:
    out = []
    if r.mla_workspace_bytes:
        out.append(
            f"weights include the {r.mla_workspace_bytes // MIB} MiB workspace(s) that vLLM "
            f"{rel.version} allocates when it imports its MLA attention backends ({target.arch_family})"
        )
    if r.unsplit_vision_bytes:
        out.append(
            f"vLLM {rel.version} keeps the {model.spec.vision.model_type} vision tower whole on every TP rank "  # type: ignore[union-attr]
            f"(+{r.unsplit_vision_bytes / GIB:.2f} GiB of weights per GPU)"
        )
    return out


def encoder_note(model: Model, rel: ReleaseFacts, s: Settings, r: "Resolved", bind: "StageBudget") -> list[str]:
    if not bind.encoder_bound or s.kv_cache_memory_bytes is not None:
        return []
    v = model.spec.vision
    assert v is not None
    patches, item_tokens = oh.largest_dummy_item(v, r.dummy_len, rel.qwen2_vl_max_frames_per_video)
    items = max(1, r.mnbt // item_tokens)
    kind = "video" if patches > (v.image_size // v.patch_size) ** 2 else "image"
    video = (
        " A smaller max_model_len shrinks the dummy video; --limit-mm-per-prompt '{\"video\": 0}' "
        "drops it (not modelled)."
        if kind == "video"
        else ""
    )
    excess = observations()["qwen_vl_encoder_peak_excess"]
    checked = (
        f"an estimate that {excess.measured_on} exceeded by {excess.low_gib:.1f}-{excess.high_gib:.1f} GiB"
        if v.takes_video
        else "an estimate no start-up has checked for this tower"
    )
    return [
        f"the activation peak is the vision encoder's profile pass over vLLM's dummy {kind}s ({items} x "
        f"{patches:,} ViT patches), modelled from its input, hidden and MLP tensors: {checked}.{video}"
    ]


def validation_note(target: Target, rel: ReleaseFacts, s: Settings, runner: str) -> list[str]:
    """How far start-ups checked the measured terms this plan uses."""
    if target.device == "cpu" or s.kv_cache_memory_bytes is not None:
        return []
    c = oh.coefficients_for(rel.version, runner, target.name, target.interconnect, s.tp)
    own = [c.calibration] if c.calibration else []  # the user's calibration overlay, used or not covering
    if not c.validated:
        return own + [
            f"activation, non-torch and CUDA-graph terms for vLLM {rel.version} ({runner.upper()} runner) mix fitted "
            "coefficients with terms read from vLLM's source that no start-up has checked yet"
        ]
    if rel.version not in c.validated:
        return own + [
            f"activation, non-torch and CUDA-graph terms come from start-ups of vLLM {', '.join(c.validated)}; "
            f"for {rel.version} they are an extrapolation"
        ]
    return own


def notes(
    model: Model, target: Target, rel: ReleaseFacts, s: Settings, r: "Resolved", bind: "StageBudget"
) -> list[str]:
    """Every note after the inspection's warnings and the auto-fit line, in the order users read them."""
    return (
        headroom_notes(model, target, rel, s, r, bind)
        + hybrid_note(bind)
        + linear_prefill_note(model, target, rel, s, r)
        + gdn_graph_estimate_note(model, rel, s, r)
        + load_extra_notes(model, target, rel, r)
        + encoder_note(model, rel, s, r, bind)
        + validation_note(target, rel, s, r.runner)
    )
