"""Pure builders of the Kubernetes objects the operator creates."""

from __future__ import annotations

from typing import Any

from gpucost import names
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.api.nodepool import Taint
from gpucost.core.placement import Placement


def replica_pod_name(pool: str, replica: int) -> str:
    return f"{pool}-{replica}"


def tolerations(taints: list[Taint]) -> list[dict[str, str]]:
    """The operator placed the pod on a pool node on purpose, so it tolerates that pool's taints."""
    return [
        {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect}
        if t.value
        else {"key": t.key, "operator": "Exists", "effect": t.effect}
        for t in taints
    ]


def replica_pod(
    *,
    pool: str,
    namespace: str,
    uid: str,
    spec: InferencePoolSpec,
    replica: int,
    placement: Placement,
    pool_taints: list[Taint],
) -> dict[str, Any]:
    """One serving replica pinned to the GPU(s) the placement chose."""
    devices = ",".join(placement.gpu_uuids) or ",".join(str(i) for i in placement.gpu_indices)
    env = [{"name": e.name, "value": e.value} for e in spec.env]
    env += [{"name": n, "value": devices} for n in names.ENV_VISIBLE_DEVICES]
    if spec.model_uri:
        env.append({"name": "MODEL_URI", "value": spec.model_uri})
    mib_per_gpu = placement.memory_mib // len(placement.gpu_indices)
    requests: dict[str, str] = {names.RESOURCE_GPU_MEMORY: str(placement.memory_mib)}
    limits: dict[str, str] = {names.RESOURCE_GPU_MEMORY: str(placement.memory_mib)}
    if spec.resources.cpu:
        requests["cpu"] = spec.resources.cpu
    if spec.resources.memory:
        requests["memory"] = limits["memory"] = spec.resources.memory
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.image,
        "env": env,
        "resources": {"requests": requests, "limits": limits},
    }
    if spec.command:
        container["command"] = spec.command
    if spec.args:
        container["args"] = spec.args
    if spec.port:
        container["ports"] = [{"name": "http", "containerPort": spec.port}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": replica_pod_name(pool, replica),
            "namespace": namespace,
            "labels": {
                names.LABEL_MANAGED_BY: names.MANAGED_BY,
                names.LABEL_OWNER_UID: uid,
                names.LABEL_REPLICA: str(replica),
            },
            "annotations": {
                names.ANNOTATION_OWNER: pool,
                names.ANNOTATION_NODE: placement.node,
                names.ANNOTATION_GPU_INDICES: ",".join(str(i) for i in placement.gpu_indices),
                names.ANNOTATION_GPU_UUIDS: ",".join(placement.gpu_uuids),
                names.ANNOTATION_GPU_MEMORY: str(mib_per_gpu),
            },
            "ownerReferences": [
                {
                    "apiVersion": "gpucost.dev/v1alpha1",
                    "kind": "InferencePool",
                    "name": pool,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [container],
            # Pinned through the scheduler, not spec.nodeName, so taints, node resources and the
            # gpu-memory extended resource are still checked by the real scheduler.
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [placement.node]}]}
                        ]
                    }
                }
            },
            "tolerations": tolerations(pool_taints),
            "restartPolicy": "Always",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
        },
    }
