# vllm-planner: Qwen/Qwen3-30B-A3B on H100-SXM-80GB, vLLM 0.33.0, TP 2 x PP 1
# Plan per GPU: 28.46 GiB weights, 38.23 GiB KV cache = 835,072 tokens, 20.39 requests of 40,960 tokens at once; replicas: 1.
# --kv-cache-memory-bytes pins each GPU's KV pool to the plan's figure, so the server's KV cache matches the plan exactly (vLLM then skips its own memory profiling).
# The LLM class's defaults differ from vllm serve's: the plan's batch limits are given explicitly.
from vllm import LLM

llm = LLM(
    model='Qwen/Qwen3-30B-A3B',  # the model to serve
    tensor_parallel_size=2,  # chosen: 28.46 GiB of weights per GPU
    enable_expert_parallel=True,  # MoE: whole experts spread over the 2 GPUs of the TP group
    max_model_len=40960,  # the model's full context; KV cache holds 835,072 tokens, 20.39 such requests at once
    gpu_memory_utilization=0.92,  # 72.85 of 79.19 GiB per GPU for vLLM (the release's default)
    max_num_seqs=1024,  # requests scheduled together (the release's default for this GPU, pinned)
    max_num_batched_tokens=8192,  # tokens per scheduler step, the size of the profile run the plan assumes (the release's default for this GPU, pinned)
    kv_cache_memory_bytes=41046234712,  # KV pool pinned to the plan's figure: vLLM skips its own profiling, so the server's KV cache matches the plan exactly
)
