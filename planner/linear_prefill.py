"""What a gated-delta-net (GDN) layer allocates in a prefill chunk that vLLM's start-up profile
does not measure (estimated).

vLLM's profile run builds no attention metadata (the V2 runner passes skip_attn=True, the V1 runner
builds none without force_attention), so a GDN layer's core returns before its kernels run: "During
V1 profile runs, _forward_core returns early because attn_metadata is None" (vLLM 0.32
qwen_gdn_linear_attn.py). At run time a prefill chunk of T tokens runs them, and one layer's
tensors live at once (vllm#52872): the causal conv's output; q, k (key heads) and v (value heads)
after the post-conv prep; the gates g and beta and g's chunk cumsum (fp32); and, inside
chunk_gated_delta_rule (FLA, chunk 64), the WY matrix A (fp32, then model dtype after solve_tril),
w and u, the chunk states h [T/64, H, K, V] and v_new. The layer's output buffer is allocated
outside the core and is measured. This is the Triton (FLA) path; FlashInfer's fused GDN prefill
(Hopper) holds less. Pure: numbers in, bytes out.
"""

from __future__ import annotations

from planner.models.spec import ModelSpec

FLA_CHUNK = 64
"""FLA_CHUNK_SIZE: the chunk of chunk_gated_delta_rule."""


def gdn_prefill_transient_bytes(spec: ModelSpec, tokens: int, tp: int, act_bytes: int) -> int:
    """Bytes one GDN layer holds beyond the profiled peak while it prefills `tokens` tokens on one
    TP rank (0 for a model without GDN layers)."""
    m = spec.mamba
    if m is None or m.kind != "gdn" or tokens <= 0:
        return 0
    v_heads, v_dim, k_dim = m.ssm_state_shape
    h = max(v_heads // tp, 1)
    key_width = (m.conv_state_shape[0] - v_heads * v_dim) // 2 // tp  # k_heads x k_dim on this rank
    t, b = tokens, act_bytes
    conv_out = t * (2 * key_width + h * v_dim) * b
    qkv = t * (2 * key_width + h * v_dim) * b
    gates = t * h * (4 + b + 4)  # g, beta, g's cumsum (fp32)
    a_lo = t * h * FLA_CHUNK * b
    solve = t * h * FLA_CHUNK * 4 + a_lo  # A in fp32 and its solve_tril output
    states = a_lo + t * h * (k_dim + v_dim) * b + -(-t // FLA_CHUNK) * h * k_dim * v_dim * b + t * h * v_dim * b
    return conv_out + qkv + gates + max(solve, states)
