"""The normalized model description every later step reads: `ModelSpec`.

A `ModelSpec` is built from a Hugging Face `config.json` by `planner.models.normalize`. It says
what the decoder is made of (per layer: attention kind, MLP kind), the shapes, the dtype and the
quantization scheme. It holds no I/O and no derived byte counts: those are `planner.accounting`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AttentionKind = Literal["full", "sliding", "chunked", "mla", "mamba", "linear", "none"]
"""How a decoder layer attends. `sliding`/`chunked` keep a bounded window; `mamba`/`linear` keep a
fixed-size per-sequence state instead of per-token KV; `none` is an MLP-only layer (Nemotron-H)."""

MLPKind = Literal["dense", "moe"]


@dataclass(frozen=True)
class LayerSpec:
    """One decoder layer."""

    attention: AttentionKind
    """Attention kind of the layer."""
    window: int | None = None
    """Tokens kept by a sliding-window or chunked-local layer (`sliding_window`, `attention_chunk_size`)."""
    mlp: MLPKind = "dense"
    """Whether the feed-forward block is dense or a mixture of experts."""
    kv_heads: int = 0
    """KV heads of this layer where they differ from the model's (Gemma 4's full-attention layers,
    MiMo-V2's sliding ones); 0 = `num_kv_heads`. Every layer of one kind has the same geometry."""
    head_dim: int = 0
    """Key head size of this layer where it differs from the model's `head_dim`; 0 = the model's."""
    v_head_dim: int = 0
    """Value head size vLLM caches beside the key (`head_size_v`, MiMo-V2: 128 beside 192); 0 = the key's."""
    kv_shared_with: int | None = None
    """The earlier layer whose KV cache this layer reads (vLLM's `kv_sharing_target_layer_name`, Gemma 4
    E2B/E4B's last `num_kv_shared_layers`): it keeps no cache of its own; None = its own cache."""


@dataclass(frozen=True)
class MoESpec:
    """Mixture-of-experts feed-forward shape (same for every MoE layer)."""

    num_experts: int
    """Routed experts per MoE layer."""
    experts_per_token: int
    """Routed experts each token goes through (top-k)."""
    expert_intermediate_size: int
    """Intermediate size of one routed expert."""
    num_shared_experts: int = 0
    """Always-on shared experts (DeepSeek); Qwen2-MoE's single shared expert counts as 1."""
    shared_intermediate_size: int = 0
    """Intermediate size of the shared expert block (already multiplied out where the config says so)."""
    shared_expert_gate: bool = False
    """Qwen2-MoE: a sigmoid gate (hidden -> 1) in front of the shared expert."""
    router_bias: bool = False
    """Router (gate) linear has a bias (gpt-oss)."""
    router_correction_bias: bool = False
    """DeepSeek-V3 `noaux_tc`: a per-expert `e_score_correction_bias`."""
    expert_bias: bool = False
    """Expert linears carry biases (gpt-oss)."""
    latent_size: int = 0
    """Latent MoE (Nemotron 3 Super `moe_latent_size`): the routed experts work in this width, between
    replicated fc1/fc2 latent projections; 0 = the hidden size."""


@dataclass(frozen=True)
class MLASpec:
    """Multi-head latent attention dimensions (DeepSeek-V2/V3, Kimi)."""

    q_lora_rank: int | None
    """Rank of the query down-projection; None means a plain q_proj (DeepSeek-V2-Lite)."""
    kv_lora_rank: int
    """Width of the compressed KV latent (what the cache stores, with the rope part)."""
    qk_nope_head_dim: int
    """Per-head query/key width without rotary embedding."""
    qk_rope_head_dim: int
    """Per-head rotary width; the key's rope part is shared by all heads and cached."""
    v_head_dim: int
    """Per-head value width."""
    index_n_heads: int = 0
    """DeepSeek sparse attention (V3.2, GLM-5): heads of the lightning indexer; 0 without one."""
    index_head_dim: int = 0
    """Width of the indexer's key, which vLLM caches per token beside the latent (fp8 values plus one
    fp32 scale per 128)."""
    index_shared_layers: tuple[int, ...] = ()
    """Decoder layers without an indexer of their own (GLM-5.2's IndexShare: they reuse the last
    indexer's top-k, and vLLM builds neither its weights nor its key cache); () = every layer has one."""


