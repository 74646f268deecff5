"""ModelOpt MIXED_PRECISION (planner/models/quantization.py): each module of `quantized_layers` in its
own scheme, looked up as vLLM's ModelOptMixedPrecisionConfig does, over a real checkpoint's files
(tests/data/modelopt_mixed: Nemotron 3.5 Lightning NVFP4: W4A16_NVFP4 experts, FP8 Mamba
projections); bad input as one-line errors, exit 2."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

from planner import accounting as acc
from planner.api import inspect, plan
from planner.cli import main
from planner.errors import PlannerError
from planner.models import tensors as T
from planner.models.normalize import normalize
from planner.models.quantization import parse_quantization

DATA = Path(__file__).parent / "data" / "modelopt_mixed"
NAME = "NVIDIA-Nemotron-3.5-Lightning-30B-A3B-NVFP4"
CONFIG = json.loads((DATA / f"{NAME}_config.json").read_text())
HF_QUANT = json.loads(gzip.decompress((DATA / f"{NAME}_hf_quant_config.json.gz").read_bytes()))


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "hf_quant_config.json").write_text(json.dumps(HF_QUANT))
    return tmp_path


def _by_name():
    spec = normalize(CONFIG, quant_files={"hf_quant_config.json": HF_QUANT})
    return spec, {t.name: t for t in T.from_spec(spec)}


def test_each_module_takes_its_listed_scheme():
    spec, named = _by_name()
    q = spec.quant
    assert (q.vllm_name, q.kv_cache_dtype) == ("modelopt_mixed", "fp8")
    layers = HF_QUANT["quantization"]["quantized_layers"]
    for name, t in named.items():
        module = name.removesuffix(".weight")
        scheme = acc.scheme_of(t, q)
        if ".experts." in name and t.loaded:  # the stacked experts take the scheme of the experts listed
            algo = layers[module.replace(".experts.", ".experts.0.")]["quant_algo"]
        else:
            listed = layers.get(module)
            algo = listed["quant_algo"] if listed and t.linear and not acc.is_ignored(name, q) else None
        assert (scheme and scheme.method) == {"W4A16_NVFP4": "nvfp4", "FP8": "fp8", None: None}[algo], name


def test_bytes_follow_each_scheme():
    spec, named = _by_name()
    q = spec.quant
    fp8 = named["backbone.layers.0.mixer.in_proj.weight"]  # FP8 per tensor: weight + two fp32 scales
    assert acc.tensor_bytes(fp8, spec, q, 2, 1) == fp8.numel + 8
    experts = named["backbone.layers.1.mixer.experts.up_proj"]  # NVFP4: packed pairs, fp8 scale per 16
    n = experts.numel
    assert acc.tensor_bytes(experts, spec, q, 2, 1) == n // 2 + n // 16 + 8 * 128
    attention = named["backbone.layers.5.mixer.q_proj.weight"]  # exclude_modules: bf16
    assert acc.tensor_bytes(attention, spec, q, 2, 1) == 2 * attention.numel


def test_inspect_and_plan(model_dir):
    r = inspect(str(model_dir), tp=1)
    assert r.quantization == "modelopt_mixed" and r.weight_bytes_per_gpu > 0
    p = plan(str(model_dir), gpu="H100", tp=1, max_model_len=32768)
    assert p.serve_command.startswith("vllm serve ")


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda q: q.pop("quantized_layers"), "quantized_layers"),
        (
            lambda q: q["quantized_layers"].__setitem__("backbone.layers.0.mixer.in_proj", {"quant_algo": "INT3"}),
            "INT3",
        ),
        (lambda q: q["quantized_layers"].__setitem__("backbone.layers.0.mixer.in_proj", {}), "quant_algo"),
        (
            lambda q: q["quantized_layers"].__setitem__(
                "backbone.layers.0.mixer.in_proj", {"quant_algo": "NVFP4", "group_size": 0}
            ),
            "group_size",
        ),
    ],
)
def test_bad_input_is_a_one_line_error(edit, field):
    files = copy.deepcopy(HF_QUANT)
    edit(files["quantization"])
    with pytest.raises(PlannerError) as err:
        parse_quantization(CONFIG, {"hf_quant_config.json": files})
    assert field in str(err.value) and "\n" not in str(err.value)


def test_bad_input_exits_2(model_dir, capsys):
    files = copy.deepcopy(HF_QUANT)
    files["quantization"]["quantized_layers"] = {}
    (model_dir / "hf_quant_config.json").write_text(json.dumps(files))
    assert main(["inspect", str(model_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "quantized_layers" in err and len(err.splitlines()) == 1


QWEN36 = "Qwen3.6-35B-A3B-NVFP4"


def test_wrapper_names_and_fused_shards_resolve_as_vllm_does():
    # the checkpoint lists model.language_model.layers.N.* and the GDN's split in_proj_qkv / in_proj_z,
    # which the tensor list holds fused (in_proj_qkvz) under model.layers.N, as vLLM does
    config = json.loads((DATA / f"{QWEN36}_config.json").read_text())
    files = {"hf_quant_config.json": json.loads((DATA / f"{QWEN36}_hf_quant_config.json").read_text())}
    spec = normalize(config, quant_files=files)
    named = {t.name: t for t in T.from_spec(spec)}
    method = {name: (acc.scheme_of(t, spec.quant) or spec.quant).method for name, t in named.items() if t.linear}
    assert method["model.layers.0.linear_attn.in_proj_qkvz.weight"] == "fp8"  # both shards FP8
    assert method["model.layers.0.linear_attn.out_proj.weight"] == "fp8"
    assert acc.scheme_of(named["model.layers.0.linear_attn.in_proj_ba.weight"], spec.quant) is None  # not listed
    assert method["model.layers.3.self_attn.q_proj.weight"] == "fp8"
    assert method["model.layers.3.mlp.experts.gate_up_proj"] == "nvfp4"  # the stacked experts key
    assert method["model.layers.3.mlp.shared_expert.up_proj.weight"] == "nvfp4"
    assert acc.scheme_of(named["mtp.fc.weight"], spec.quant) is None  # ignore: mtp*


# ---- MXFP8 (vLLM's modelopt_mxfp8): nvidia/MiniMax-M3-NVFP4 keeps its attention and dense MLPs in it --------


def test_mxfp8_modules_hold_e4m3_values_and_an_e8m0_scale_per_32():
    from planner.api import load_model

    m = load_model("nvidia/MiniMax-M3-NVFP4")
    q = m.spec.quant
    named = {t.name: t for t in m.tensors}
    q_proj = named["model.layers.0.self_attn.q_proj.weight"]  # listed as MXFP8 (language_model.model...)
    s = acc.scheme_of(q_proj, q)
    assert (s.method, s.group_size, s.scale_dtype, s.vllm_name) == ("mxfp8", 32, "uint8", "modelopt_mxfp8")
    assert acc.tensor_bytes(q_proj, m.spec, q, 2, 1) == 8192 * 6144 + 8192 * 6144 // 32
    # the published-count rule: one element per e4m3 value, one per uint8 scale
    assert acc.scale_elements(s, q_proj.shape) == 8192 * 6144 // 32


def test_mxfp8_as_the_whole_checkpoints_algo(model_dir):
    hf = {"quantization": {"quant_algo": "MXFP8", "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head"]}}
    q = parse_quantization({"architectures": ["X"]}, {"hf_quant_config.json": hf})
    assert (q.method, q.weight_bits, q.group_size, q.kv_cache_dtype, q.ignored_modules) == (
        "mxfp8",
        8,
        32,
        "fp8",
        ("lm_head",),
    )
