# vllm-planner: meta-llama/Llama-3.1-8B-Instruct on H100-SXM-80GB, vLLM 0.33.0, TP 1 x PP 1
# Plan per GPU: 14.99 GiB weights, 54.72 GiB KV cache = 448,272 tokens, 13.68 requests of 32,768 tokens at once; replicas: 1.
# The LLM class's defaults differ from vllm serve's: the plan's batch limits are given explicitly.
from vllm import LLM

llm = LLM(
    model='meta-llama/Llama-3.1-8B-Instruct',  # the model to serve
    max_model_len=32768,  # chosen context per request; KV cache holds 448,272 tokens, 13.68 such requests at once
    gpu_memory_utilization=0.92,  # 72.85 of 79.19 GiB per GPU for vLLM (the release's default)
    max_num_seqs=1024,  # requests scheduled together (the release's default for this GPU, pinned)
    max_num_batched_tokens=8192,  # tokens per scheduler step, the size of the profile run the plan assumes (the release's default for this GPU, pinned)
)
