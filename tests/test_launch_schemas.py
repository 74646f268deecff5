"""The emitted manifests against the real schemas: Kubernetes built-in kinds with kubernetes-validate
(the official OpenAPI schemas, strict), LeaderWorkerSet and KServe InferenceService against their
CRDs' openAPIV3Schema, compose against the compose specification, Helm values against the
production-stack chart's values.schema.json (sources in tests/data/schemas/README.md)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from launch_helpers import WEIRD, deployment

from planner.launch import render

K8S_VERSION = "1.31.0"
"""The Kubernetes version the built-in kinds are validated against."""
SCHEMAS = Path(__file__).parent / "data" / "schemas"

SINGLE = {
    "8b": ("meta-llama/Llama-3.1-8B-Instruct", "--gpu", "H100", "--max-model-len", "32768"),
    "70b-2-replicas": ("meta-llama/Llama-3.1-70B-Instruct", "--gpu", "H100", "--tp", "4", "--replicas", "2"),
    "moe-pinned": ("Qwen/Qwen3-30B-A3B", "--gpu", "H100", "--tp", "2", "--pin-kv-cache"),
    "weird-path": ("Qwen/Qwen3-30B-A3B", "--gpu", "L40S", "--tp", "2", "--model-ref", WEIRD[3]),
}
MULTI = {
    "405b-native": ("meta-llama/Llama-3.1-405B", "--gpu", "H100", "--max-model-len", "32768"),
    "405b-ray": ("meta-llama/Llama-3.1-405B", "--gpu", "H100", "--max-model-len", "32768", "--vllm-version", "0.10.1"),
    "405b-weird": ("meta-llama/Llama-3.1-405B", "--gpu", "H100", "--replicas", "2", "--model-ref", WEIRD[1]),
}


def _strict(node):
    """Unknown fields fail, as under `kubectl apply --validate=strict` (the API server's field validation)."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if (
            "properties" in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.cache
def crd_validator(filename: str) -> tuple[jsonschema.protocols.Validator, dict]:
    doc = json.loads((SCHEMAS / filename).read_text())
    schema = _strict(doc["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema), doc


def validate_crd(obj: dict, filename: str) -> None:
    validator, doc = crd_validator(filename)
    assert obj["apiVersion"] == f"{doc['group']}/{doc['version']}" and obj["kind"] == doc["kind"]
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:10]]


def validate_k8s(obj: dict) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is a test dependency (pip install '.[test]')"
    )
    try:
        kv.validate(obj, K8S_VERSION, strict=True)
    except kv.ValidationError as e:
        raise AssertionError(f"{obj['kind']}: {'.'.join(map(str, e.path))}: {e.message}") from None


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("plan", SINGLE)
def test_k8s_manifests_validate(plan):
    objs = docs(render("k8s", deployment(*SINGLE[plan])))
    assert [o["kind"] for o in objs] == ["PersistentVolumeClaim", "Deployment", "Service"]
    for obj in objs:
        validate_k8s(obj)


@pytest.mark.parametrize("plan", MULTI)
def test_lws_validates_against_its_crd_and_kubernetes(plan):
    objs = docs(render("lws", deployment(*MULTI[plan])))
    assert [o["kind"] for o in objs] == ["PersistentVolumeClaim", "LeaderWorkerSet", "Service"]
    validate_crd(objs[1], "lws-v0.10.0-leaderworkerset-v1.json")
    for obj in (objs[0], objs[2]):
        validate_k8s(obj)
    for role in ("leaderTemplate", "workerTemplate"):  # the pod templates against Kubernetes' own PodTemplate
        tmpl = objs[1]["spec"]["leaderWorkerTemplate"][role]
        validate_k8s({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": tmpl})


@pytest.mark.parametrize("plan", SINGLE)
def test_kserve_validates_against_its_crd(plan):
    (obj,) = docs(render("kserve", deployment(*SINGLE[plan])))
    validate_crd(obj, "kserve-v0.20.0-inferenceservice-v1beta1.json")


@pytest.mark.parametrize("plan", SINGLE)
def test_compose_validates_against_the_compose_spec(plan):
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    obj = yaml.safe_load(render("compose", deployment(*SINGLE[plan])))
    jsonschema.validate(obj, schema, cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize("plan", SINGLE)
def test_helm_values_validate_against_the_chart_schema(plan):
    schema = json.loads((SCHEMAS / "production-stack-vllm-stack-0.1.12-values.schema.json").read_text())
    obj = yaml.safe_load(render("helm", deployment(*SINGLE[plan])))
    jsonschema.validate(obj, schema, cls=jsonschema.validators.validator_for(schema))


def test_strictness_catches_an_unknown_field():
    (obj,) = docs(render("kserve", deployment(*SINGLE["8b"])))
    obj["spec"]["predictor"]["model"]["argz"] = []
    with pytest.raises(AssertionError, match="argz"):
        validate_crd(obj, "kserve-v0.20.0-inferenceservice-v1beta1.json")
    dep = docs(render("k8s", deployment(*SINGLE["8b"])))[1]
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(AssertionError):
        validate_k8s(dep)
