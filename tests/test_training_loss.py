"""What the full cross-entropy keeps and adds, against real transformers code on CPU: a one-layer
Llama with a 32k vocabulary, its loss run forward and backward as Trainer's compute_loss does
(tests/train_loss_probe.py tracks every live storage op by op). The profile's figures
(profiles/training/frameworks.yaml, `losses: full`) must bracket what the code keeps: the kept
log-probabilities, the backward peak between the range's low end and the figure the fit uses, and
a forward pass that never exceeds that figure."""

from __future__ import annotations

import json
import subprocess

import pytest
from launch_helpers import REPO, require_vllm_python

from planner.training import load_training_profile

CASES = [
    dict(name="bf16", dtype="bfloat16", autocast=False, vocab=32000, batch=2, seq=256),
    dict(name="fp32-base-autocast", dtype="float32", autocast=True, vocab=32000, batch=2, seq=256),
]
OTHER = 0.1
"""Bytes per token per vocabulary entry the rest of the one-layer model adds at hidden size 64 (measured: 0.02)."""


@pytest.fixture(scope="module")
def measured():
    py = require_vllm_python()
    out = subprocess.run(
        [py, str(REPO / "tests" / "train_loss_probe.py")],
        input=json.dumps(CASES),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return {d["name"]: d for d in map(json.loads, out.stdout.splitlines())}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_full_cross_entropy_figures_bracket_the_real_code(case, measured):
    loss = load_training_profile().loss("full")
    got = measured[case["name"]]
    # under autocast the frozen fp32 lm_head keeps its bf16 weight copy (the planner's head_weight_cast)
    cast = 2 * 64 / (case["batch"] * case["seq"]) if case["autocast"] else 0.0
    assert loss.kept_bytes_per_vocab + cast <= got["kept"] <= loss.kept_bytes_per_vocab + cast + OTHER
    high = loss.kept_bytes_per_vocab + loss.transient_bytes_per_vocab
    low = loss.kept_bytes_per_vocab + loss.transient_low_bytes_per_vocab
    assert low + cast <= got["backward_peak"] <= low + cast + OTHER  # Trainer drops the outputs before backward
    assert got["backward_peak"] <= high and got["forward_peak"] <= high
