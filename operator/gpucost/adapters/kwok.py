"""The ``kwok`` node provider: a pool's nodes are KWOK fake Nodes, created and deleted through the
API.

A new node carries the pool's labels, taints and GPU capacity, labelled as the node agent would
label a real one; KWOK keeps it NotReady for the pool's ``bootDelay`` (see the dev cluster's
node-initialize stage), which is what makes in-flight capacity visible to the autoscaler.
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

from gpucost import names
from gpucost.adapters.kube import Kube
from gpucost.api.common import duration_seconds
from gpucost.api.nodepool import GPUNodePoolSpec

KWOK = "kwok.x-k8s.io/node"


def gpu_uuid(node: str, index: int) -> str:
    """Stable fake UUIDs in NVIDIA's ``GPU-<uuid>`` format, so re-created nodes keep theirs."""
    return f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{node}.{index}.gpucost.dev')}"


def fake_node(pool: str, spec: GPUNodePoolSpec, name: str) -> dict[str, Any]:
    gpu = spec.gpu
    gpus = [
        {"index": i, "uuid": gpu_uuid(name, i), "model": gpu.model, "memoryMiB": gpu.memory_mib}
        for i in range(gpu.count)
    ]
    capacity = {
        "cpu": spec.cpu,
        "memory": spec.memory,
        "pods": "110",
        names.RESOURCE_GPU: str(gpu.count),
        names.RESOURCE_GPU_MEMORY: str(gpu.count * gpu.memory_mib),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK: "fake",
                names.ANNOTATION_GPUS: json.dumps(gpus),
                **(
                    {names.KWOK_BOOT_DELAY: spec.provider.boot_delay}
                    if duration_seconds(spec.provider.boot_delay)
                    else {}
                ),
            },
            "labels": {**spec.node_labels(pool), KWOK: "fake", "kubernetes.io/hostname": name},
        },
        "spec": {"taints": [t.wire() for t in spec.taints]},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


class KwokProvider:
    name = "kwok"

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def launch(
        self, pool: str, spec: GPUNodePoolSpec, annotations: list[dict[str, str]]
    ) -> list[str]:
        """Random suffixes like a cloud's instance names: a name is never reused, so a node
        deleted a moment ago can't be mistaken for the new one."""
        nodes = []
        for extra in annotations:
            node = fake_node(pool, spec, f"{pool}-{secrets.token_hex(3)}")
            node["metadata"]["annotations"].update(extra)
            nodes.append(node)
        self.kube.create_nodes(nodes)
        return [n["metadata"]["name"] for n in nodes]

    def terminate(self, node: str, pool: str, spec: GPUNodePoolSpec) -> bool:
        self.kube.delete_node(node)
        return True

    def unregistered(
        self, pool: str, spec: GPUNodePoolSpec, node_labels: dict[str, dict[str, str]]
    ) -> int:
        """A kwok launch creates the Node itself: nothing is ever in flight without one."""
        return 0
