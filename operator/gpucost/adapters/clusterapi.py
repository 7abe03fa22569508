"""The ``clusterAPI`` node provider: a pool is one Cluster API MachineDeployment.

Scale-up raises the deployment's replicas; Cluster API and its infrastructure provider make the
Machines and the nodes join. Scale-down marks the drained node's Machine with
``cluster.x-k8s.io/delete-machine`` (the MachineSet deletes marked Machines first) and lowers the
replicas, the contract cluster-autoscaler's Cluster API provider uses too.

Both replica changes are JSON patches that test the replicas they read, so two writers never
lose an update. Which Machines gpucost already took out of the replicas is recorded on the
deployment in the same patch: a retried terminate (the node is still there until Cluster API
deletes it) never lowers the replicas twice.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from gpucost.adapters.kube import Kube
from gpucost.api.nodepool import GPUNodePoolSpec, MachineDeploymentRef

GROUP = "cluster.x-k8s.io"
VERSION = "v1beta2"
DELETE_MACHINE = "cluster.x-k8s.io/delete-machine"
DEPLOYMENT_NAME = "cluster.x-k8s.io/deployment-name"
REMOVED = "gpucost.dev/removed-machines"
"""On the MachineDeployment: the Machines whose removal gpucost already took out of its replicas."""

Obj = dict[str, Any]


def _escape(key: str) -> str:
    """JSON pointer escaping for an annotation key in a patch path."""
    return key.replace("~", "~0").replace("/", "~1")


def node_of(machine: Obj) -> str | None:
    return ((machine.get("status") or {}).get("nodeRef") or {}).get("name")


def marked(machine: Obj) -> bool:
    return DELETE_MACHINE in (machine["metadata"].get("annotations") or {}) or bool(
        machine["metadata"].get("deletionTimestamp")
    )


class ClusterAPIProvider:
    name = "clusterAPI"

    def __init__(self, kube: Kube) -> None:
        self.custom = kube.custom
        self.kube = kube

    @staticmethod
    def _ref(spec: GPUNodePoolSpec) -> MachineDeploymentRef:
        ref = spec.provider.machine_deployment
        assert ref is not None  # the CRD's rule and the model's validator require it
        return ref

    def _deployment(self, ref: MachineDeploymentRef) -> Obj:
        return self.custom.get_namespaced_custom_object(
            GROUP, VERSION, ref.namespace, "machinedeployments", ref.name
        )

    def _machines(self, ref: MachineDeploymentRef) -> list[Obj]:
        return self.custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            ref.namespace,
            "machines",
            label_selector=f"{DEPLOYMENT_NAME}={ref.name}",
        )["items"]

    def _set_replicas(
        self, ref: MachineDeploymentRef, old: int, new: int, removed: list[str] | None = None
    ) -> None:
        ops: list[Obj] = [
            {"op": "test", "path": "/spec/replicas", "value": old},
            {"op": "replace", "path": "/spec/replicas", "value": new},
        ]
        if removed is not None:
            if not self._deployment(ref)["metadata"].get("annotations"):
                ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
            ops.append(
                {
                    "op": "add",
                    "path": f"/metadata/annotations/{_escape(REMOVED)}",
                    "value": json.dumps(sorted(removed)),
                }
            )
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ref.namespace,
            "machinedeployments",
            ref.name,
            ops,
            _content_type="application/json-patch+json",
        )

    def launch(
        self, pool: str, spec: GPUNodePoolSpec, annotations: list[dict[str, str]]
    ) -> list[str]:
        """Nodes join later under names Cluster API picks, so the reservation annotations can't be
        set here; the autoscaler counts the requested nodes as in flight until they register."""
        ref = self._ref(spec)
        count = len(annotations)
        replicas = int(self._deployment(ref)["spec"].get("replicas") or 0)
        self._set_replicas(ref, replicas, replicas + count)
        return [
            f"MachineDeployment {ref.namespace}/{ref.name} replicas {replicas}->{replicas + count}"
        ]

    def terminate(self, node: str, pool: str, spec: GPUNodePoolSpec) -> bool:
        ref = self._ref(spec)
        machine = next((m for m in self._machines(ref) if node_of(m) == node), None)
        if machine is None:
            return False  # not (or no longer) one of the deployment's Machines: nothing to remove
        name = machine["metadata"]["name"]
        if DELETE_MACHINE not in (machine["metadata"].get("annotations") or {}):
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                ref.namespace,
                "machines",
                name,
                {"metadata": {"annotations": {DELETE_MACHINE: stamp}}},
            )
        deployment = self._deployment(ref)
        removed = json.loads((deployment["metadata"].get("annotations") or {}).get(REMOVED) or "[]")
        if name in removed:
            return False
        live = {m["metadata"]["name"] for m in self._machines(ref)}
        replicas = int(deployment["spec"].get("replicas") or 0)
        self._set_replicas(
            ref, replicas, max(replicas - 1, 0), [m for m in removed if m in live] + [name]
        )
        return True

    def unregistered(
        self, pool: str, spec: GPUNodePoolSpec, node_labels: dict[str, dict[str, str]]
    ) -> int:
        """Replicas asked for whose Node is not in the pool yet. A joined node gets the pool's
        labels (``node_labels``: every Node's labels now), so a Machine's node belongs to its pool
        whatever its bootstrap config set."""
        ref = self._ref(spec)
        replicas = int(self._deployment(ref)["spec"].get("replicas") or 0)
        labels = spec.node_labels(pool)
        joined = 0
        for machine in self._machines(ref):
            node = node_of(machine)
            if node is None or marked(machine) or node not in node_labels:
                continue
            if any(node_labels[node].get(k) != v for k, v in labels.items()):
                # Labelled now, but this tick's view of the pool does not have it yet: still in
                # flight.
                self.kube.patch_node(node, {"metadata": {"labels": labels}})
                continue
            joined += 1
        return max(replicas - joined, 0)
