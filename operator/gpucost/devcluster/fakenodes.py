"""KWOK fake GPU nodes shaped like a GPUNodePool's nodes, as the node agent would label them."""

from __future__ import annotations

import json
import uuid
from typing import Any

from gpucost import names
from gpucost.api.nodepool import GPUNodePoolSpec

KWOK = "kwok.x-k8s.io/node"


def gpu_uuid(node: str, index: int) -> str:
    """Stable fake UUIDs in NVIDIA's ``GPU-<uuid>`` format, so re-created nodes keep theirs."""
    return f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{node}.{index}.gpucost.dev')}"


def fake_node(pool: str, spec: GPUNodePoolSpec, index: int) -> dict[str, Any]:
    name = f"{pool}-{index}"
    gpu = spec.gpu
    gpus = [
        {"index": i, "uuid": gpu_uuid(name, i), "model": gpu.model, "memoryMiB": gpu.memory_mi_b}
        for i in range(gpu.count)
    ]
    capacity = {
        "cpu": spec.cpu,
        "memory": spec.memory,
        "pods": "110",
        names.RESOURCE_GPU: str(gpu.count),
        names.RESOURCE_GPU_MEMORY: str(gpu.count * gpu.memory_mi_b),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK: "fake", names.ANNOTATION_GPUS: json.dumps(gpus)},
            "labels": {
                **spec.labels,
                KWOK: "fake",
                "kubernetes.io/hostname": name,
                names.LABEL_NODEPOOL: pool,
                names.LABEL_CAPACITY_TYPE: spec.capacity_type,
                names.LABEL_INSTANCE_TYPE: spec.instance_type,
                names.LABEL_GPU_PRODUCT: gpu.model,
                names.LABEL_GPU_MEMORY: str(gpu.memory_mi_b),
                names.LABEL_GPU_COUNT: str(gpu.count),
            },
        },
        "spec": {"taints": [t.wire() for t in spec.taints]},
        "status": {"capacity": capacity, "allocatable": capacity},
    }
