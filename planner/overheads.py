"""The three budget terms vLLM measures on the GPU, modelled: the activation peak of the profile
run, non-torch memory growth after the start-up snapshot, and the CUDA-graph memory estimate.

They are ESTIMATES. Each is a physical shape computed from the architecture and the profile run's
size (max_num_batched_tokens tokens through the MLP/experts with attention skipped, then the fp32
sampler over min(max_num_seqs, max_num_batched_tokens) rows x vocabulary), times coefficients
fitted on real start-ups (`profiles/vllm/overheads.yaml`, refit with `benchmarks/fit_overheads.py`).
No model has its own number: the coefficients are shared by every architecture.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from planner import overhead_table
from planner.errors import PlannerError
from planner.models.spec import ModelSpec
from planner.overhead_table import OverheadTable
from planner.paths import profiles_dir
from planner.profile_data import Version
from planner.units import GIB
from planner.vit_profile import context_steps, largest_dummy_item, vit_block_bytes  # noqa: F401 (callers use oh.)

REFERENCE_CAPTURE_TOKENS = 10503
"""Sum of the default capture sizes up to 512 ([1, 2, 4] + 8..248 step 8 + 256..512 step 16, 51
graphs): what every start-up of the H100 calibration set captured in each mode. The CUDA-graph
estimate's graph work is measured relative to it."""


@dataclass(frozen=True)
class ProfileShape:
    """What vLLM's profile run pushes through one worker."""

    tokens: int
    """max_num_batched_tokens: tokens in the dummy forward pass."""
    sampler_rows: int
    """min(max_num_seqs, max_num_batched_tokens): rows of logits the dummy sampler run sees."""
    tp: int
    dtype_bytes: int
    has_sampler: bool
    """Only the last pipeline stage computes logits and samples."""
    encoder_profiled: bool = True
    """The profile run also runs the multimodal encoder's dummy batch (the V2 runner: from 0.27, first stage only)."""
    max_model_len: int = 0
    """The length the dummy multimodal items must fit (a video's frames); 0 = no limit."""
    video_frames: int = 0
    """Frames of the largest dummy video the release builds (video models); 0 = images only."""

    @classmethod
    def of(
        cls,
        max_num_batched_tokens: int,
        max_num_seqs: int,
        tp: int,
        dtype_bytes: int,
        last_stage: bool,
        encoder_profiled: bool = True,
        max_model_len: int = 0,
        video_frames: int = 0,
    ) -> "ProfileShape":
        """The dummy run of vLLM's profile: max_num_batched_tokens tokens, sampled as
        min(max_num_seqs, max_num_batched_tokens) requests on the last pipeline stage."""
        return cls(
            tokens=max_num_batched_tokens,
            sampler_rows=min(max_num_seqs, max_num_batched_tokens),
            tp=tp,
            dtype_bytes=dtype_bytes,
            has_sampler=last_stage,
            encoder_profiled=encoder_profiled,
            max_model_len=max_model_len,
            video_frames=video_frames,
        )


@dataclass(frozen=True)
class Features:
    """Byte counts of the tensors alive at the profile run's peak (before coefficients)."""

    hidden_bytes: int
    """One [tokens, hidden] activation (the residual stream; not split by TP)."""
    mlp_bytes: int
    """The largest feed-forward transient on one TP rank: gate/up output plus activation output
    (dense), or the fused-MoE caches of the top-k experts plus the shared expert."""
    moe_workspace_bytes: int
    """Fused-MoE workspace ([tokens, top-k, 2N] and [tokens, top-k, hidden]), which vLLM keeps
    allocated after the forward pass, so it sits under the sampler's peak too; 0 for dense models."""
    sampler_bytes: int
    """One fp32 [rows, vocab] logits tensor (gathered whole on every TP rank); 0 off the last stage."""
    vision_bytes: int
    """The encoder's dummy batch: images that fit the token budget x patches x vision hidden; 0 for text."""
    encoder_peak_bytes: int = 0
    """The encoder's own transient over that batch, on one TP rank (vit_block_bytes: the ViT block's
    hidden-width tensors beside its MLP columns or inside its attention, plus the pixel values). It
    is freed before the decoder's dummy pass, so it competes with that pass's peak rather than adding to it."""
    tokens: int = 0
    """The profile run's tokens (max_num_batched_tokens)."""


def vision_block(version: str | None, architecture: str) -> overhead_table.VisionBlock:
    """The release's ViT block facts for this architecture (`vision_blocks` in overheads.yaml)."""
    from planner.releases import parse_version

    return _table().vision_block(parse_version(version) if version else (9999, 0, 0, 0), architecture)


