"""What Cluster API's MachineSet controller and an infrastructure provider do, for the dev cluster.

The dev cluster has Cluster API's CRDs (the real schemas, from its Go module) but not its
controllers, which need a cloud (or Docker) to make machines. This loop stands in for them, the
way KWOK stands in for kubelets: it keeps each clusterAPI GPUNodePool's MachineDeployment at its
replicas by creating Machines with a KWOK Node each, and on scale-down deletes the Machines marked
``cluster.x-k8s.io/delete-machine`` first (then the newest), as the MachineSet's deletion policy
does. Nodes join without the pool's gpucost labels, like a node whose bootstrap config does not
set them: labelling them is the operator's job.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from gpucost import names
from gpucost.adapters.clusterapi import DEPLOYMENT_NAME, GROUP, VERSION, marked
from gpucost.adapters.kwok import fake_node
from gpucost.api import GROUP as GPUCOST_GROUP
from gpucost.api import VERSION as GPUCOST_VERSION
from gpucost.api.nodepool import GPUNodePoolSpec, ProviderKind

CLUSTER_NAME = "cluster.x-k8s.io/cluster-name"

Obj = dict[str, Any]


def deployment(name: str, namespace: str, cluster: str = "gpu") -> Obj:
    """A MachineDeployment as a user would write one (infrastructure template names are
    stand-ins)."""
    labels = {CLUSTER_NAME: cluster, DEPLOYMENT_NAME: name}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MachineDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "clusterName": cluster,
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "clusterName": cluster,
                    "bootstrap": {"dataSecretName": f"{name}-bootstrap"},
                    "infrastructureRef": {
                        "apiGroup": "infrastructure.cluster.x-k8s.io",
                        "kind": "KwokMachineTemplate",
                        "name": name,
                    },
                },
            },
        },
    }


class MachineSetStandIn:
    def __init__(self, kubeconfig: str, interval: float = 0.3) -> None:
        client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="machineset-stand-in", daemon=True)
        self.errors: list[str] = []

    def start(self) -> "MachineSetStandIn":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reconcile()
            except (
                ApiException
            ) as e:  # a conflict or a deleted object: the next pass sees the new state
                self.errors.append(f"{e.status} {e.reason}")

    def reconcile(self) -> None:
        for pool in self.custom.list_cluster_custom_object(
            GPUCOST_GROUP, GPUCOST_VERSION, "gpunodepools"
        )["items"]:
            spec = GPUNodePoolSpec.model_validate(pool["spec"])
            ref = spec.provider.machine_deployment
            if spec.provider.kind != ProviderKind.CLUSTER_API.value or ref is None:
                continue
            try:
                md = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, ref.namespace, "machinedeployments", ref.name
                )
            except ApiException as e:
                if e.status == 404:
                    continue
                raise
            self._scale(pool["metadata"]["name"], spec, md)

    def _scale(self, pool: str, spec: GPUNodePoolSpec, md: Obj) -> None:
        ns, name = md["metadata"]["namespace"], md["metadata"]["name"]
        machines = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, ns, "machines", label_selector=f"{DEPLOYMENT_NAME}={name}"
        )["items"]
        live = [m for m in machines if not m["metadata"].get("deletionTimestamp")]
        want = int(md["spec"].get("replicas") or 0)
        for _ in range(want - len(live)):
            self._create(pool, spec, md)
        surplus = len(live) - want
        if surplus > 0:
            # Marked first, then the newest: the MachineSet's deletion order with the annotation.
            order = sorted(live, key=lambda m: m["metadata"]["creationTimestamp"], reverse=True)
            order.sort(key=lambda m: not marked(m))
            for machine in order[:surplus]:
                self._delete(machine)

    def _create(self, pool: str, spec: GPUNodePoolSpec, md: Obj) -> None:
        ns = md["metadata"]["namespace"]
        machine_name = f"{md['metadata']['name']}-{secrets.token_hex(3)}"
        template = md["spec"]["template"]
        machine = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Machine",
            "metadata": {
                "name": machine_name,
                "namespace": ns,
                "labels": dict(template["metadata"]["labels"]),
            },
            "spec": template["spec"],
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "machines", machine)
        node = fake_node(pool, spec, machine_name)
        for key in (*spec.labels, names.LABEL_NODEPOOL, names.LABEL_CAPACITY_TYPE):
            node["metadata"]["labels"].pop(key, None)
        self.core.create_node(node)
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            ns,
            "machines",
            machine_name,
            {"status": {"nodeRef": {"name": machine_name}, "phase": "Running"}},
        )

    def _delete(self, machine: Obj) -> None:
        node = ((machine.get("status") or {}).get("nodeRef") or {}).get("name")
        if node:
            try:
                self.core.delete_node(node)
            except ApiException as e:
                if e.status != 404:
                    raise
        meta = machine["metadata"]
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], "machines", meta["name"]
        )
