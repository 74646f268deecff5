# vllm-planner: meta-llama/Llama-3.1-405B on H100-SXM-80GB, vLLM 0.33.0, TP 8 x PP 2 over 2 nodes
# Plan per GPU: 47.28 GiB weights, 19.22 GiB KV cache = 639,632 tokens, 19.52 requests of 32,768 tokens at once; replicas: 1.
# Start a Ray cluster over the 2 nodes first (ray start --head; ray start --address=...), then run this on its head node.
# The LLM class's defaults differ from vllm serve's: the plan's batch limits are given explicitly.
from vllm import LLM

llm = LLM(
    model='meta-llama/Llama-3.1-405B',  # the model to serve
    tensor_parallel_size=8,  # the smallest tensor-parallel size whose weights and KV cache fit: 47.28 GiB of weights per GPU
    pipeline_parallel_size=2,  # layers split over stages, one TP group each
    max_model_len=32768,  # chosen context per request; KV cache holds 639,632 tokens, 19.52 such requests at once
    gpu_memory_utilization=0.92,  # 72.85 of 79.19 GiB per GPU for vLLM (the release's default)
    max_num_seqs=1024,  # requests scheduled together (the release's default for this GPU, pinned)
    max_num_batched_tokens=8192,  # tokens per scheduler step, the size of the profile run the plan assumes (the release's default for this GPU, pinned)
    distributed_executor_backend='ray',  # the engine spans 2 nodes through Ray
)
