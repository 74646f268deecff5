"""vllm-planner: capacity planning for serving LLMs with vLLM.

The data flows one way: model -> spec -> memory -> plan -> launch config -> verification report.
`load_model` and `inspect` are the entry points of the model-accounting step.
"""

from planner.api import Inspection, Model, inspect, load_model
from planner.errors import PlannerError

__all__ = ["Inspection", "Model", "PlannerError", "inspect", "load_model"]
__version__ = "0.1.0"
