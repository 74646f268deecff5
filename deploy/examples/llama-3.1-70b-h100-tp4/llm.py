# vllm-planner: meta-llama/Llama-3.1-70B-Instruct on H100-SXM-80GB, vLLM 0.33.0, TP 4 x PP 1
# Plan per GPU: 32.89 GiB weights, 33.33 GiB KV cache = 436,832 tokens, 13.33 requests of 32,768 tokens at once; replicas: 2.
# The LLM class's defaults differ from vllm serve's: the plan's batch limits are given explicitly.
from vllm import LLM

llm = LLM(
    model='meta-llama/Llama-3.1-70B-Instruct',  # the model to serve
    tensor_parallel_size=4,  # chosen: 32.89 GiB of weights per GPU
    max_model_len=32768,  # chosen context per request; KV cache holds 436,832 tokens, 13.33 such requests at once
    gpu_memory_utilization=0.92,  # 72.85 of 79.19 GiB per GPU for vLLM (the release's default)
    max_num_seqs=1024,  # requests scheduled together (the release's default for this GPU, pinned)
    max_num_batched_tokens=8192,  # tokens per scheduler step, the size of the profile run the plan assumes (the release's default for this GPU, pinned)
)
