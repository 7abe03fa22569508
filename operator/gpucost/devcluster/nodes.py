"""Create a GPUNodePool's fake nodes in a dev cluster (what the kwok provider will do on scale-up)."""

from __future__ import annotations

import json

import yaml

from gpucost.api.nodepool import GPUNodePoolSpec
from gpucost.devcluster.controlplane import ControlPlane
from gpucost.adapters.kwok import fake_node


def create_pool_nodes(cp: ControlPlane, pool_manifest: dict, count: int | None = None) -> list[str]:
    """Apply the pool and ``count`` (default ``minNodes``) Ready fake nodes for it."""
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(pool_manifest))
    name = pool_manifest["metadata"]["name"]
    spec = GPUNodePoolSpec.model_validate(pool_manifest["spec"])
    nodes = [fake_node(name, spec, f"{name}-{i}") for i in range(spec.min_nodes if count is None else count)]
    if nodes:
        cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))
    return [n["metadata"]["name"] for n in nodes]
