"""What the karpenter provider asks Karpenter for, and how it reads a claim Karpenter gave up on."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gpucost import names
from gpucost.adapters.karpenter import (
    DO_NOT_DISRUPT,
    FINALIZER,
    NODEPOOL_LABEL,
    failure,
    node_claim,
)
from gpucost.api.nodepool import GPUNodePoolSpec
from gpucost.devcluster.karpenter import instance_types, node_pool

SPEC = {
    "instanceType": "g5.xlarge",
    "capacityType": "spot",
    "pricePerHour": 0.394,
    "gpu": {"model": "NVIDIA-A10G", "memoryMiB": 23028, "count": 1},
    "cpu": "3",
    "memory": "14Gi",
    "labels": {"team": "serving"},
    "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
    "provider": {"kind": "karpenter", "karpenter": {"nodePool": "gpu"}},
}


def claim_for(spec: dict, template_extra: dict | None = None) -> dict:
    np = node_pool("gpu", "gpu-class")
    np["spec"]["template"]["spec"].update(template_extra or {})
    return node_claim("p", GPUNodePoolSpec.model_validate(spec), np, {"x": "y"})


def test_a_claim_pins_the_chosen_instance_and_capacity_type_and_keeps_the_node_pools_rest():
    claim = claim_for(
        SPEC,
        {
            "requirements": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                {"key": names.LABEL_CAPACITY_TYPE, "operator": "In", "values": ["on-demand"]},
                {"key": names.LABEL_INSTANCE_TYPE, "operator": "Exists"},
            ],
            "taints": [{"key": "nvidia.com/gpu", "value": "other", "effect": "NoSchedule"}],
        },
    )
    reqs = {r["key"]: r for r in claim["spec"]["requirements"]}
    assert reqs[names.LABEL_INSTANCE_TYPE]["values"] == ["g5.xlarge"]
    assert reqs[names.LABEL_CAPACITY_TYPE]["values"] == ["spot"]  # ours replaces the NodePool's
    assert reqs["kubernetes.io/arch"]["values"] == ["amd64"]
    assert len(claim["spec"]["requirements"]) == 3
    assert claim["spec"]["nodeClassRef"]["name"] == "gpu-class"
    # The GPUNodePool's taint wins over the template's with the same key and effect.
    assert claim["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    meta = claim["metadata"]
    assert meta["labels"][NODEPOOL_LABEL] == "gpu"
    assert meta["labels"][names.LABEL_NODEPOOL] == "p"
    assert meta["labels"]["team"] == "serving"  # the GPUNodePool's over the template's
    assert meta["annotations"] == {DO_NOT_DISRUPT: "true", "x": "y"}
    assert meta["finalizers"] == [FINALIZER]
    assert claim["spec"]["expireAfter"] == "Never"
    assert claim["spec"]["resources"]["requests"] == {
        "cpu": "3",
        "memory": "14Gi",
        names.RESOURCE_GPU: "1",
    }


def test_two_claims_never_share_a_name():
    assert claim_for(SPEC)["metadata"]["name"] != claim_for(SPEC)["metadata"]["name"]


def claim(deleting: bool = False, node: str | None = None, launched: dict | None = None) -> dict:
    meta = {"name": "p-1", **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})}
    status: dict = {"conditions": [{"type": "Launched", **launched}] if launched else []}
    if node:
        status["nodeName"] = node
    return {"metadata": meta, "status": status}


@pytest.mark.parametrize(
    "obj, why",
    [
        (claim(), None),  # just created
        (claim(launched={"status": "True", "reason": "Launched"}), None),  # booting
        (claim(node="n"), None),
        (claim(deleting=True, node="n"), None),  # removed after it joined: not a failure
        (claim(deleting=True), "deleted by Karpenter before its node joined"),
        (
            claim(launched={"status": "Unknown", "reason": "LaunchFailed", "message": "quota"}),
            "not launched: quota",
        ),
        (claim(launched={"status": "False", "reason": "X", "message": "m"}), "not launched: m"),
    ],
)
def test_a_claim_failed_only_when_karpenter_gave_up_on_it(obj, why):
    got = failure(obj)
    assert (got is None) if why is None else (why in got)


def test_a_karpenter_provider_must_name_its_node_pool():
    spec = {**SPEC, "provider": {"kind": "karpenter"}}
    with pytest.raises(ValidationError, match="karpenter.nodePool"):
        GPUNodePoolSpec.model_validate(spec)


def test_the_harness_gives_karpenter_real_instance_types_at_their_published_prices():
    (g5,) = instance_types(("g5.xlarge",))
    prices = {o["capacityType"]: o["price"] for o in g5["offerings"]}
    assert prices == {"on-demand": 1.006, "spot": 0.39388}  # us-east-1 in ../shared/data/prices
    assert g5["resources"][names.RESOURCE_GPU] == "1"
    assert g5["resources"][names.RESOURCE_GPU_MEMORY] == "23028"
    with pytest.raises(ValueError, match="no us-east-1 price"):
        instance_types(("not-a-type",))
