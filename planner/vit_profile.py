"""The vision encoder's share of vLLM's profile run: the dummy item vLLM profiles (the image of the
most features, or for video models the longest video that fits) and the bytes per patch one ViT block
holds at its peak (planner/overheads.py features uses them; the block facts are `vision_blocks` in
profiles/vllm/overheads.yaml). Pure functions of the model's VisionSpec."""

from __future__ import annotations

from planner.models.spec import VisionSpec
from planner.overhead_table import VisionBlock


def largest_dummy_item(v: VisionSpec, length: int, video_frames: int) -> tuple[int, int]:
    """(patches, text tokens) of the multimodal item vLLM profiles: the image of the most features,
    or, for video models (video_frames > 0), the video of at most that many frames whose tokens fit
    `length` (at least one frame group: qwen2_vl.py get_num_frames_with_most_features), which wins
    ties."""
    patches = (v.image_size // v.patch_size) ** 2
    tokens = v.tokens_per_image or patches
    if v.takes_video and video_frames:
        groups = -(-video_frames // v.patch_frames)  # frames padded to the Conv3d's temporal patch
        if length:
            groups = min(groups, max(1, length // tokens))
        return groups * patches, groups * tokens
    return patches, tokens


def vit_block_bytes(v: VisionSpec, blk: VisionBlock, tp: int, b: int) -> int:
    """Bytes per patch alive at the ViT's peak on one TP rank: the larger of the MLP phase (the block's
    [patches, hidden] tensors beside the MLP's column outputs: gate/up or fc1, and the activation) and
    the attention phase (the whole and TP-split hidden-width tensors, fp32 ones at 4 B), plus the
    dummy batch's pixel values, which the caller holds through every block."""
    h = v.hidden_size
    mlp = blk.mlp_hidden * h * b + (3 if v.mlp_gated else 2) * v.intermediate_size // tp * b
    attention = blk.attention_whole_hidden * h * b + (
        blk.attention_split_hidden * b + blk.attention_fp32_split_hidden * 4
    ) * (h // tp)
    return max(mlp, attention) + v.num_channels * v.patch_frames * v.patch_size**2 * blk.pixel_bytes


def context_steps(v: VisionSpec | None, below: int, video_frames: int) -> list[int]:
    """For video models, the longest max_model_len under `below` at which vLLM's dummy video has
    each smaller number of frame groups, longest first; [] for image-only models."""
    if v is None or not v.takes_video or not video_frames:
        return []
    tokens = v.tokens_per_image or (v.image_size // v.patch_size) ** 2
    now = largest_dummy_item(v, below, video_frames)[1] // tokens
    return [(g + 1) * tokens - 1 for g in range(now - 1, 0, -1)]
