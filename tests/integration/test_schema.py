"""What the CRD schema can reject, the real API server rejects, with a message that says why."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.integration.conftest import ROOT

EXAMPLES = ROOT / "examples"


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def mutate(doc: dict, path: str, value: object) -> dict:
    doc = copy.deepcopy(doc)
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return doc


DELETE = object()

CASES = [
    (
        "inferencepool-llm-slices.yaml",
        "spec.gpu",
        {"memoryMiB": 1000, "gpus": 1},
        "set exactly one of gpu.memoryMiB",
    ),
    ("inferencepool-llm-slices.yaml", "spec.gpu", {}, "set exactly one of gpu.memoryMiB"),
    ("inferencepool-llm-slices.yaml", "spec.replicas", -1, "should be greater than or equal to 0"),
    ("inferencepool-llm-slices.yaml", "spec.replicas", 20, "replicas must not exceed maxReplicas"),
    (
        "inferencepool-llm-slices.yaml",
        "spec.capacityTypes",
        ["preemptible"],
        'Unsupported value: "preemptible"',
    ),
    ("inferencepool-llm-slices.yaml", "spec.image", DELETE, "spec.image: Required value"),
    ("inferencepool-llm-slices.yaml", "spec.gpuMemory", 5, 'unknown field "spec.gpuMemory"'),
    ("gpunodepool-a10g-spot.yaml", "spec.minNodes", 11, "minNodes must not exceed maxNodes"),
    ("gpunodepool-a10g-spot.yaml", "spec.idleTimeout", "five minutes", "spec.idleTimeout"),
    ("gpunodepool-a10g-spot.yaml", "spec.sharing", "mig", 'Unsupported value: "mig"'),
    ("gpunodepool-a10g-spot.yaml", "spec.gpu.memoryMiB", 0, "should be greater than or equal to 1"),
    ("gpunodepool-a10g-spot.yaml", "spec.pricePerHour", -1, "should be greater than or equal to 0"),
    (
        "gpunodepool-a10g-spot.yaml",
        "spec.provider",
        {"kind": "clusterAPI"},
        "a clusterAPI provider names its machineDeployment",
    ),
    (
        "compressionjob-quantize.yaml",
        "spec.method",
        {"quantize": {}, "prune": {"amount": 0.5}},
        "set exactly one of method.quantize",
    ),
    (
        "compressionjob-quantize.yaml",
        "spec.method",
        {"prune": {"amount": 1.5}},
        "should be less than 1",
    ),
    ("compressionjob-quantize.yaml", "spec.deadline", "tomorrow", "spec.deadline"),
]


@pytest.mark.parametrize(
    "file,path,value,message",
    CASES,
    ids=[f"{c[0].split('-')[0]}:{c[1]}={c[2]!r}"[:60] for c in CASES],
)
def test_invalid_objects_are_rejected_by_the_api_server(
    cluster, namespace, file, path, value, message
):
    doc = mutate(example(file), path, value)
    doc["metadata"]["name"] = "bad"
    if "namespace" in doc["metadata"]:
        doc["metadata"]["namespace"] = namespace
    result = cluster.apply(doc, check=False)
    assert result.returncode != 0, f"accepted: {yaml.safe_dump(doc)}"
    assert message in result.stderr, result.stderr
    assert cluster.get(doc["kind"].lower(), "bad", doc["metadata"].get("namespace")) is None


def test_defaults_are_filled_in_by_the_api_server(cluster, namespace):
    doc = {
        "apiVersion": "gpucost.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "minimal", "namespace": namespace},
        "spec": {"image": "x", "gpu": {"memoryMiB": 1}, "replicas": 0},
    }
    cluster.apply(doc)
    spec = cluster.get("inferencepools.gpucost.dev", "minimal", namespace)["spec"]
    assert spec["capacityTypes"] == ["on-demand"]
    assert spec["resources"] == {}


def test_nested_defaults_reach_the_stored_pool(cluster):
    doc = yaml.safe_load((EXAMPLES / "gpunodepool-a10g-spot.yaml").read_text())
    doc["metadata"]["name"] = "defaults-probe"
    for key in ("provider", "sharing", "isolation", "idleTimeout", "minNodes", "maxNodes"):
        del doc["spec"][key]
    cluster.apply(doc)
    spec = cluster.get("gpunodepool", "defaults-probe")["spec"]
    cluster.kubectl("delete", "gpunodepool", "defaults-probe")
    assert spec["provider"] == {"kind": "kwok", "bootDelay": "0s"}
    assert (spec["sharing"], spec["isolation"], spec["idleTimeout"]) == (
        "memory-slice",
        "nvml-limit",
        "10m",
    )
    assert (spec["minNodes"], spec["maxNodes"]) == (0, 10)


def test_kubectl_explain_shows_the_model_descriptions(cluster):
    out = cluster.kubectl("explain", "inferencepool.spec.gpu").stdout
    assert "A slice of one GPU's memory in MiB" in out
