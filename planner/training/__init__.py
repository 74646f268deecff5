"""Training and fine-tuning memory per GPU: full fine-tuning, LoRA and QLoRA, with ZeRO / FSDP
sharding, offload, framework defaults and the reserved footprint the fit is judged on.

Pure (numbers in, numbers out) except `planner.training.profile`, which reads the framework data
under `profiles/training/`, and this package's `estimate_training`, which passes it in. One module per seam:

- `states`: bytes per parameter by precision and optimizer, ZeRO sharding, NF4 (exact);
- `lora`: the linear modules PEFT sees, targets, adapter shapes and states (exact);
- `activations`: what autograd keeps, per layer and after the last (estimated; checked on CPU
  against real transformers + PEFT);
- `framework`, `profile`: the frameworks' defaults as data;
- `reserved`: communication buffers and the reserved footprint (estimated);
- `config`: the setup, its checks and the result; `resolve`: one setup resolved;
- `estimate`: the peak, the fit, the searches; `fixes`: changes that make a misfit fit.
"""

from planner.training.activation_model import ActivationModel, activation_model
from planner.training.activations import (
    ATTENTIONS,
    ActivationAssumptions,
    Terms,
    attention_terms,
    head_terms,
    korthikanti_layer_bytes,
    layer_terms,
    mlp_terms,
    moe_terms,
    norm_bytes,
)
from planner.training.config import (
    DEFAULT_SEQ_LEN_TOKENS,
    METHODS,
    OFFLOADS,
    TrainingConfig,
    TrainingEstimate,
    model_context_tokens,
)
from planner.training.estimate import estimate, peak_allocated_bytes
from planner.training.framework import BASE_DTYPES, LOSSES, Framework, TrainingProfile
from planner.training.lora import (
    LORA_TARGET_ALIASES,
    LinearModule,
    adapter_states,
    decoder_linear_modules,
    lora_adapter_shapes,
    lora_trainable_params,
    resolve_lora_targets,
)
from planner.training.profile import load_training_profile
from planner.training.states import (
    OPTIMIZERS,
    PRECISIONS,
    PRECISIONS_CHOICES,
    ZERO_STAGES,
    ModelStates,
    PrecisionRule,
    nf4_double_quant_bytes,
    optimizer_state_bytes,
    precision_rule,
    trainable_states,
    zero_shard,
)


def estimate_training(
    spec, tensors, config: TrainingConfig, *, profile: TrainingProfile | None = None, **kw
) -> TrainingEstimate:
    """`estimate.estimate` with the bundled framework data (read once) unless `profile` is given."""
    return estimate(spec, tensors, config, profile or load_training_profile(), **kw)


__all__ = [
    "ATTENTIONS",
    "BASE_DTYPES",
    "DEFAULT_SEQ_LEN_TOKENS",
    "LORA_TARGET_ALIASES",
    "LOSSES",
    "METHODS",
    "OFFLOADS",
    "OPTIMIZERS",
    "PRECISIONS",
    "PRECISIONS_CHOICES",
    "ZERO_STAGES",
    "ActivationAssumptions",
    "ActivationModel",
    "Framework",
    "LinearModule",
    "ModelStates",
    "PrecisionRule",
    "Terms",
    "TrainingConfig",
    "TrainingEstimate",
    "TrainingProfile",
    "activation_model",
    "adapter_states",
    "attention_terms",
    "decoder_linear_modules",
    "estimate",
    "estimate_training",
    "load_training_profile",
    "head_terms",
    "korthikanti_layer_bytes",
    "layer_terms",
    "lora_adapter_shapes",
    "lora_trainable_params",
    "mlp_terms",
    "model_context_tokens",
    "moe_terms",
    "nf4_double_quant_bytes",
    "norm_bytes",
    "optimizer_state_bytes",
    "peak_allocated_bytes",
    "precision_rule",
    "resolve_lora_targets",
    "trainable_states",
    "zero_shard",
]
