#!/usr/bin/env bash
# vllm-planner: meta-llama/Llama-3.1-405B on H100-SXM-80GB, vLLM 0.33.0, TP 8 x PP 2 over 2 nodes
# Plan per GPU: 47.28 GiB weights, 19.22 GiB KV cache = 639,632 tokens, 19.52 requests of 32,768 tokens at once; replicas: 1.
# One replica spans 2 nodes (vLLM's --nnodes/--node-rank/--master-addr, no Ray).  Run this
# script on each of them, node 0 first; node 0 serves HTTP on port 8000, the others run headless:
#   NODE_RANK=0 MASTER_ADDR=<node 0 address> bash docker.sh       # on node 0
#   NODE_RANK=1 MASTER_ADDR=<node 0 address> bash docker.sh       # on node 1, and so on
# Every value is shell-quoted.  HF_TOKEN, when the model needs one, is read from your environment.
set -euo pipefail
: "${NODE_RANK:?set NODE_RANK: 0 on the node that serves HTTP, 1 on the others}"
: "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
if [ "$NODE_RANK" = 0 ]; then
  exec docker run \
    --rm \
    --runtime nvidia \
    --gpus 8 \
    --ipc host \
    --network host \
    -v "$HOME"/.cache/huggingface:/root/.cache/huggingface \
    --env HF_TOKEN \
    --env VLLM_CACHE_ROOT=/root/.cache/huggingface/vllm \
    --entrypoint vllm vllm/vllm-openai:v0.33.0 serve meta-llama/Llama-3.1-405B \
    --tensor-parallel-size 8 \
    --pipeline-parallel-size 2 \
    --max-model-len 32768 \
    --gpu-memory-utilization 0.92 \
    --max-num-seqs 1024 \
    --max-num-batched-tokens 8192 \
    --distributed-executor-backend mp \
    --nnodes 2 \
    --node-rank 0 \
    --master-addr "$MASTER_ADDR"
else
  exec docker run \
    --rm \
    --runtime nvidia \
    --gpus 8 \
    --ipc host \
    --network host \
    -v "$HOME"/.cache/huggingface:/root/.cache/huggingface \
    --env HF_TOKEN \
    --env VLLM_CACHE_ROOT=/root/.cache/huggingface/vllm \
    --entrypoint vllm vllm/vllm-openai:v0.33.0 serve meta-llama/Llama-3.1-405B \
    --tensor-parallel-size 8 \
    --pipeline-parallel-size 2 \
    --max-model-len 32768 \
    --gpu-memory-utilization 0.92 \
    --max-num-seqs 1024 \
    --max-num-batched-tokens 8192 \
    --distributed-executor-backend mp \
    --nnodes 2 \
    --node-rank "$NODE_RANK" \
    --master-addr "$MASTER_ADDR" \
    --headless
fi