@dataclass(frozen=True)
class MambaSpec:
    """Per-layer recurrent state of a Mamba / linear-attention layer (hybrid models)."""

    kind: Literal["mamba1", "mamba2", "gdn", "kda"]
    """State layout: Mamba1 (Jamba), Mamba2 (Nemotron-H, Bamba), gated delta net (Qwen3-Next), Kimi
    Delta Attention (Kimi-Linear)."""
    conv_state_shape: tuple[int, ...]
    """Convolution state shape per sequence, unsharded (channels, kernel - 1)."""
    ssm_state_shape: tuple[int, ...]
    """Recurrent (SSM) state shape per sequence, unsharded."""
    tp_dim_conv: int = 0
    """Dimension of the conv state split by tensor parallelism."""
    tp_dim_ssm: int = 0
    """Dimension of the SSM state split by tensor parallelism."""
    chunk_size: int = 2048
    """Mamba chunk size (`mamba_chunk_size` / `chunk_size`); vLLM's prefix-caching mode "all" sizes blocks by it."""
    ssm_dtype: str | None = None
    """The checkpoint's own SSM-state dtype (Qwen3.5's `mamba_ssm_dtype`), which vLLM uses for the
    recurrent state while `--mamba-ssm-cache-dtype` is auto; None = the release's rule."""


