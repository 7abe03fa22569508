"""Pure builders of the Kubernetes objects the operator creates."""

from __future__ import annotations

from typing import Any

from gpucost import names
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.api.nodepool import GPUNodePoolSpec, IsolationMode, Taint
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


def mps_env(gpus: int, mib_per_gpu: int, gpu_mib: int) -> list[dict[str, str]]:
    """MPS limits for ``isolation: mps`` pools: memory pinned per device as the container numbers
    them (0..n-1 behind NVIDIA_VISIBLE_DEVICES), and a share of the SMs in proportion to the slice."""
    return [
        {"name": "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "value": ",".join(f"{i}={mib_per_gpu}M" for i in range(gpus))},
        {"name": "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "value": str(max(1, min(100, round(100 * mib_per_gpu / gpu_mib))))},
    ]


def replica_pod(
    *,
    pool: str,
    namespace: str,
    uid: str,
    spec: InferencePoolSpec,
    replica: int,
    placement: Placement,
    node_pool: GPUNodePoolSpec,
) -> dict[str, Any]:
    """One serving replica pinned to the GPU(s) the placement chose, tolerating its pool's taints."""
    devices = ",".join(placement.gpu_uuids) or ",".join(str(i) for i in placement.gpu_indices)
    env = [{"name": e.name, "value": e.value} for e in spec.env]
    env += [{"name": n, "value": devices} for n in names.ENV_VISIBLE_DEVICES]
    if spec.model_uri:
        env.append({"name": "MODEL_URI", "value": spec.model_uri})
    mib_per_gpu = placement.memory_mib // len(placement.gpu_indices)
    if node_pool.isolation == IsolationMode.MPS.value:
        env += mps_env(len(placement.gpu_indices), mib_per_gpu, node_pool.gpu.memory_mi_b)
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
            "tolerations": tolerations(node_pool.taints),
            "restartPolicy": "Always",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
        },
    }
