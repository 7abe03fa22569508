"""The committed CRD YAML is exactly what the models generate, and it is structural."""

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from gpucost import crdfiles
from gpucost.api.crds import all_crds
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.devcluster.binaries import K8S_VERSION
from tests.builders import inference_pool_spec

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models():
    diffs = crdfiles.drift(ROOT)
    assert not diffs, "run `gpucost crds` and commit:\n" + "".join(diffs)[:4000]


def walk(node, path="$"):
    yield path, node
    for key in ("properties",):
        for name, child in (node.get(key) or {}).items():
            yield from walk(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from walk(node[key], f"{path}[{key}]")


@pytest.mark.parametrize("crd", all_crds(), ids=lambda c: c["spec"]["names"]["kind"])
def test_schema_is_structural(crd):
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    for path, node in walk(version["schema"]["openAPIV3Schema"]):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert not {"$ref", "anyOf", "allOf", "title"} & node.keys(), path
        if "properties" in node:
            assert "additionalProperties" not in node, path
        for bound in ("minimum", "maximum"):
            assert not isinstance(node.get(bound), bool), path


def test_short_names_do_not_shadow_builtin_kinds():
    builtin = {
        "ip",
        "cj",
        "po",
        "no",
        "svc",
        "deploy",
        "job",
        "ds",
        "sts",
        "rs",
        "pv",
        "pvc",
        "ns",
        "ev",
    }
    for crd in all_crds():
        assert not builtin & set(crd["spec"]["names"]["shortNames"])


def test_python_and_build_script_pin_the_same_kubernetes():
    script = (ROOT / "scripts/build-control-plane.sh").read_text()
    assert re.search(r'K8S_VERSION="\$\{K8S_VERSION:-(v[0-9.]+)\}"', script).group(1) == K8S_VERSION


@pytest.mark.parametrize(
    "overrides",
    [
        {"replicas": -1},
        {"capacityTypes": ["preemptible"]},
        {"gpu": {"memoryMiB": 1, "gpus": 1}},
        {"gpu": {}},
        {"replicas": 5, "maxReplicas": 4},
        {"replicas": 1, "minReplicas": 2},
        {"minReplicas": 3, "maxReplicas": 2, "replicas": 2},
    ],
)
def test_model_rejects_what_the_crd_rejects(overrides):
    """Each CEL rule has a Python twin, so an object that skipped the CRD still cannot crash the
    core."""
    with pytest.raises(ValidationError):
        InferencePoolSpec.model_validate(inference_pool_spec(**overrides))


def test_cel_rules_and_python_validators_stay_paired():
    import inspect

    from gpucost.api import autoscaling, common, compressionjob, inferencepool, nodepool

    for module in (autoscaling, common, compressionjob, inferencepool, nodepool):
        source = inspect.getsource(module)
        assert source.count("x-kubernetes-validations") == source.count("@model_validator"), (
            module.__name__
        )


def test_inference_pool_scales_through_the_scale_subresource_and_leaves_infpool_to_the_gateway():
    crd = next(c for c in all_crds() if c["spec"]["names"]["kind"] == "InferencePool")
    assert crd["spec"]["versions"][0]["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert crd["spec"]["names"]["shortNames"] == ["ipool"]


def test_every_serving_field_is_described_for_kubectl_explain():
    crd = next(c for c in all_crds() if c["spec"]["names"]["kind"] == "InferencePool")
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    serving = (
        "engine modelMemoryMiB probes strategy progressDeadlineSeconds template service "
        "inferenceExtension podDisruptionBudget"
    ).split()
    for name in serving:
        for path, node in walk(spec["properties"][name], f"spec.{name}"):
            if not path.endswith("]"):  # list items and map values are described by their field
                assert node.get("description"), f"{path} has no description"
