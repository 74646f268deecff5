#!/usr/bin/env bash
# vllm-planner: Qwen/Qwen3-30B-A3B on H100-SXM-80GB, vLLM 0.33.0, TP 2 x PP 1
# Plan per GPU: 28.46 GiB weights, 38.23 GiB KV cache = 835,072 tokens, 20.39 requests of 40,960 tokens at once; replicas: 1.
# --kv-cache-memory-bytes pins each GPU's KV pool to the plan's figure, so the server's KV cache matches the plan exactly (vLLM then skips its own memory profiling).
# Every value is shell-quoted.  HF_TOKEN, when the model needs one, is read from your environment.
set -euo pipefail
exec docker run \
    --rm \
    --runtime nvidia \
    --gpus 2 \
    --ipc host \
    -p 8000:8000 \
    -v "$HOME"/.cache/huggingface:/root/.cache/huggingface \
    --env HF_TOKEN \
    --env VLLM_CACHE_ROOT=/root/.cache/huggingface/vllm \
    --entrypoint vllm vllm/vllm-openai:v0.33.0 serve Qwen/Qwen3-30B-A3B \
    --tensor-parallel-size 2 \
    --enable-expert-parallel \
    --max-model-len 40960 \
    --gpu-memory-utilization 0.92 \
    --max-num-seqs 1024 \
    --max-num-batched-tokens 8192 \
    --kv-cache-memory-bytes 41046234712
