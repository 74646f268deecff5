"""Emitted files are safe: every value reaches its launcher as planned (the shell scripts are run
with stub commands, the YAML and Python files parsed back), nothing runs that the user did not
write, nothing is replaced without --force, writes are atomic and never follow a symlink out of the
folder, and verify's report and log are checked before the run and kept apart."""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from launch_helpers import deployment

from planner import cli, output
from planner.errors import PlannerError
from planner.launch import FORMATS, render
from planner.launch.escape import check_model_ref, comment, escape, yaml_quoted
from planner.verify.command import output_paths

ONE_NODE = ("Qwen/Qwen3-8B", "--gpu", "H100")
TWO_NODES = ("meta-llama/Llama-3.1-405B", "--gpu", "H100", "--max-model-len", "32768")

# Printable model references that every format must carry through as one unchanged argument; each
# would run `touch PWNED` or change type if pasted unquoted somewhere.
ACCEPTED = [
    "/m/$(touch PWNED)",
    "/m/`touch PWNED`",
    "/m/a;touch PWNED;b",
    '/m/it\'s "q"',
    "/m/${HOME}$$x",
    "0123",
    "true",
    "null",
    "~",
    "1e3",
    "/m/#not a comment",
    "/m/key: value",
    "/m/[a, b]",
    "/m/{a: b}",
    "/m/émoji 🚀 中文",
    "/m/back\\slash\\n",
    "/m/$(VAR) $$(VAR)",
    "/m/%s %(x)s {x}",
    "/m/ends with space ",
]
# Not printable, or an option to vLLM: refused with one line.
REFUSED = [
    "x\ntouch PWNED",
    "x\rtouch PWNED",
    "x\x85y",
    "x\u2028y",
    "x\u2029y",
    "x\x1b[31my",
    "x\x00y",
    "x\ty",
    "x\udcffy",
    "x\ufeffy",
    "x\u200by",
    "-x",
    "--help",
    "",
    "   ",
    "a" * 5000,
]


