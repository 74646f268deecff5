"""What a sharded QLoRA / LoRA run holds per GPU beyond the sharded states, as the frameworks' code
does it (the mechanisms behind the PEFT docs' 2-GPU Llama-2-70B runs, benchmarks/train_accuracy.py):

- bitsandbytes keeps each weight's NF4 scales (QuantState: absmax, double-quantized) on the module,
  outside the parameter, so ZeRO-3 and FSDP shard and offload the 4-bit codes only;
- DeepSpeed allocates its reduce bucket whole (`reduce_bucket_size` elements) however few parameters train;
- accelerate's FSDP keeps the root unit (embeddings, final norm, lm_head) gathered from its forward
  to the end of the backward pass; torchtune reshards it.
"""

from pathlib import Path

import pytest

from planner.api import load_model
from planner.training import TrainingConfig, estimate_training, load_training_profile
from planner.units import GIB

REPO = Path(__file__).resolve().parent.parent
LLAMA2_70B = REPO / "benchmarks" / "data" / "training" / "configs" / "meta-llama__Llama-2-70b-hf.json"


@pytest.fixture(scope="module")
def llama70b():
    return load_model(str(LLAMA2_70B))


def est(model, **kw):
    base = dict(method="qlora", gradient_checkpointing=True, micro_batch_size=2, seq_len=2048, lora_rank=8)
    return estimate_training(model.spec, model.tensors, TrainingConfig(**(base | kw)))


