"""The karpenter provider against real Karpenter (v1.15, its KWOK cloud provider) on the real
control plane: gpucost creates NodeClaims, Karpenter launches them and joins KWOK nodes, and
deleting a claim is how a node goes away.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import kubernetes
import pytest
import yaml

from gpucost import names
from gpucost.adapters.karpenter import (
    DO_NOT_DISRUPT,
    FINALIZER,
    NODEPOOL_LABEL,
    KarpenterProvider,
)
from gpucost.adapters.kube import Kube
from gpucost.devcluster.controlplane import ControlPlane
from gpucost.devcluster.karpenter import Karpenter, node_class, node_pool
from tests.integration.conftest import Cluster
from tests.integration.test_autoscaler import (
    all_ready,
    launch_recorded,
    node_names,
    pool_events,
    pool_nodes,
    reclaimed,
    replica_nodes,
)
from tests.integration.test_inferencepool import pool
from tests.integration.test_kill import scale

BOOT = "2s"
"""The KWOKNodeClass's nodeRegistrationDelay: how long a launched claim has no Node."""


@pytest.fixture(scope="module")
def karpenter(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Karpenter]:
    k = Karpenter(control_plane, tmp_path_factory.mktemp("karpenter")).start()
    # "broken" names a KWOKNodeClass that does not exist: Karpenter cannot launch its claims.
    manifests = [node_class("gpu", BOOT), node_pool("gpu", "gpu"), node_pool("broken", "absent")]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
    yield k
    k.stop()


def claims(cluster: Cluster, node_pool_name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "nodeclaims", "-l", f"{names.LABEL_NODEPOOL}={node_pool_name}", "-o", "json"
    ).stdout
    return json.loads(out)["items"]


@pytest.fixture
def karpenter_pool(
    cluster: Cluster, karpenter: Karpenter, gpu_pool: Callable[..., str]
) -> Iterator[Callable[..., str]]:
    """A GPUNodePool of g5.xlarge nodes (1 A10G) bought through a Karpenter NodePool; its claims
    are let go of afterwards, as uninstalling gpucost would leave them."""
    made: list[str] = []

    def make(capacity_type: str, price: float, karpenter_pool: str = "gpu", **spec: Any) -> str:
        name = gpu_pool(
            0,
            gpus=1,
            memory_mib=23028,
            capacity_type=capacity_type,
            pricePerHour=price,
            instanceType="g5.xlarge",
            gpu={"model": "NVIDIA-A10G", "memoryMiB": 23028, "count": 1},
            cpu="3",
            memory="14Gi",
            provider={"kind": "karpenter", "karpenter": {"nodePool": karpenter_pool}},
            **{"minNodes": 0, "maxNodes": 3, **spec},
        )
        made.append(name)
        return name

    yield make
    for name in made:
        for claim in claims(cluster, name):
            cluster.kubectl(
                "patch",
                "nodeclaim",
                claim["metadata"]["name"],
                "--type=json",
                "-p",
                json.dumps([{"op": "remove", "path": "/metadata/finalizers"}]),
                check=False,
            )
        cluster.kubectl(
            "delete", "nodeclaims", "-l", f"{names.LABEL_NODEPOOL}={name}", "--wait=false"
        )


def test_replicas_get_nodes_through_nodeclaims_and_idle_ones_are_deleted(
    cluster, namespace, karpenter_pool
):
    node_pool_name = karpenter_pool("spot", 0.394, idleTimeout="3s")
    cluster.apply(
        pool("web", namespace, 2, gpu={"memoryMiB": 20000}, capacityTypes=["spot", "on-demand"])
    )
    cluster.wait("2 replicas ready", lambda: all_ready(cluster, namespace, "web"), timeout=120)

    made = claims(cluster, node_pool_name)
    assert len(made) == 2  # in-flight claims (no Node for BOOT) were never bought twice
    for claim in made:
        requirements = {r["key"]: r["values"] for r in claim["spec"]["requirements"]}
        assert requirements[names.LABEL_INSTANCE_TYPE] == ["g5.xlarge"]
        assert requirements[names.LABEL_CAPACITY_TYPE] == ["spot"]
        assert requirements["kubernetes.io/arch"] == ["amd64"]  # the NodePool's own, kept
        assert claim["spec"]["nodeClassRef"]["name"] == "gpu"
        assert claim["spec"]["expireAfter"] == "Never"
    nodes = pool_nodes(cluster, node_pool_name)
    assert {n["metadata"]["name"] for n in nodes} == {c["status"]["nodeName"] for c in made}
    assert replica_nodes(cluster, namespace) == {n["metadata"]["name"] for n in nodes}
    for node in nodes:
        assert node["metadata"]["labels"][NODEPOOL_LABEL] == "gpu"
        assert node["metadata"]["labels"]["team"] == "ml-platform"  # the NodePool's template
        assert node["metadata"]["annotations"][DO_NOT_DISRUPT] == "true"
        assert names.ANNOTATION_RESERVED_FOR in node["metadata"]["annotations"]
    (event,) = pool_events(cluster, node_pool_name, "ScaleUp")
    assert "launched 2" in event["message"] and "NodeClaim" in event["message"]

    scale(cluster, namespace, "web", 0)
    cluster.wait(
        "idle nodes and their claims gone",
        lambda: not node_names(cluster, node_pool_name) and not claims(cluster, node_pool_name),
        timeout=120,
    )
    assert len(pool_events(cluster, node_pool_name, "NodeRemoved")) == 2


