"""vllm-planner: capacity planning for serving LLMs with vLLM."""
