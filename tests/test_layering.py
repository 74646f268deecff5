"""The data flows one way (model -> spec -> memory -> plan -> perf -> launch -> verification -> CLI): a
step never imports a later one, the accounting never does I/O, and torch, transformers and vllm stay off
the planning path. The CLI (planner/cli/) is the last step: it may import every other, and no module
outside it imports it. Read from the source (every import, also those inside functions)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "planner"

TRAINING_PURE = (
    "states",
    "lora",
    "activations",
    "activation_model",
    "framework",
    "reserved",
    "config",
    "resolve",
    "estimate",
    "fixes",
)
"""planner/training/: every module but `profile` (which reads the framework data) is pure."""

# module -> planner modules it must never import (prefix match)
LATER_STEPS = ("planner.cli", "planner.verify", "planner.launch")
RULES = {
    "planner.dtypes": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api"),
    "planner.models.spec": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.accounting"),
    "planner.models.normalize": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.accounting"),
    "planner.models.fields": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.accounting"),
    "planner.models.hybrids": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.accounting"),
    "planner.models.vision": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.accounting"),
    "planner.models.tensors": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.accounting"),
    "planner.accounting": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api"),
    "planner.expert_split": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.inspection"),
    "planner.kv_layout": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api"),
    "planner.overheads": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api"),
    "planner.linear_prefill": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.accounting"),
    "planner.releases": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api"),
    "planner.hardware": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api"),
    "planner.model_runner": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.accounting"),
    "planner.inspection": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.models.sources"),
    # the budget and the plan build on the accounting's results, never on the API's model loading
    "planner.budget": LATER_STEPS + ("planner.plan", "planner.api"),
    "planner.budget_rules": LATER_STEPS + ("planner.plan", "planner.api", "planner.budget"),
    "planner.budget_notes": LATER_STEPS + ("planner.plan", "planner.api"),
    "planner.target": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.accounting"),
    "planner.units": ("planner",),
    "planner.uncertainty": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api"),
    "planner.installed": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api"),
    "planner.input_files": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.models"),
    "planner.models.checks": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.accounting"),
    "planner.estimate": (
        "planner.budget",
        "planner.plan",
        "planner.api",
        "planner.cli",
        "planner.launch",
        "planner.verify",
    ),
    "planner.batch_defaults": ("planner",),
    "planner.profile_data": LATER_STEPS
    + (
        "planner.plan",
        "planner.budget",
        "planner.api",
        "planner.releases",
        "planner.models",
        "planner.hardware",
        "planner.overheads",
    ),
    **{
        f"planner.training.{m}": LATER_STEPS
        + ("planner.plan", "planner.budget", "planner.api", "planner.training.profile")
        for m in TRAINING_PURE
    },
    "planner.training.__init__": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api"),
    "planner.training.profile": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api"),
    # the plan builds no serve command: the launch step renders it (planner.api joins the two)
    "planner.plan": LATER_STEPS + ("planner.api",),
    # writing files safely serves every step that writes: it builds on none of them
    "planner.output": LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.perf"),
    # the API joins the plan and the launch step's serve command; the verification and the CLI come after it
    "planner.api": ("planner.cli", "planner.verify"),
    # a user's start-ups read back (logs through the verification's parser), before the CLI
    "planner.calibrate": ("planner.cli",),
    "planner.calibrate_io": ("planner.cli",),
    "planner.calibration": ("planner.cli", "planner.verify", "planner.launch"),
    # drawings of the plan's budget and perf's curve: an edge after both, before the launch step
    "planner.plotting": LATER_STEPS,
}
BASICS = LATER_STEPS + ("planner.plan", "planner.budget", "planner.api", "planner.accounting", "planner.models")
"""Errors, paths, data-file reading: every step builds on them, they build on no step."""
RULES.update({f"planner.{m}": BASICS for m in ("errors", "paths", "datafiles")})
RULES["planner.catalog"] = LATER_STEPS  # `vllm-planner models`: a table over the API's model loading
# a module split out of another keeps the rules of the one it came from
for part, whole in {
    "budget_fit": "budget",
    "budget_result": "budget",
    "kv_bytes": "accounting",
    "dtypes_table": "dtypes",
    "gpu_files": "hardware",
    "inventory": "hardware",
    "release_loader": "releases",
    "overhead_table": "overheads",
    "vit_profile": "overheads",
    "comm_buffers": "overheads",
    "overlay": "overheads",
}.items():
    RULES[f"planner.{part}"] = RULES[f"planner.{whole}"]
for m in ("__init__", "quantization", "safetensors", "sources"):
    RULES[f"planner.models.{m}"] = LATER_STEPS + ("planner.plan", "planner.budget", "planner.api")


def _modules(package: str) -> tuple[str, ...]:
    folder = PKG.parent / package.replace(".", "/")
    return tuple(f"{package}.{p.stem}" for p in sorted(folder.glob("*.py")))


# performance comes after the plan and before the launch configs, the verification and the CLI
RULES.update({m: LATER_STEPS for m in _modules("planner.perf")})
# the launch configs come before the verification and the CLI
RULES.update({m: ("planner.verify", "planner.cli") for m in _modules("planner.launch")})
# the verification comes before the CLI (planner/cli/verify.py hands it `build_request`)
RULES.update({m: ("planner.cli",) for m in _modules("planner.verify")})
# Pure steps: numbers in, numbers out. No files, processes or network.
NO_IO = ("subprocess", "socket", "urllib", "http", "shutil", "tempfile", "requests", "huggingface_hub")
PURE = (
    "planner.inspection",
    "planner.accounting",
    "planner.kv_layout",
    "planner.models.spec",
    "planner.models.normalize",
    "planner.models.fields",
    "planner.models.hybrids",
    "planner.models.vision",
    "planner.models.tensors",
    "planner.budget",
    "planner.budget_rules",
    "planner.budget_notes",
    "planner.target",
    "planner.units",
    "planner.uncertainty",
    "planner.models.checks",
    "planner.plan",
    *(f"planner.training.{m}" for m in TRAINING_PURE),
    "planner.dtypes",
    "planner.model_runner",
    "planner.perf.shape",
    "planner.perf.step",
    "planner.perf.service",
    "planner.perf.capacity",
    "planner.perf.fitting",
    "planner.perf.result",
)
HEAVY = ("torch", "transformers", "vllm")
# The model families, one module each (planner/models/families/): the rules of planner.models.normalize.
FAMILIES = tuple(f"planner.models.families.{p.stem}" for p in sorted((PKG / "models" / "families").glob("*.py")))
RULES.update({m: RULES["planner.models.normalize"] for m in FAMILIES})
PURE += FAMILIES


def imports_of(module: str) -> set[str]:
    path = PKG.parent / (module.replace(".", "/") + ".py")
    if not path.exists():  # a package: its __init__.py
        path = PKG.parent / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("module", sorted(RULES))
def test_no_step_imports_a_later_step(module):
    bad = {i for i in imports_of(module) for f in RULES[module] if i == f or i.startswith(f + ".")}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", PURE)
def test_accounting_steps_do_no_io(module):
    bad = {i for i in imports_of(module) if i.split(".")[0] in NO_IO}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_every_module_has_a_rule():
    """A new module states where it sits in the flow (a row above), so it cannot slip past the rules."""
    modules = {
        ".".join(p.relative_to(PKG.parent).with_suffix("").parts)
        for p in PKG.rglob("*.py")
        if p.relative_to(PKG).parts[0] != "cli"
    }
    entry = {"planner.__init__", "planner.__main__"}  # the package marker and `python -m planner` (the CLI)
    missing = sorted(m for m in modules - entry if m not in RULES and m.removesuffix(".__init__") not in RULES)
    assert len(modules) > 50 and not missing, f"give these modules a row in RULES: {missing}"


def test_no_module_outside_the_cli_imports_it():
    """The CLI is the last step: every rule above forbids it, and so does this one for all the rest."""
    outside = [
        ".".join(p.relative_to(PKG.parent).with_suffix("").parts)
        for p in PKG.rglob("*.py")
        if "cli" not in p.relative_to(PKG).parts[:1] and p.name != "__main__.py"  # `python -m planner` runs the CLI
    ]
    assert len(outside) > 50
    bad = {m: i for m in outside for i in imports_of(m) if i == "planner.cli" or i.startswith("planner.cli.")}
    assert not bad, f"import planner.cli from the CLI only: {bad}"


@pytest.mark.parametrize("module", sorted(RULES) + ["planner.api", *_modules("planner.cli")])
def test_heavy_libraries_stay_off_the_planning_path(module):
    assert not {i for i in imports_of(module) if i.split(".")[0] in HEAVY}


def test_a_plan_imports_neither_torch_nor_transformers_nor_vllm():
    code = (
        "import sys; from planner.cli import main; main(['plan', 'qwen3-8b', '--gpu', 'H100', '--json']); "
        "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent)
    assert proc.stderr.strip().splitlines()[-1] == "[]"