def test_a_spot_interruption_moves_the_work_and_deletes_the_claim(
    cluster, namespace, karpenter_pool
):
    spot = karpenter_pool("spot", 0.394, idleTimeout="1h")
    cluster.apply(pool("web", namespace, 1, gpu={"memoryMiB": 20000}, capacityTypes=["spot"]))
    cluster.wait("replica ready", lambda: all_ready(cluster, namespace, "web"), timeout=120)
    (doomed_claim,) = claims(cluster, spot)
    doomed, new_home = reclaimed(cluster, namespace, spot, timeout=150)
    assert new_home != doomed
    assert doomed_claim["metadata"]["name"] not in {
        c["metadata"]["name"] for c in claims(cluster, spot)
    }


def test_letting_go_of_a_claim_from_a_stale_read_removes_only_our_finalizer(
    cluster: Cluster, karpenter: Karpenter, namespace: str
):
    """Karpenter drops its own finalizer from a claim being deleted; gpucost letting go of the
    claim from an older read must not write that finalizer back (the API refuses to add one to
    an object being deleted, and a CI run's autoscaler failed a look on it)."""
    hold = "test.gpucost.dev/hold"  # stands in for the finalizer another controller drops
    name = f"{namespace}-stale"
    body = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        # ours second: its index in the stale read is gone, so the first patch fails its test
        "metadata": {"name": name, "finalizers": [hold, FINALIZER]},
        "spec": {
            "nodeClassRef": {
                "group": "karpenter.kwok.sh",
                "kind": "KWOKNodeClass",
                "name": "absent",
            },
            "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    cluster.kubectl("delete", "nodeclaim", name, "--wait=false")
    kube = Kube(kubernetes.config.new_client_from_config(config_file=str(cluster.cp.kubeconfig)))
    stale = kube.custom.get_cluster_custom_object("karpenter.sh", "v1", "nodeclaims", name)
    at = f"/metadata/finalizers/{stale['metadata']['finalizers'].index(hold)}"
    ops = [{"op": "test", "path": at, "value": hold}, {"op": "remove", "path": at}]
    cluster.kubectl("patch", "nodeclaim", name, "--type=json", "-p", json.dumps(ops))
    KarpenterProvider(kube)._let_go(stale)
    cluster.wait("the claim gone", lambda: cluster.get("nodeclaim", name) is None, timeout=60)


def test_a_claim_karpenter_cannot_launch_cools_the_pool_and_the_work_goes_on_demand(
    cluster, namespace, karpenter_pool
):
    broken = karpenter_pool("spot", 0.1, karpenter_pool="broken")
    fallback = karpenter_pool("on-demand", 1.006)
    cluster.apply(
        pool("web", namespace, 1, gpu={"memoryMiB": 20000}, capacityTypes=["spot", "on-demand"])
    )
    cluster.wait(
        "replica ready on on-demand", lambda: all_ready(cluster, namespace, "web"), timeout=150
    )
    assert not node_names(cluster, broken) and len(node_names(cluster, fallback)) == 1
    assert pool_events(cluster, broken, "ScaleUp")  # it was tried first: it is the cheapest
    failed = pool_events(cluster, broken, "LaunchFailed")
    assert failed and "deleted by Karpenter before its node joined" in failed[0]["message"]
    assert (
        names.ANNOTATION_LAUNCH_COOLDOWN
        in cluster.get("gpunodepool", broken)["metadata"]["annotations"]
    )
    cluster.wait("the failed claim let go of", lambda: not claims(cluster, broken), timeout=30)


def test_an_operator_restart_while_claims_boot_makes_no_duplicates(
    cluster, operator, namespace, karpenter_pool
):
    node_pool_name = karpenter_pool("on-demand", 1.006, maxNodes=6, idleTimeout="1h")
    cluster.apply(pool("web", namespace, 2, gpu={"memoryMiB": 20000}))
    launch_recorded(cluster, node_pool_name, lambda: len(claims(cluster, node_pool_name)) == 2)
    operator.restart()
    cluster.wait("replicas ready", lambda: all_ready(cluster, namespace, "web"), timeout=120)
    assert len(claims(cluster, node_pool_name)) == 2
    assert len(node_names(cluster, node_pool_name)) == 2
    assert len(pool_events(cluster, node_pool_name, "ScaleUp")) == 1
    assert all(FINALIZER in c["metadata"]["finalizers"] for c in claims(cluster, node_pool_name))