# vLLM's fused-MoE kernels allocate the intermediate caches of the profile run's tokens x top-k
# (the Triton path for bf16/fp8/int8: cache1/cache3 and cache2; compressed-tensors MXFP4 checkpoints
# run Marlin's, the same two, or on SM100 CutlassExpertsMxfp4's M x top-k workspaces:
# compressed_tensors_moe_w4a4_mxfp4.py in 0.32), except the OAI Triton kernels that `quant_method:
# mxfp4` checkpoints select before Blackwell (oracle/mxfp4.py _get_priority_backends_for_gpt_oss):
# they keep none (fitted on the gpt-oss start-ups; Kimi-K3's config hook maps its compressed-tensors
# MXFP4 to that method). Keyed by QuantSpec.vllm_name.
_MOE_KERNELS_WITHOUT_WORKSPACE = ("mxfp4",)


def features(spec: ModelSpec, shape: ProfileShape, version: str | None = None) -> Features:
    """The tensors of the profile run; `version` picks the release's ViT block (vision_blocks in
    overheads.yaml; None: the default block of the newest range)."""
    t, b, tp = shape.tokens, shape.dtype_bytes, shape.tp
    mlp = workspace = 0
    if any(l.mlp == "dense" for l in spec.layers):
        mlp = t * 3 * spec.intermediate_size // tp * b
    if spec.moe is not None and any(l.mlp == "moe" for l in spec.layers):
        m = spec.moe
        n = m.expert_intermediate_size // tp
        if spec.quant is None or spec.quant.vllm_name not in _MOE_KERNELS_WITHOUT_WORKSPACE:
            workspace = t * m.experts_per_token * (2 * n + spec.hidden_size) * b
        routed = t * m.experts_per_token * (3 * n + spec.hidden_size) * b
        mlp = max(mlp, routed + t * 3 * m.shared_intermediate_size // tp * b)
    vision = encoder = 0
    if spec.vision is not None and shape.encoder_profiled:
        v = spec.vision
        patches, item_tokens = largest_dummy_item(v, shape.max_model_len, shape.video_frames)
        # vLLM's encoder budget is max(max_num_batched_tokens, one item's tokens): at least one item
        total = max(1, shape.tokens // item_tokens) * patches
        vision = total * v.hidden_size * b
        encoder = total * vit_block_bytes(v, vision_block(version, spec.architecture), tp, b)
    return Features(
        hidden_bytes=t * spec.hidden_size * b,
        mlp_bytes=mlp,
        moe_workspace_bytes=workspace,
        sampler_bytes=shape.sampler_rows * spec.vocab_size * 4 if shape.has_sampler else 0,
        vision_bytes=vision,
        encoder_peak_bytes=encoder,
        tokens=t,
    )


@dataclass(frozen=True)
class Coefficients:
    """Fitted multipliers (dimensionless: how many copies of each tensor are alive at the peak),
    plus constant terms in GiB."""

    forward_const_gib: float
    """Forward peak beyond 2 hidden copies + the MLP transient (input buffers, compile workspaces)."""
    sampler_const_gib: float
    sampler_logits: float
    """Copies of the fp32 logits alive in the sampler (bf16 logits + fp32 copy + probabilities + noise = 3.5)."""
    sampler_hidden: float
    moe_workspace: float
    vision: float
    non_torch_gib: dict[str, float]
    """Non-torch growth by layout: `tp1`, `tp1_pp` (TP 1 with PP > 1), `tp2`, `per_extra_tp` (GiB
    added per rank beyond 2)."""
    cudagraph_const_gib: float
    cudagraph_per_layer_gib: float
    source: str
    """The calibration set and date the fit came from."""
    validated: tuple[str, ...] = ()
    """Releases whose real start-ups the set was fitted or checked on; others are extrapolations."""
    forward_per_token_bytes: float = 0.0
    """Forward peak beyond the physics that grows with the profile run's tokens (compile and
    allocator workspaces; under the 0.27+ formula partly persistent, charged as consumed memory)."""
    cudagraph_full_share: float = 0.0
    """Share of the CUDA-graph estimate that follows the FULL graphs' captured tokens (the rest
    follows the PIECEWISE graphs'); both relative to REFERENCE_CAPTURE_TOKENS."""
    cudagraph_hidden_exponent: float = 0.0
    """The per-layer graph cost scales with (hidden / 4096) ** this (0: not at all)."""
    cold_const_gib: float = 0.0
    """First start on an empty torch.compile cache: extra profile peak, constant part."""
    cold_per_token_bytes: float = 0.0
    """... and the part that grows with max_num_batched_tokens (compile-time autotuning buffers)."""
    non_torch_comm_gib: tuple[tuple[str, float, float], ...] = ()
    """(interconnect class, GiB at TP 2, GiB per rank beyond 2): communication buffers by interconnect."""
    activation_offset_gib: float = 0.0
    """Added to the activation peak: 0 in the bundled sets; a user's calibration sets it to what
    their start-up measured beyond the modelled peak."""
    calibration: str = ""
    """What of the user's calibration overlay these coefficients use ('' for none)."""


def _first() -> Version:
    from planner import releases  # local: releases imports nothing from here

    return releases.parse_version(releases.supported_range()[0])


@functools.cache
def _table() -> OverheadTable:
    """profiles/vllm/overheads.yaml through the checked loader (planner/overhead_table.py)."""
    return overhead_table.load(profiles_dir() / "vllm" / "overheads.yaml", _first())


def capture_max_size(version: str, family: str) -> int:
    """The largest default CUDA-graph capture size of the release on this GPU family
    (`capture_max_size` in overheads.yaml: the family's ranges, else the default ones)."""
    from planner.releases import parse_version

    return _table().capture_size(parse_version(version), family)


@functools.cache
def coefficients(version: str, runner: str = "v1") -> Coefficients:
    """The coefficient set whose release range holds `version` (a set may refine a base set), with
    the overlay of `runner` ("v1": vLLM's GPUModelRunner, "v2": the V2 model runner) on top.
    Overlays (sets with a `runner` key) change only the terms that runner measures differently."""
    values, source, validated = _values(version, runner)
    return _build(values, source, validated)


def _values(version: str, runner: str) -> tuple[dict, str, tuple[str, ...]]:
    from planner.releases import parse_version

    v = parse_version(version)
    sets = _table().sets
    by_name = {x.name: x for x in sets}
    main = next((x for x in sets if x.runner is None and x.covers(v)), None)
    if main is None:
        raise PlannerError(f"no overhead coefficients cover vLLM {version}")
    values = {**(by_name[main.base].terms if main.base else {}), **main.terms}
    validated, sources = list(main.validated), [main.source]
    overlays = [x for x in sets if x.runner == runner and x.covers(v)]
    for i, x in enumerate(overlays):
        values.update(x.terms)
        later = {k for y in overlays[i + 1 :] for k in y.terms}
        if set(x.terms) <= later:
            continue  # every term it sets is replaced by a later overlay: it does not apply here
        validated = [r for r in validated if r in x.validated]
        sources.append(x.source)
    return values, "; ".join(sources), tuple(validated)


def coefficients_for(version: str, runner: str, gpu: str, interconnect: str | None, tp: int) -> Coefficients:
    """`coefficients(version, runner)` with the user's calibration overlay on top where one of its
    sets measured this GPU, interconnect (TP > 1) and TP on this release range and runner
    (planner/overlay.py; `vllm-planner calibrate` writes it). `calibration` says what was used, or
    that the overlay does not cover this hardware."""
    from planner import overlay
    from planner.releases import parse_version

    path, cal = overlay.sets()
    base = coefficients(version, runner)
    if not cal:
        return base
    v, link = parse_version(version), _link(base, interconnect, tp)
    hit = next((x for x in cal if _matches(x, gpu, link, tp, runner) and x.covers(v)), None)
    if hit is None:
        have = "; ".join(sorted({describe_match(x) for x in cal}))
        return dataclasses.replace(
            base,
            calibration=f"your calibration overlay {path} covers {have}, not the {gpu} at TP {tp} on vLLM "
            f"{version} ({runner.upper()} runner): this plan uses the shared terms",
        )
    values, source, validated = _values(version, runner)
    for k, x in hit.terms.items():
        values[k] = {**values.get(k, {}), **x} if k in ("non_torch_gib", "non_torch_comm_gib") else x
    cold = f", {hit.cold_startups} of them cold, the cold-start extra taken out" if hit.cold_startups else ""
    pool = (
        f"; their captured CUDA-graph pool: {hit.captured_pool_gib:g} GiB (measured)"
        if hit.captured_pool_gib is not None
        else ""
    )
    note = (
        f"non-torch, activation and CUDA-graph terms from your calibration of the {describe_match(hit)} "
        f"({hit.startups} start-up{'s' if hit.startups != 1 else ''}{cold}, {path}){pool}"
    )
    return _build(values, f"{source}; {hit.source}", tuple(sorted({*validated, *hit.validated})), note)


def _link(c: Coefficients, interconnect: str | None, tp: int) -> str | None:
    """The interconnect class a calibration set is keyed by: none at TP 1, else the plan's (or the set's default)."""
    if tp == 1:
        return None
    return interconnect or (c.non_torch_comm_gib[0][0] if c.non_torch_comm_gib else None)


def _matches(x, gpu: str, link: str | None, tp: int, runner: str) -> bool:
    m = x.match
    return m.gpu == gpu and m.tp == tp and m.interconnect == link and x.runner in (None, runner)


def describe_match(x) -> str:
    """'H200 at TP 1, vLLM 0.26 (V2 runner)' for a calibration set."""
    m = x.match
    over = f" over {m.interconnect}" if m.interconnect else ""
    runner = f" ({x.runner.upper()} runner)" if x.runner else ""
    return f"{m.gpu} at TP {m.tp}{over}, vLLM {', '.join(x.validated) or _text(x.start)}{runner}"


def _text(v: Version) -> str:
    return ".".join(str(p) for p in v[:3])


def _build(values: dict, source: str, validated: tuple[str, ...], calibration: str = "") -> Coefficients:
    fields = {
        k: values[k]
        for k in Coefficients.__dataclass_fields__
        if k in values and k not in ("source", "validated", "non_torch_comm_gib", "non_torch_gib")
    }
    comm = values.get("non_torch_comm_gib") or {}
    return Coefficients(
        **fields,
        non_torch_gib=dict(values["non_torch_gib"]),
        source=source,
        validated=validated,
        non_torch_comm_gib=tuple((k, b.tp2, b.per_extra_tp) for k, b in comm.items()),
        calibration=calibration,
    )


def _forward_const_bytes(f: Features, c: Coefficients) -> float:
    return c.forward_const_gib * GIB + c.forward_per_token_bytes * f.tokens


def _decoder_peak_bytes(f: Features, c: Coefficients) -> int:
    peak = _forward_const_bytes(f, c) + 2 * f.hidden_bytes + f.mlp_bytes
    if f.sampler_bytes:
        sampler = c.sampler_const_gib * GIB + c.sampler_logits * f.sampler_bytes + c.sampler_hidden * f.hidden_bytes
        peak = max(peak, sampler + c.moe_workspace * f.moe_workspace_bytes)
    return int(peak + c.vision * f.vision_bytes)


def activation_peak_bytes(f: Features, c: Coefficients) -> int:
    """Torch peak increase of the profile run: the larger of the forward pass's transient peak and
    the sampler's, on top of what stays allocated (MoE workspace, the encoder's dummy batch); or
    the multimodal encoder's own pass, when that is larger (one huge dynamic-resolution image)."""
    return max(_decoder_peak_bytes(f, c), _encoder_peak_bytes(f, c)) + int(c.activation_offset_gib * GIB)


def _encoder_peak_bytes(f: Features, c: Coefficients) -> int:
    """The encoder's pass: it runs eagerly, before and outside the compiled decoder graph whose
    workspaces and attention transients the forward constant stands for, so none of that is added."""
    return int(f.encoder_peak_bytes)


def encoder_binds(f: Features, c: Coefficients) -> bool:
    """Whether the multimodal encoder's pass, not the decoder's, sets the activation peak."""
    return _encoder_peak_bytes(f, c) > _decoder_peak_bytes(f, c)


def interconnects(c: Coefficients) -> tuple[str, ...]:
    """The interconnect classes the set prices (`non_torch_comm_gib` in profiles/vllm/overheads.yaml)."""
    return tuple(k for k, _, _ in c.non_torch_comm_gib)


def non_torch_bytes(tp: int, pp: int, c: Coefficients, interconnect: str | None = None) -> int:
    """Memory outside torch that grows between vLLM's start-up snapshot and the end of profiling:
    the CUDA context's cuBLAS/kernel workspaces (`tp1`, `tp1_pp`), plus with TP the communication
    buffers, which follow the interconnect: NCCL's channel buffers over PCIe (custom all-reduce only
    where P2P works), custom all-reduce over NVLink, and on NVSwitch systems of Hopper and later
    NCCL's NVLS (NVLink SHARP) buffers, the largest. `interconnect` None: the set's first class
    (NVSwitch with NVLS, the calibration envelope)."""
    nt = c.non_torch_gib
    if tp == 1:
        return int((nt["tp1"] if pp == 1 else nt["tp1_pp"]) * GIB)
    if not c.non_torch_comm_gib:  # a set without interconnect classes: the legacy TP line
        return int((nt["tp2"] + nt["per_extra_tp"] * (tp - 2)) * GIB)
    comm = {k: (a, b) for k, a, b in c.non_torch_comm_gib}
    key = interconnect or c.non_torch_comm_gib[0][0]
    if key not in comm:
        raise PlannerError(f"unknown interconnect {key!r}: one of {', '.join(comm)}")
    at2, extra = comm[key]
    return int((nt["tp1"] + at2 + extra * (tp - 2)) * GIB)


@dataclass(frozen=True)
class GraphShape:
    """The CUDA graphs vLLM captures (compilation config defaults): PIECEWISE graphs for every capture
    size, FULL graphs for the uniform-decode sizes up to max_num_seqs (FULL_AND_PIECEWISE mode)."""

    piecewise_sizes: tuple[int, ...]
    full_sizes: tuple[int, ...]

    @classmethod
    def of(
        cls, max_num_seqs: int, max_num_batched_tokens: int, max_size: int = 512, decode_query_len: int = 1
    ) -> "GraphShape":
        """vLLM's default capture sizes (config/vllm.py _set_cudagraph_sizes): [1, 2, 4] + 8..248
        step 8 + 256.. step 16 up to min(2 x max_num_seqs x decode_query_len, max_size), capped by
        max_num_batched_tokens; FULL decode graphs up to max_num_seqs x decode_query_len."""
        top = min(2 * max_num_seqs * decode_query_len, max_size, max_num_batched_tokens)
        sizes = tuple(s for s in [1, 2, 4, *range(8, 256, 8), *range(256, top + 1, 16)] if s <= top)
        return cls(sizes, tuple(s for s in sizes if s <= max_num_seqs * decode_query_len))

    @property
    def work(self) -> tuple[float, float]:
        """(FULL, PIECEWISE) captured tokens relative to the calibration envelope's 51 + 51 graphs."""
        return sum(self.full_sizes) / REFERENCE_CAPTURE_TOKENS, sum(self.piecewise_sizes) / REFERENCE_CAPTURE_TOKENS


def cudagraph_estimate_bytes(
    layers_on_worker: int, c: Coefficients, graphs: GraphShape | None = None, hidden_size: int = 4096
) -> int:
    """vLLM's measured CUDA-graph estimate (subtracted from 0.20 by the V1 runner, from 0.29 by the
    V2 runner). The V1 runner captures the two largest graphs of each mode and extrapolates: first
    capture + (graphs - 1) x the second's increment (v1/worker/gpu_model_runner.py
    profile_cudagraph_memory); the V2 runner from 0.29 captures every PIECEWISE graph and
    extrapolates the FULL ones the same way (v1/worker/gpu/cudagraph_utils.py). Both grow with the
    captured pieces (the layers on the worker) and with the graphs' token sizes, which follow
    max_num_seqs: a 24 GB card's 256 sequences capture 35 FULL graphs up to 256 tokens where the
    calibration H100's 1,024 captured 51 up to 512. `graphs` None: the calibration envelope."""
    full, piecewise = graphs.work if graphs is not None else (1.0, 1.0)
    mix = c.cudagraph_full_share * full + (1 - c.cudagraph_full_share) * piecewise
    width = (hidden_size / 4096) ** c.cudagraph_hidden_exponent
    return int((c.cudagraph_const_gib + c.cudagraph_per_layer_gib * layers_on_worker * width) * mix * GIB)


def cold_start_extra_bytes(tokens: int, c: Coefficients) -> int:
    """A first start on an empty torch.compile cache compiles (and autotunes) inside the profile run,
    whose peak then holds compile-time buffers the warm start does not: a constant plus a part that
    grows with the profile run's tokens. 0 when the set has no cold-start measurement."""
    return int(c.cold_const_gib * GIB + c.cold_per_token_bytes * tokens)


def v2_runner_buffer_bytes(max_num_seqs: int, vocab_size: int) -> int:
    """GPU buffers the V2 model runner allocates once for the sampler and structured output, which
    vLLM 0.27+ charges to the budget (its free-memory drop): int32 penalty counts [seqs, vocab],
    the prompt-token bit mask and the grammar bit mask [seqs, vocab / 32] (v1/worker/gpu/sample/
    penalties.py, gpu/structured_outputs.py). Exact sizes; the allocator's rounding aside."""
    words = -(-vocab_size // 32)
    return 4 * max_num_seqs * (vocab_size + 2 * words)
