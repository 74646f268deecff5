"""Reads `profiles/training/frameworks.yaml` (the only file I/O of `planner.training`), every field
checked by the one profile loader."""

from __future__ import annotations

import functools

from planner.paths import profiles_dir
from planner.profile_data import data_error, load_table
from planner.training.framework import LOSSES, Framework, LossImpl, ReservedModel, TrainingProfile

WHAT = "training framework data"


@functools.cache
def load_training_profile() -> TrainingProfile:
    path = profiles_dir() / "training" / "frameworks.yaml"
    frameworks = load_table(path, "frameworks", tuple[Framework, ...], WHAT)
    losses = load_table(path, "losses", tuple[LossImpl, ...], WHAT)
    reserved = load_table(path, "reserved", ReservedModel, WHAT)
    if sorted(x.name for x in losses) != sorted(LOSSES):
        raise data_error(path, f"losses must be exactly {', '.join(LOSSES)}")
    for f in frameworks:
        if f.loss not in f.losses or any(x not in LOSSES for x in f.losses):
            raise data_error(path, f"framework {f.name}: loss {f.loss!r} must be one of its losses, all from {LOSSES}")
    for lo, v, hi, name in (
        (reserved.cuda_context_low_gib, reserved.cuda_context_gib, reserved.cuda_context_high_gib, "cuda_context"),
        (reserved.fragmentation_low, reserved.fragmentation, reserved.fragmentation_high, "fragmentation"),
        (reserved.nccl_low_gib, reserved.nccl_gib, reserved.nccl_high_gib, "nccl"),
        (
            reserved.sharded_fragmentation_low,
            reserved.sharded_fragmentation,
            reserved.sharded_fragmentation_high,
            "sharded_fragmentation",
        ),
    ):
        if not 0 <= lo <= v <= hi:
            raise data_error(path, f"reserved.{name}: need 0 <= low <= value <= high, got {lo}, {v}, {hi}")
    return TrainingProfile(frameworks, losses, reserved)