@pytest.mark.parametrize(
    "kw",
    [
        dict(gpus=2, zero=3),
        dict(gpus=2, zero=3, sharding="fsdp"),
        dict(gpus=2, zero=3, sharding="fsdp", offload="optimizer+params"),
        dict(gpus=8, zero=3, offload="optimizer+params"),
    ],
    ids=["deepspeed-2", "fsdp-2", "fsdp-2-offload", "deepspeed-8-offload"],
)
def test_nf4_scales_stay_whole_on_every_gpu(llama70b, kw):
    one = est(llama70b, base_dtype="bf16")
    sharded = est(llama70b, **kw)
    # absmax: one byte per 64 weights of the 68.4B in decoder linears, about 1 GiB on every GPU
    assert one.states.quant_scales / GIB == pytest.approx(68.45e9 / 64 / GIB, rel=0.02)
    assert sharded.states.quant_scales == one.states.quant_scales
    codes = 0 if kw.get("offload") else -(-one.states.quantized_base // kw["gpus"])
    assert sharded.states.quantized_base == codes


def _comm(model, **kw):
    from planner.training.resolve import resolve

    base = dict(method="qlora", gradient_checkpointing=True, micro_batch_size=2, seq_len=2048, lora_rank=8)
    return resolve(model.spec, model.tensors, TrainingConfig(**(base | kw)), load_training_profile()).comm


@pytest.mark.parametrize("method,rank", [("lora", 8), ("lora", 64), ("full", None)])
def test_deepspeed_reduce_bucket_is_allocated_whole(llama70b, method, rank):
    rm = load_training_profile().reserved
    comm = _comm(llama70b, method=method, lora_rank=rank, gpus=8, zero=3)
    assert comm["ZeRO reduce bucket"] == rm.deepspeed_reduce_bucket_elements * 2  # bf16, whatever trains


@pytest.mark.parametrize("framework,kept", [("hf", True), ("axolotl", True), ("torchtune", False)])
def test_fsdp_root_unit_kept_gathered_where_the_framework_does(llama70b, framework, kept):
    comm = _comm(llama70b, method="lora", framework=framework, gpus=8, zero=3, sharding="fsdp", base_dtype="bf16")
    root = comm.get("FSDP root unit kept gathered (embeddings, norm, lm_head)", 0)
    assert root == ((2 * 32000 * 8192 + 8192) * 2 if kept else 0)  # gathered in bf16
    layer = (855_638_016 + 2 * 8192) * 2  # one Llama-2-70B decoder layer's linears and norms in bf16
    assert comm["FSDP gathered units (current + prefetch)"] == 2 * layer


def test_qlora_gathers_the_codes_not_a_16_bit_copy(llama70b):
    comm = _comm(llama70b, gpus=2, zero=3, sharding="fsdp")
    layer = 855_638_016 // 2 + 2 * 8192 * 2  # 4-bit codes of the linears, the two norms in bf16
    assert comm["FSDP gathered units (current + prefetch)"] == 2 * layer


def test_sharded_qlora_names_the_quant_storage_it_assumes(llama70b):
    """accelerate's FSDP2 leaves non-floating Params4bit (bitsandbytes' default uint8 storage)
    unsharded (accelerate/utils/fsdp_utils.py): the planner's sharded codes assume bf16 storage."""
    sharded = est(llama70b, gpus=2, zero=3, sharding="fsdp")
    assert any("bnb_4bit_quant_storage=bfloat16" in a for a in sharded.assumptions)
    assert not any("bnb_4bit_quant_storage" in a for a in est(llama70b).assumptions)


SHARD_COPY = "FSDP CPU offload: the gathered unit's shard copied to the GPU"


def test_fsdp_cpu_offload_copies_the_gathered_units_shard_to_the_gpu(llama70b):
    """FlatParamHandle.pre_unshard with offload_params: `flat_param_to(device)` puts the unit's CPU
    shard on the GPU as a tensor of its own, the all-gather's input, freed when the gathered flat
    parameter replaces it: one shard-sized block on the unshard stream."""
    layer = 855_638_016 // 2 + 2 * 8192 * 2  # the gathered unit: 4-bit codes plus the bf16 norms
    for gpus in (2, 4, 8):
        comm = _comm(llama70b, gpus=gpus, zero=3, sharding="fsdp", offload="optimizer+params")
        assert comm[SHARD_COPY] == -(-layer // gpus)
    assert SHARD_COPY not in _comm(llama70b, gpus=2, zero=3, sharding="fsdp")


# NCCL's device memory per rank by interconnect class: NVLS measured on H100 (vLLM 0.19 start-ups, TP 2 less
# TP 1), the others NCCL's receive buffers of one connection (4 MiB + 4,915,200 + 524,288 B) x channels.
CONNECTION = 4 * 2**20 + 4_915_200 + 524_288


@pytest.mark.parametrize(
    "link,gpus,gib",
    [
        ("nvls", 2, 1.8),
        ("nvls", 8, 1.8 + 6 * 0.03),
        ("nvlink", 2, 16 * CONNECTION / GIB),
        ("pcie_p2p", 4, 2 * CONNECTION / GIB + 2 * 0.03),
        ("pcie", 2, 0.0),
        (None, 2, 0.5),
        ("nvls", 1, 0.0),
    ],
)
def test_nccl_memory_follows_the_interconnect(llama70b, link, gpus, gib):
    kw = dict(gpus=gpus, zero=3 if gpus > 1 else 0, interconnect=link, base_dtype="bf16")
    e = est(llama70b, **kw)
    assert e.reserved_breakdown.get("NCCL buffers (est.)", 0) / GIB == pytest.approx(gib, abs=0.002)
    lo, hi = load_training_profile().reserved.nccl_for(link, gpus)[1:]
    assert lo <= gib <= hi


def test_unknown_interconnect_is_a_one_line_error(llama70b):
    from planner.errors import PlannerError

    with pytest.raises(PlannerError, match="unknown interconnect 'infiniband'"):
        est(llama70b, gpus=2, zero=3, interconnect="infiniband")


@pytest.mark.parametrize(
    "method,layer", [("lora", (855_638_016 + 2 * 8192) * 2), ("qlora", 855_638_016 // 2 + 2 * 8192 * 2)]
)
def test_fsdp_gathers_layers_as_its_order_does_in_each_phase(llama70b, method, layer):
    """FULL_SHARD with BACKWARD_PRE: no decoder layer gathered at the end of the forward pass (each is
    resharded after its forward), the last one (prefetched) in the loss's backward, the current and the
    prefetched in a layer's backward, the first one alone at the end of the backward pass."""
    import dataclasses

    from planner.training.estimate import phase_bytes
    from planner.training.reserved import FSDP_UNITS
    from planner.training.resolve import resolve

    c = TrainingConfig(
        method=method,
        gradient_checkpointing=True,
        micro_batch_size=2,
        seq_len=2048,
        lora_rank=8,
        gpus=8,
        zero=3,
        sharding="fsdp",
        base_dtype="bf16",
    )
    r = resolve(llama70b.spec, llama70b.tensors, c, load_training_profile())
    without = dataclasses.replace(
        r, fixed_temporary_bytes=r.fixed_temporary_bytes - r.comm[FSDP_UNITS], fsdp_unit_bytes=0
    )
    got = {k: (v - phase_bytes(without, 2, 2048)[k]) / layer for k, v in phase_bytes(r, 2, 2048).items()}
    assert got == {
        "end of forward": 0,
        "loss backward": 1,
        "layer backward": 2,
        "end of backward": 1,
        "optimizer step": 0,
    }