@dataclass(frozen=True)
class VisionSpec:
    """A ViT-style vision tower plus its projector, from `vision_config`: the blocks vLLM builds
    (up to the deepest feature layer it reads) and how each part is split across TP ranks."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    """Encoder blocks vLLM builds: all of them, or up to the deepest `vision_feature_layer`."""
    num_heads: int
    patch_size: int
    image_size: int
    num_channels: int = 3
    patch_frames: int = 1
    """Video frames one patch spans (Qwen2-VL's Conv3d temporal_patch_size); 1 for a 2-D patch."""
    takes_video: bool = False
    """vLLM may profile the encoder with a dummy video (Qwen2-VL family; frames per release data)."""
    tokens_per_image: int = 0
    """Text tokens one image becomes after the projector (`mm_tokens_per_image`); 0 = one per patch."""
    position_rows: int = 0
    """Rows of the learned position table (one per patch for SigLIP); 0 with rotary positions (Pixtral)."""
    mlp_gated: bool = False
    """Gate/up/down MLP (Pixtral) instead of fc1/fc2."""
    linear_bias: bool = True
    """Attention and MLP layers carry biases (SigLIP, CLIP, MoonViT); Pixtral's have none."""
    patch_bias: bool = True
    """The patch convolution carries a bias (SigLIP, MoonViT); CLIP's and Pixtral's do not."""
    norm: Literal["layer", "rms"] = "layer"
    """LayerNorm (weight and bias) or RMSNorm (weight only) in the blocks and around them."""
    pre_norm: bool = False
    """A norm after the patch embedding (Pixtral's ln_pre, Llama 4's layernorm_pre)."""
    post_norm: bool = True
    """A norm after the last block; vLLM drops it when it reads an earlier layer (LLaVA-NeXT always)."""
    skipped_layers: int = 0
    """Checkpoint blocks past the deepest feature layer, which vLLM does not build or load."""
    skipped_post_norm: bool = False
    """The checkpoint's post-norm, which vLLM does not build or load."""
    projector_column_params: int = 0
    """Projector parameters split across TP ranks (column/row-parallel weights, column biases)."""
    projector_replicated_params: int = 0
    """Projector parameters every rank holds whole (norms, plain nn.Linear mergers, row-parallel biases)."""
    extra_params: int = 0
    """Replicated vision parameters the ViT formula does not cover (documented where set)."""
    adapter_params: int = 0
    """TP-sharded parameters between encoder and projector (Llama 4's pixel-shuffle MLP)."""
    patch_linear: bool = False
    """Patches go through a bias-free column-parallel linear layer (Llama 4), not a replicated conv."""
    tp_split: bool = True
    """vLLM splits the tower's heads and MLP over TP (so TP must divide them); False: a transformers module
    every rank keeps whole (Gemma 4's `AutoModel.from_config` towers)."""


@dataclass(frozen=True)
class QuantSpec:
    """How the checkpoint's linear weights are stored, read from `quantization_config`."""

    method: str
    """Canonical scheme: fp8, int8, awq, gptq, w4a16, mxfp4, nvfp4, bitsandbytes."""
    weight_bits: int
    """Bits per quantized weight element."""
    group_size: int | None = None
    """Elements sharing one scale along the input dimension (int4 and block formats); None = per channel/tensor."""
    block_shape: tuple[int, int] | None = None
    """Block-wise scales (out, in) for fp8 block quantization, e.g. (128, 128)."""
    scale_granularity: Literal["tensor", "channel", "group", "block"] = "tensor"
    """What one scale covers."""
    zero_points: bool = False
    """Asymmetric int4 (AWQ, GPTQ without sym): packed zero points are stored."""
    desc_act: bool = False
    """GPTQ act-order: a `g_idx` permutation per input row is kept."""
    ignored_modules: tuple[str, ...] = ()
    """Module names or patterns the scheme leaves in full precision (`ignore`, `modules_to_not_convert`)."""
    kv_cache_dtype: str | None = None
    """KV-cache dtype the checkpoint asks for (ModelOpt `kv_cache_quant_algo`), which vLLM 0.14+
    uses for `--kv-cache-dtype auto`."""
    vllm_name: str = ""
    """The `--quantization` value vLLM reports for this checkpoint."""
    source: str = ""
    """Where the scheme was read: config quantization_config, hf_quant_config.json, or --quantization."""
    per_module: tuple[tuple[str, "QuantSpec"], ...] = ()
    """ModelOpt MIXED_PRECISION (`quantized_layers`): each listed module's own scheme, looked up as
    vLLM does (`planner.models.quantization.module_scheme`); a linear not listed stays unquantized."""
    scale_dtype: str | None = None
    """The scales' stored dtype when the checkpoint says (`scale_fmt` ue8m0: F8_E8M0, which the Hub's
    safetensors total leaves out, as it does for MXFP4); None = float32."""


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only language model (plus an optional vision tower), normalized."""

    model_type: str
    """Text model type (`llama`, `qwen3_moe`, ...) after unwrapping multimodal configs."""
    architecture: str
    """First entry of `architectures` (the class vLLM instantiates)."""
    hidden_size: int
    vocab_size: int
    num_heads: int
    """Query heads."""
    num_kv_heads: int
    """Key/value heads (GQA/MQA); equals num_heads for MHA. For MLA it is num_heads (keys are per head)."""
    head_dim: int
    """Query/key head size (explicit `head_dim` wins over hidden/heads, as vLLM does)."""
    v_head_dim: int
    """Value head size (differs from head_dim only for MLA)."""
    intermediate_size: int
    """Dense MLP intermediate size."""
    layers: tuple[LayerSpec, ...]
    max_position_embeddings: int
    dtype: str
    """Checkpoint dtype from `torch_dtype`/`dtype` (bfloat16, float16, float32)."""
    gated_mlp: bool = True
    """SwiGLU/GeGLU (gate, up, down) versus a plain two-matrix MLP (fc1, fc2)."""
    fused_qkv: bool = False
    """Checkpoint stores q, k, v as one `qkv_proj` (Phi-3)."""
    fused_gate_up: bool = False
    """Checkpoint stores gate and up as one `gate_up_proj` (Phi-3)."""
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    norm: Literal["rms", "layer"] = "rms"
    """RMSNorm (weight only) or LayerNorm (weight and bias)."""
    norms_per_layer: int = 2
    """Norms inside one decoder layer (2 for Llama; 4 for Gemma 2/3; 1 for Phi-2's parallel block)."""
    qk_norm: bool = False
    """Per-head RMSNorm on q and k (Qwen3, Gemma 3, Llama 4's is weightless)."""
    qk_norm_params: bool = True
    """Whether the qk norm has weights (Llama 4's L2 norm has none)."""
    lm_head_bias: bool = False
    tie_word_embeddings: bool = False
    learned_positions: int = 0
    """Rows of a learned position embedding (OPT: max_position + 2); 0 for rotary models."""
    rotary_dim: int = 0
    """Rotary width per head (partial rotary for Phi-2); 0 when there is no rotary embedding."""
    rope_scaling: dict | None = None
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    mamba: MambaSpec | None = None
    num_mtp_layers: int = 0
    """Multi-token-prediction layers stored in the checkpoint (DeepSeek-V3); vLLM loads them only for
    speculative decoding."""
    layer_intermediate_sizes: tuple[int, ...] = ()
    """Heterogeneous FFN widths, one per layer, 0 for a layer without FFN (nemotron-nas / DeciLM block
    configs); empty = `intermediate_size` in every layer (which then holds the widest)."""
    compress_ratios: tuple[int, ...] = ()
    """DeepSeek-V4: each decoder layer's KV compression (1 = sliding-window cache only, 4 = compressed
    with a lightning indexer, 128 = compressed), `planner.kv_layout`'s packed groups; () for others."""
    index_key_layers: tuple[int, ...] = ()
    """MiniMax-M3: the decoder layers whose lightning indexer caches its keys (one head per token, an
    MLAAttentionSpec beside the layer's GQA cache, in the same uniform-type group); () = none."""
    index_key_bytes: int = 0
    """Bytes per token of one such key cache (`MiniMaxM3IndexerCache`: index_head_dim in bf16)."""
    family_fields: tuple[tuple[str, int], ...] = ()
    """Integer config fields a family's own tensor builder and KV layout read beyond the spec's
    (DeepSeek-V4: q_lora_rank, o_lora_rank, o_groups, hc_mult, index sizes, num_hash_layers)."""
    checkpoint_rotary_buffers: bool = False
    """The checkpoint stores each layer's `rotary_emb.inv_freq` (Llama-2); vLLM does not load them."""
    per_layer_input_size: int = 0
    """Gemma 4 E2B/E4B per-layer embeddings: width of each layer's slice of `embed_tokens_per_layer`
    (`hidden_size_per_layer_input`); 0 without them."""
    per_layer_input_vocab: int = 0
    """Rows of `embed_tokens_per_layer` (`vocab_size_per_layer_input`)."""
    audio_params: tuple[int, int] = (0, 0)
    """(audio tower, its projector into the text model): replicated parameters of an audio encoder
    (Gemma 4's `gemma4_audio`); (0, 0) without one."""
    init_buffer_width: int = 0
    """Elements per scheduled token of the buffers the model allocates on the GPU at start-up, each
    max_num_batched_tokens rows in the model dtype (Qwen3-VL's DeepStack inputs, Gemma 4's per-layer
    embeddings); vLLM counts them in the model-loading memory (`families.qwen3_vl.init_buffer_bytes`)."""
    vision: VisionSpec | None = None
    quant: QuantSpec | None = None
    max_model_len_default: int = 0
    """The `max_model_len` the newest vLLM release derives from the config (reference section 6);
    `budget.default_max_model_len` applies a given release's RoPE rules to `max_len_base`."""
    max_len_base: int = 0
    """Context limit before RoPE scaling (smallest of vLLM's length keys)."""
    original_max_position_embeddings: int | None = None
    """Top-level `original_max_position_embeddings` (LongRoPE)."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Things the normalizer assumed or noticed, shown to the user as warnings."""

    def __post_init__(self) -> None:
        for name in ("hidden_size", "vocab_size", "num_heads", "num_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.layers:
            raise ValueError("a model needs at least one decoder layer")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer_type_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.attention] = counts.get(layer.attention, 0) + 1
        return counts
