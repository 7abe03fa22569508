"""The clusterAPI provider against Cluster API's real CRDs (from its Go module) on the real API
server.

Cluster API's controllers are not running (they need a cloud to make machines); the dev cluster's
MachineSet stand-in makes a Machine and a KWOK Node per replica and deletes marked Machines first.
"""

from __future__ import annotations

import json
from typing import Iterator

import kubernetes
import pytest

from gpucost import names
from gpucost.adapters.clusterapi import DELETE_MACHINE, DEPLOYMENT_NAME, REMOVED, ClusterAPIProvider
from gpucost.adapters.kube import Kube
from gpucost.api.nodepool import GPUNodePoolSpec
from gpucost.devcluster.controlplane import ControlPlane
from gpucost.devcluster.machines import MachineSetStandIn, deployment
from tests.integration.conftest import Cluster
from tests.integration.test_autoscaler import all_ready, node_names, pool_events
from tests.integration.test_inferencepool import pool


@pytest.fixture(scope="module")
def machine_sets(control_plane: ControlPlane) -> Iterator[MachineSetStandIn]:
    stand_in = MachineSetStandIn(str(control_plane.kubeconfig)).start()
    yield stand_in
    stand_in.stop()


def machines(cluster: Cluster, namespace: str, md: str) -> list[dict]:
    return cluster.list("machines.cluster.x-k8s.io", namespace, f"{DEPLOYMENT_NAME}={md}")


def replicas(cluster: Cluster, namespace: str, md: str) -> int:
    return cluster.get("machinedeployment", md, namespace)["spec"]["replicas"]


def capi_spec(namespace: str, md: str) -> dict:
    return {"kind": "clusterAPI", "machineDeployment": {"namespace": namespace, "name": md}}


def test_terminate_marks_the_machine_and_lowers_replicas_once(cluster, namespace):
    md = deployment("gpus", namespace)
    md["spec"]["replicas"] = 2
    cluster.apply(md)
    for i in range(2):
        machine = {
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Machine",
            "metadata": {
                "name": f"gpus-{i}",
                "namespace": namespace,
                "labels": md["spec"]["template"]["metadata"]["labels"],
            },
            "spec": md["spec"]["template"]["spec"],
        }
        cluster.apply(machine)
        cluster.kubectl(
            "patch",
            "machine.cluster.x-k8s.io",
            f"gpus-{i}",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"nodeRef": {"name": f"node-{i}"}}}),
        )
    provider = ClusterAPIProvider(
        Kube(kubernetes.config.new_client_from_config(config_file=str(cluster.cp.kubeconfig)))
    )
    spec = GPUNodePoolSpec.model_validate(
        {
            "instanceType": "g6.xlarge",
            "capacityType": "on-demand",
            "pricePerHour": 1.0,
            "gpu": {"model": "NVIDIA-L4", "memoryMiB": 23034, "count": 1},
            "cpu": "4",
            "memory": "16Gi",
            "provider": capi_spec(namespace, "gpus"),
        }
    )
    pool_labels = {f"node-{i}": spec.node_labels("p") for i in range(2)}
    assert provider.unregistered("p", spec, pool_labels) == 0  # both replicas have their node
    for _ in range(3):  # the autoscaler retries terminate until the node is gone
        provider.terminate("node-1", "p", spec)
    assert replicas(cluster, namespace, "gpus") == 1
    marked = cluster.get("machine.cluster.x-k8s.io", "gpus-1", namespace)["metadata"]["annotations"]
    assert DELETE_MACHINE in marked
    assert DELETE_MACHINE not in (
        cluster.get("machine.cluster.x-k8s.io", "gpus-0", namespace)["metadata"].get("annotations")
        or {}
    )
    provider.terminate("node-0", "p", spec)
    md_now = cluster.get("machinedeployment", "gpus", namespace)
    assert md_now["spec"]["replicas"] == 0
    assert json.loads(md_now["metadata"]["annotations"][REMOVED]) == ["gpus-0", "gpus-1"]
    provider.launch("p", spec, [{}] * 3)
    assert replicas(cluster, namespace, "gpus") == 3
    assert (
        provider.unregistered("p", spec, pool_labels) == 3
    )  # asked for, no Machine has a node yet


def test_a_cluster_api_pool_scales_up_for_unplaced_replicas_and_down_when_idle(
    cluster, namespace, gpu_pool, machine_sets
):
    cluster.apply(deployment("gpus", namespace))
    node_pool = gpu_pool(
        0,
        gpus=1,
        memory_mib=24000,
        pricePerHour=1.0,
        minNodes=0,
        maxNodes=4,
        idleTimeout="3s",
        provider=capi_spec(namespace, "gpus"),
    )
    cluster.apply(pool("web", namespace, 3, gpu={"memoryMiB": 20000}))
    cluster.wait(
        "3 replicas ready on Cluster API nodes",
        lambda: all_ready(cluster, namespace, "web"),
        timeout=90,
    )
    assert replicas(cluster, namespace, "gpus") == 3
    joined = {m["status"]["nodeRef"]["name"] for m in machines(cluster, namespace, "gpus")}
    assert (
        node_names(cluster, node_pool) == joined and len(joined) == 3
    )  # labelled into the pool by the operator
    (event,) = pool_events(
        cluster, node_pool, "ScaleUp"
    )  # in-flight replicas were never bought twice
    assert "launched 3" in event["message"] and "replicas 0->3" in event["message"]

    cluster.kubectl(
        "patch",
        "inferencepools.gpucost.dev",
        "web",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"replicas":1}}',
    )
    cluster.wait(
        "two idle nodes removed through Cluster API",
        lambda: (
            len(machines(cluster, namespace, "gpus")) == 1
            and len(node_names(cluster, node_pool)) == 1
        ),
        timeout=90,
    )
    assert replicas(cluster, namespace, "gpus") == 1
    assert all_ready(cluster, namespace, "web")
    (kept,) = node_names(cluster, node_pool)
    assert (
        cluster.get("pod", "web-0", namespace)["spec"]["nodeName"] == kept
    )  # the busy node was never the one deleted
    assert len(pool_events(cluster, node_pool, "NodeRemoved")) == 2
    assert names.ANNOTATION_DISRUPTION not in (
        cluster.get("node", kept)["metadata"].get("annotations") or {}
    )
