#!/usr/bin/env bash
# vllm-planner: meta-llama/Llama-3.1-8B-Instruct on H100-SXM-80GB, vLLM 0.33.0, TP 1 x PP 1
# Plan per GPU: 14.99 GiB weights, 54.72 GiB KV cache = 448,272 tokens, 13.68 requests of 32,768 tokens at once; replicas: 1.
# Every value is shell-quoted.  HF_TOKEN, when the model needs one, is read from your environment.
set -euo pipefail
exec docker run \
    --rm \
    --runtime nvidia \
    --gpus 1 \
    --ipc host \
    -p 8000:8000 \
    -v "$HOME"/.cache/huggingface:/root/.cache/huggingface \
    --env HF_TOKEN \
    --env VLLM_CACHE_ROOT=/root/.cache/huggingface/vllm \
    --entrypoint vllm vllm/vllm-openai:v0.33.0 serve meta-llama/Llama-3.1-8B-Instruct \
    --max-model-len 32768 \
    --gpu-memory-utilization 0.92 \
    --max-num-seqs 1024 \
    --max-num-batched-tokens 8192
