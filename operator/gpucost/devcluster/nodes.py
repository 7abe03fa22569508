"""Create a GPUNodePool and fake nodes that are already up, for the dev cluster and tests."""

from __future__ import annotations

import json

import yaml

from gpucost import names
from gpucost.adapters.kwok import fake_node
from gpucost.api.nodepool import GPUNodePoolSpec
from gpucost.devcluster.controlplane import ControlPlane


def create_pool_nodes(cp: ControlPlane, pool_manifest: dict, count: int | None = None) -> list[str]:
    """Apply the pool and ``count`` (default ``minNodes``) Ready fake nodes for it."""
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(pool_manifest))
    name = pool_manifest["metadata"]["name"]
    spec = GPUNodePoolSpec.model_validate(pool_manifest["spec"])
    nodes = [
        fake_node(name, spec, f"{name}-{i}")
        for i in range(spec.min_nodes if count is None else count)
    ]
    for node in nodes:  # these stand for nodes that are already up, not ones launched now
        node["metadata"]["annotations"].pop(names.KWOK_BOOT_DELAY, None)
    if nodes:
        cp.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )
    return [n["metadata"]["name"] for n in nodes]
