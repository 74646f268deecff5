"""What a gated-delta-net (GDN) or Mamba2 layer allocates in a prefill chunk that vLLM's start-up
profile does not measure (estimated).

vLLM's profile run builds no attention metadata (the V2 runner passes skip_attn=True, the V1 runner
builds none without force_attention), so a GDN layer's core returns before its kernels run: "During
V1 profile runs, _forward_core returns early because attn_metadata is None" (vLLM 0.32
qwen_gdn_linear_attn.py). At run time a prefill chunk of T tokens runs them, and one layer's
tensors live at once (vllm#52872): the causal conv's output; q, k (key heads) and v (value heads)
after the post-conv prep; the gates g and beta and g's chunk cumsum (fp32); and, inside
chunk_gated_delta_rule (FLA, chunk 64), the WY matrix A (fp32, then model dtype after solve_tril),
w and u, the chunk states h [T/64, H, K, V] and v_new. The layer's output buffer is allocated
outside the core and is measured. This is the Triton (FLA) path; FlashInfer's fused GDN prefill
(Hopper) holds less. A Mamba2 layer (MambaMixer2: "V1 profile run -- warm up SSD kernels" on a
few tokens only) holds at run time its conv output, dt and the chunked dA cumsum (fp32), the chunk
states in fp32 and again after the state passing (in the SSM cache dtype), and the per-chunk C.B
products (fp32), as _mamba_chunk_scan_combined_fwd builds them (ops/ssd_combined.py). A Kimi Delta
Attention layer (Kimi-Linear) holds its q/k/v conv outputs, the per-channel gate and its scaled chunk
cumsum (fp32, [T, H, K] each), A and Aqk (fp32) and, in the chunk-state phase, w, u, k.g, h and v_new
(FLA kda.py _chunk_kda_fwd_with_cumulative_g, which frees A before it; on CUDA vLLM calls the fused-gate
variant, which may hold one gate tensor fewer: an upper figure). Pure.
"""

from __future__ import annotations

from planner.models.spec import MambaSpec, ModelSpec

FLA_CHUNK = 64
"""FLA_CHUNK_SIZE: the chunk of chunk_gated_delta_rule."""


def linear_prefill_transient_bytes(spec: ModelSpec, tokens: int, tp: int, act_bytes: int) -> int:
    """Bytes one GDN, Mamba2 or KDA layer holds beyond the profiled peak while it prefills `tokens`
    tokens on one TP rank (0 for a model without such layers, and for Mamba1)."""
    m = spec.mamba
    rule = _RULES.get(m.kind) if m is not None else None
    return rule(m, tokens, tp, act_bytes) if rule is not None and tokens > 0 else 0  # type: ignore[arg-type]


def _gdn_bytes(m: MambaSpec, tokens: int, tp: int, act_bytes: int) -> int:
    v_heads, v_dim, k_dim = m.ssm_state_shape
    h = max(v_heads // tp, 1)
    key_width = (m.conv_state_shape[0] - v_heads * v_dim) // 2 // tp  # k_heads x k_dim on this rank
    t, b = tokens, act_bytes
    conv_out = t * (2 * key_width + h * v_dim) * b
    qkv = conv_out  # q, k, v after the post-conv prep: the same widths
    gates = t * h * (4 + b + 4)  # g, beta, g's cumsum (fp32)
    a_lo = t * h * FLA_CHUNK * b
    solve = t * h * FLA_CHUNK * 4 + a_lo  # A in fp32 and its solve_tril output
    states = a_lo + t * h * (k_dim + v_dim) * b + -(-t // FLA_CHUNK) * h * k_dim * v_dim * b + t * h * v_dim * b
    return conv_out + qkv + gates + max(solve, states)


def _mamba2_bytes(m: MambaSpec, tokens: int, tp: int, act_bytes: int) -> int:
    heads, head_dim, d_state = m.ssm_state_shape
    groups = (m.conv_state_shape[0] - heads * head_dim) // (2 * d_state)
    h, g = max(heads // tp, 1), max(groups // tp, 1)
    chunks = -(-tokens // m.chunk_size)
    state_out = 4 if m.ssm_dtype == "float32" else act_bytes
    conv_out = tokens * (h * head_dim + 2 * g * d_state) * act_bytes
    dt_cumsum = 2 * h * chunks * m.chunk_size * 4
    states = chunks * h * head_dim * d_state * (4 + state_out)
    cb = chunks * g * m.chunk_size * m.chunk_size * 4
    return conv_out + dt_cumsum + states + cb


def _kda_bytes(m: MambaSpec, tokens: int, tp: int, act_bytes: int) -> int:
    heads, v_dim, k_dim = m.ssm_state_shape
    h, t, b = max(heads // tp, 1), tokens, act_bytes
    conv_out = t * (m.conv_state_shape[0] // tp) * b  # q, k and v convolved separately
    gates = 2 * t * h * k_dim * 4  # the gate, and its chunk cumsum scaled by 1 / ln 2
    aqk = t * h * FLA_CHUNK * 4
    solve = 2 * aqk + t * h * FLA_CHUNK * b  # A in fp32 beside Aqk, and A after solve_tril
    states = (
        aqk + t * h * (2 * k_dim + 2 * v_dim) * b + -(-t // FLA_CHUNK) * h * k_dim * v_dim * b
    )  # w, kg, u, v_new, h
    return conv_out + gates + max(solve, states)


_RULES = {"gdn": _gdn_bytes, "mamba2": _mamba2_bytes, "kda": _kda_bytes}
