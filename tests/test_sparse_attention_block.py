"""DSA block sizes (DeepSeek-V3.2, GLM-5.x: MLA with a lightning indexer) as vLLM 0.32 sets them on CUDA.

The indexer's cache is built on DeepseekV32IndexerBackend (v1/attention/backends/mla/indexer.py), whose
get_supported_kernel_block_sizes is [64] off ROCm; AttentionBackend.supports_block_size accepts a block
that is a multiple of a supported size. Without --block-size, Platform._preferred_block_size_for_backends
takes the smallest size every backend accepts: the lcm of the sparse MLA backend's base (FLASHMLA_SPARSE,
FLASH_ATTN_MLA_SPARSE, FLASHINFER_MLA_SPARSE_SM90 and _SM120 MultipleOf(64), FLASHINFER_MLA_SPARSE
MultipleOf(32)) and the indexer's 64: 64 on Hopper and Blackwell (no sparse backend before SM90).
A --block-size the indexer does not take leaves vLLM no attention backend: refused here, one line,
exit 2. ROCm's indexer takes multiples of 16 (not checked)."""

from __future__ import annotations

import json

import pytest

from planner.api import load_model
from planner.cli import main
from planner.models import sources

DSA = sorted(
    m for m in sources.bundled_ids() if (load_model(m).spec.mla or None) and load_model(m).spec.mla.index_head_dim
)
GPUS = ["H100-SXM-80GB", "H200", "B200", "RTX-PRO-6000-Blackwell"]


def test_the_dsa_profiles_are_found():
    assert {"deepseek-ai/DeepSeek-V3.2", "zai-org/GLM-5", "zai-org/GLM-5.2-FP8"} <= set(DSA)


def _plan(model_id: str, gpu: str, *extra: str) -> list[str]:
    return ["plan", model_id, "--gpu", gpu, "--tp", "8", "--max-model-len", "8192", "--json", *extra]


@pytest.mark.parametrize("model_id", DSA)
@pytest.mark.parametrize("gpu", GPUS)
def test_default_block_is_the_indexers_64(model_id, gpu, capsys):
    for kv in ("auto", "fp8"):
        assert main(_plan(model_id, gpu, "--kv-cache-dtype", kv)) in (0, 1)
        assert json.loads(capsys.readouterr().out)["block_size"] == 64, kv


@pytest.mark.parametrize("model_id", ["deepseek-ai/DeepSeek-V3.2", "zai-org/GLM-5.2"])
@pytest.mark.parametrize("gpu", ["H100-SXM-80GB", "B200"])
@pytest.mark.parametrize("block, ok", [(16, False), (32, False), (48, False), (64, True), (128, True), (256, True)])
def test_a_block_the_indexer_does_not_take_is_refused(model_id, gpu, block, ok, capsys):
    code = main(_plan(model_id, gpu, "--block-size", str(block)))
    if ok:
        assert code in (0, 1) and json.loads(capsys.readouterr().out)["block_size"] == block
        return
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert f"--block-size {block}" in err and "multiple of 64" in err and len(err.splitlines()) == 1


def test_mla_without_an_indexer_keeps_its_block_sizes(capsys):
    # DeepSeek-V3 (no indexer): FLASH_ATTN_MLA on Hopper takes multiples of 16
    assert main(_plan("deepseek-ai/DeepSeek-V3", "H200", "--block-size", "16")) in (0, 1)
    assert json.loads(capsys.readouterr().out)["block_size"] == 16
