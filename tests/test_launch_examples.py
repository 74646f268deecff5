"""deploy/examples/ holds the rendered reference plans; regenerating them must give the same files."""

from __future__ import annotations

from planner.cli.examples import drift, examples_dir, reference_plans


def test_examples_do_not_drift():
    changed = drift()
    assert not changed, f"deploy/examples drifted ({', '.join(changed)}): run `python -m planner.cli.examples`"


def test_four_reference_plans_with_their_formats():
    plans = reference_plans()
    assert len(plans) == 4
    files = {name: {p.name for p in (examples_dir() / name).iterdir()} for name in plans}
    assert {
        "plan.json",
        "serve.sh",
        "config.yaml",
        "llm.py",
        "docker.sh",
        "k8s.yaml",
        "helm-values.yaml",
        "kserve.yaml",
        "compose.yaml",
    } <= files["llama-3.1-8b-h100"]
    assert "lws.yaml" in files["llama-3.1-405b-h100-2nodes"] and "k8s.yaml" not in files["llama-3.1-405b-h100-2nodes"]
