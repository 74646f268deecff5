"""Wall time of planner commands as new processes (what a user waits for), median of N runs.

    python benchmarks/speed.py [--runs 7]

Targets (issues #2, #3): inspect and plan of a bundled model < 0.5 s; an inventory plan across
every catalogue GPU and every valid layout < 1 s, on the 2-core CI machine.

Each command runs once untimed first, with bytecode caching on (PYTHONDONTWRITEBYTECODE removed for
the children), as for an installed package: without cached bytecode every run recompiles the
planner's modules, about 0.13 s more here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

COMMANDS = {
    "python startup (baseline)": ["-c", "pass"],
    "inspect Qwen/Qwen2.5-7B-Instruct": ["-m", "planner", "inspect", "Qwen/Qwen2.5-7B-Instruct"],
    "plan qwen3-8b --gpu H100": ["-m", "planner", "plan", "qwen3-8b", "--gpu", "H100"],
    "plan llama3.1-70b --gpu L4 (misfit: layouts + fixes)": ["-m", "planner", "plan", "llama3.1-70b", "--gpu", "L4"],
}


def inventory_of_every_gpu() -> str:
    sys.path.insert(0, str(REPO))
    from planner.hardware import load_catalogue

    return ",".join(f"1x8x{g.name}" for g in load_catalogue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args(argv)
    cmds = dict(COMMANDS)
    cmds["plan --inventory (every catalogue GPU, 8 per node)"] = [
        "-m",
        "planner",
        "plan",
        "llama3.1-70b",
        "--inventory",
        inventory_of_every_gpu(),
        "--context",
        "32768",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for name, args in cmds.items():
        times = []
        for i in range(a.runs + 1):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if i:  # the first run writes the bytecode cache
                times.append(time.perf_counter() - t)
        print(f"{statistics.median(times):6.3f} s  (min {min(times):.3f})  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