def _stub(bin_dir: Path, name: str, body: str = "") -> None:
    path = bin_dir / name
    path.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        + (body or "open(os.environ['ARGV_OUT'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    )
    path.chmod(0o755)


def _run_script(text: str, tmp_path: Path, env: dict[str, str]) -> list[list[str]]:
    """Run an emitted shell script with `vllm`, `docker`, `ray` and `python3` stubbed; the argv each got."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("vllm", "docker", "ray"):
        _stub(bin_dir, name)
    _stub(bin_dir, "python3", "print(99)\n")  # the Ray head's "how many nodes joined" check
    script, out = tmp_path / "script.sh", tmp_path / "argv.jsonl"
    script.write_text(text)
    out.unlink(missing_ok=True)
    run_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ARGV_OUT": str(out), "HOME": str(tmp_path), **env}
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def _kube(word: str) -> str:
    return word.replace("$$", "$")  # what the kubelet (and Compose) hand the process


def _model_in(fmt: str, text: str, tmp_path: Path) -> list[str]:
    """The model argument(s) the launcher of `fmt` would pass to vLLM."""
    if fmt == "serve":
        runs = _run_script(text, tmp_path, {"NODE_RANK": "0", "MASTER_ADDR": "10.0.0.1"})
        runs += (
            _run_script(text, tmp_path, {"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"}) if "NODE_RANK" in text else []
        )
        return [argv[argv.index("serve") + 1] for argv in runs if "serve" in argv]
    if fmt == "docker":
        runs = _run_script(text, tmp_path, {"NODE_RANK": "0", "MASTER_ADDR": "10.0.0.1"})
        return [argv[argv.index("serve") + 1] for argv in runs]
    if fmt == "python":
        call = next(
            n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "LLM"
        )
        return [ast.literal_eval(next(k.value for k in call.keywords if k.arg == "model"))]
    docs = [d for d in yaml.safe_load_all(text) if d]
    if fmt == "yaml":
        return [docs[0]["model"]]
    if fmt == "compose":
        return [_kube(docs[0]["services"]["vllm"]["command"][0])]
    if fmt == "helm":
        return [_kube(docs[0]["servingEngineSpec"]["modelSpec"][0]["modelURL"])]
    if fmt == "kserve":
        args = docs[0]["spec"]["predictor"]["model"]["args"]
        return [_kube(a.split("=", 1)[1]) for a in args if a.startswith("--model_id=")]
    if fmt == "k8s":
        dep = next(d for d in docs if d["kind"] == "Deployment")
        return [_kube(dep["spec"]["template"]["spec"]["containers"][0]["args"][0])]
    if fmt == "lws":
        spec = next(d for d in docs if d["kind"] == "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
        return [_kube(t["spec"]["containers"][0]["args"][0]) for t in (spec["leaderTemplate"], spec["workerTemplate"])]
    raise AssertionError(fmt)


def _cases():
    for plan, formats in [
        (ONE_NODE, ("serve", "yaml", "python", "docker", "compose", "k8s", "helm", "kserve")),
        (TWO_NODES, ("serve", "yaml", "python", "docker", "lws")),
    ]:
        for fmt in formats:
            yield pytest.param(plan, fmt, id=f"{plan[0].split('/')[1]}-{fmt}")


def test_every_format_is_covered():
    assert {fmt for p in _cases() for fmt in [p.values[1]]} == set(FORMATS)


@pytest.mark.parametrize("plan,fmt", list(_cases()))
def test_a_hostile_model_reference_reaches_vllm_unchanged_and_runs_nothing(plan, fmt, tmp_path):
    for ref in ACCEPTED:
        text = render(fmt, deployment(*plan, model_ref=ref))
        assert escape(text.replace("\n", "")) == text.replace("\n", ""), f"{fmt}: raw control character for {ref!r}"
        got = _model_in(fmt, text, tmp_path)
        assert got and all(g == ref for g in got), (fmt, ref, got)
        assert not (tmp_path / "PWNED").exists(), (fmt, ref)


@pytest.mark.parametrize("ref", REFUSED, ids=lambda r: repr(r[:12]))
def test_an_unsafe_model_reference_is_refused_in_one_line(ref, capsys):
    code = cli.main(["emit", *ONE_NODE, "-f", "serve", "--model-ref", ref])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--model-ref" in err, err
    assert escape(err) == err  # the message itself carries no control character


def test_a_local_folder_with_a_newline_in_its_name_is_refused(tmp_path):
    folder = tmp_path / "evil\ntouch PWNED"
    folder.mkdir()
    (folder / "config.json").write_text(
        (Path(cli.__file__).parents[2] / "profiles/models/Qwen/Qwen3-8B/config.json").read_text()
    )
    code = cli.main(["emit", str(folder), "--gpu", "H100", "-f", "serve"])
    assert code == 2 and not (tmp_path / "PWNED").exists()


def test_a_gpu_name_with_a_line_break_is_refused(tmp_path, capsys):
    gpu_file = tmp_path / "gpus.yaml"
    gpu_file.write_text(
        yaml.safe_dump(
            {"gpus": [{"name": "X\ntouch PWNED", "vendor": "nvidia", "memory_gib": 79.2, "bandwidth_tbs": 3.35}]}
        )
    )
    code = cli.main(["plan", "Qwen/Qwen3-8B", "--gpu-file", str(gpu_file), "--gpu", "X"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "printable" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("text", ["x\ny", "a\x85b", "a\u2028b", "\x1b[31m", "#\n# ok", "tab\there", "🚀 fine"])
def test_a_comment_stays_one_comment_line(text):
    line = comment(text)
    assert "\n" not in line and line.startswith("# ") and escape(line) == line
    assert yaml.safe_load(f"{line}\nk: 1") == {"k": 1}
    assert ast.parse(f"{line}\nk = 1").body[0].targets[0].id == "k"  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ACCEPTED + ["a\x85b", "a\u2028b", "\x1b", "tab\t", "\x00", 'q"uote\\', "\U0001f680"])
def test_a_yaml_quoted_string_parses_back_to_itself(text):
    assert yaml.safe_load(f"k: {yaml_quoted(text)}") == {"k": text}


def test_check_model_ref_keeps_a_good_reference():
    assert check_model_ref("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"


# ---- writing files --------------------------------------------------------------------------------


def _emit(out: Path, *extra: str) -> int:
    return cli.main(["emit", *ONE_NODE, "-f", "all", "--out", str(out), *extra])


def test_existing_files_are_listed_and_kept_without_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "k8s.yaml"
    mine.write_text("my own file\n")
    mine.chmod(0o444)
    assert _emit(out) == 2
    err = capsys.readouterr().err
    assert "k8s.yaml" in err and "--force" in err
    assert mine.read_text() == "my own file\n" and stat.S_IMODE(mine.stat().st_mode) == 0o444
    assert sorted(p.name for p in out.iterdir()) == ["k8s.yaml"]  # nothing else was written either


def test_force_replaces_even_a_read_only_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "k8s.yaml").write_text("old\n")
    (out / "k8s.yaml").chmod(0o444)
    assert _emit(out, "--force") == 0
    assert "kind: Deployment" in (out / "k8s.yaml").read_text()


def test_a_symlink_in_the_folder_is_replaced_never_followed(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    outside.write_text("precious\n")
    (out / "k8s.yaml").symlink_to(outside)
    (out / "serve.sh").symlink_to(tmp_path / "does-not-exist")  # dangling: would create a file outside
    assert _emit(out) == 2
    assert _emit(out, "--force") == 0
    assert outside.read_text() == "precious\n" and not (tmp_path / "does-not-exist").exists()
    assert not (out / "k8s.yaml").is_symlink() and not (out / "serve.sh").is_symlink()


def test_modes_follow_the_umask_and_no_temp_file_is_left(tmp_path):
    out = tmp_path / "out"
    old = os.umask(0o027)
    try:
        assert _emit(out) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((out / "serve.sh").stat().st_mode) == 0o750
    assert stat.S_IMODE((out / "k8s.yaml").stat().st_mode) == 0o640
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "k8s.yaml"
    target.write_text("old content\n")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(PlannerError, match="No space left"):
        output.atomic_write(target, "new " * 10_000)
    assert target.read_text() == "old content\n" and [p.name for p in tmp_path.iterdir()] == ["k8s.yaml"]


def test_a_file_where_the_folder_should_be_is_one_line(tmp_path, capsys):
    (tmp_path / "out").write_text("")
    assert _emit(tmp_path / "out") == 2
    assert "not a folder" in capsys.readouterr().err


def test_plan_emit_refuses_to_overwrite_too(tmp_path, capsys):
    (tmp_path / "plan.json").write_text("{}")
    assert cli.main(["plan", *ONE_NODE, "--emit", str(tmp_path)]) == 2
    assert (tmp_path / "plan.json").read_text() == "{}"


# ---- verify's report and log ----------------------------------------------------------------------


def test_the_report_and_its_log_are_two_files(tmp_path):
    for i, (name, log_name) in enumerate([("r.json", "r.log"), ("r.log", "r.log.server.log"), ("r", "r.log")]):
        (tmp_path / str(i)).mkdir()
        report, log = output_paths(str(tmp_path / str(i) / name), force=False)
        assert report == tmp_path / str(i) / name and log == tmp_path / str(i) / log_name and log.exists()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_an_existing_report_or_log_is_refused_before_the_run(tmp_path):
    (tmp_path / "r.log").write_text("the user's log\n")
    with pytest.raises(PlannerError, match="--force"):
        output_paths(str(tmp_path / "r.json"), force=False)
    assert (tmp_path / "r.log").read_text() == "the user's log\n"
    output_paths(str(tmp_path / "r.json"), force=True)
    assert (tmp_path / "r.log").read_text() == ""


def test_a_report_in_a_missing_folder_is_refused_before_the_run(tmp_path):
    with pytest.raises(PlannerError, match="does not exist"):
        output_paths(str(tmp_path / "nope" / "r.json"), force=False)


def test_a_log_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "r.log").symlink_to(victim)
    with pytest.raises(PlannerError):
        output_paths(str(tmp_path / "r.json"), force=False)
    output_paths(str(tmp_path / "r.json"), force=True)  # the link is removed, not written through
    assert victim.read_text() == "precious\n" and not (tmp_path / "r.log").is_symlink()


def test_without_a_report_the_log_is_private_and_unpredictable():
    _, first = output_paths(None, force=False)
    _, second = output_paths(None, force=False)
    try:
        assert first != second and first.name.startswith("vllm-planner-verify-")
        assert str(os.getpid()) not in first.name
        assert stat.S_IMODE(first.stat().st_mode) == 0o600
    finally:
        first.unlink()
        second.unlink()


@pytest.mark.parametrize("fmt", ["k8s", "compose", "docker"])
def test_the_compile_cache_lives_on_the_persistent_model_cache(fmt):
    """A fresh pod or container is a first boot unless vLLM's cache root is on the mounted volume."""
    text = render(fmt, deployment(*ONE_NODE))
    root = "/root/.cache/huggingface/vllm"
    assert f"VLLM_CACHE_ROOT={root}" in text or f"value: {root}" in text
    assert ":/root/.cache/huggingface" in text or "mountPath: /root/.cache/huggingface" in text
