"""No replica is lost to a node that goes away: placement skips nodes that can't take a pod now,
and a pod pinned to a node that is gone, going or refusing it is placed again elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gpucost import names
from gpucost.devcluster import binaries, demo
from gpucost.devcluster.controlplane import ControlPlane, alive
from tests.integration.conftest import Cluster, condition
from tests.integration.test_autoscaler import TOLERATE_ALL, node_names, pool_events
from tests.integration.test_compressionjob import compression_job, events, status_of
from tests.integration.test_inferencepool import pool

INTERRUPTION = "gpucost.dev/interruption=reclaim:NoSchedule"


def pods(cluster: Cluster, namespace: str) -> list[dict]:
    return [
        p
        for p in cluster.list("pods", namespace)
        if p["metadata"].get("labels", {}).get(names.LABEL_REPLICA)
    ]


def pinned(pod: dict) -> str:
    return pod["metadata"]["annotations"][names.ANNOTATION_NODE]


def replica_homes(cluster: Cluster, namespace: str, ready: int) -> set[str] | None:
    """The nodes the replicas run on once ``ready`` of them are Ready and none is pending."""
    live = [p for p in pods(cluster, namespace) if not p["metadata"].get("deletionTimestamp")]
    if len(live) != ready or any(condition(p, "Ready").get("status") != "True" for p in live):
        return None
    return {p["spec"]["nodeName"] for p in live}


def growable(cluster: Cluster, gpu_pool, **spec) -> tuple[str, str]:
    """A pool of one 24000 MiB GPU node now, which the autoscaler may grow by two quickly booting
    nodes (where a replica or attempt moves); the pool and its node."""
    name = gpu_pool(
        1,
        gpus=1,
        memory_mib=24000,
        minNodes=0,
        maxNodes=3,
        idleTimeout="1h",
        provider={"kind": "kwok", "bootDelay": "1s"},
        **spec,
    )
    (node,) = node_names(cluster, name)
    return name, node


def squat(cluster: Cluster, namespace: str, node: str, mib: int) -> None:
    """Someone else's pod holding the node's GPU memory: the operator does not count it, but
    kube-scheduler does, so a replica placed there stays Pending (refused by the scheduler)."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"squatter-{node}", "namespace": namespace},
            "spec": {
                "nodeName": node,
                "tolerations": TOLERATE_ALL,
                "containers": [
                    {
                        "name": "c",
                        "image": "x",
                        "resources": {"limits": {names.RESOURCE_GPU_MEMORY: str(mib)}},
                    }
                ],
            },
        }
    )


def refused_by_scheduler(cluster: Cluster, namespace: str, name: str) -> bool:
    pod = cluster.get("pod", name, namespace) or {}
    scheduled = condition(pod, "PodScheduled")
    return scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"


@pytest.mark.parametrize("taint_first", [False, True], ids=["same-instant", "taint-first"])
def test_a_reclaimed_spot_node_gets_no_replica_and_none_is_lost(
    cluster, namespace, gpu_pool, taint_first
):
    spot, doomed = growable(cluster, gpu_pool, capacity_type="spot", pricePerHour=0.4)
    cluster.apply(pool("web", namespace, 0, gpu={"memoryMiB": 10000}, capacityTypes=["spot"]))
    cluster.wait(
        "the empty pool reconciled",
        lambda: condition(cluster.get("inferencepools.gpucost.dev", "web", namespace), "Ready"),
    )
    taint = ["taint", "node", doomed, INTERRUPTION]
    scale = [
        "patch",
        "inferencepools.gpucost.dev",
        "web",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"replicas":2}}',
    ]
    if taint_first:  # a few ms apart: the operator may or may not have seen the taint yet
        cluster.kubectl(*taint)
        cluster.kubectl(*scale)
    else:
        both = [threading.Thread(target=cluster.kubectl, args=args) for args in (taint, scale)]
        for t in both:
            t.start()
        for t in both:
            t.join()
    homes = cluster.wait(
        "2 replicas Ready off the reclaimed node, which is removed",
        lambda: doomed not in node_names(cluster, spot) and replica_homes(cluster, namespace, 2),
        timeout=120,
    )
    assert doomed not in homes and homes <= node_names(cluster, spot)
    assert pool_events(cluster, spot, "SpotInterruption") and pool_events(cluster, spot, "ScaleUp")
    status = cluster.get("inferencepools.gpucost.dev", "web", namespace)["status"]
    assert (status["readyReplicas"], status["unplacedReplicas"]) == (2, 0)


def test_cordoned_and_tainted_nodes_get_no_new_replica(cluster, namespace, gpu_pool):
    node_pool = gpu_pool(3, gpus=1, memory_mib=24000)
    cordoned, disrupted, open_ = sorted(node_names(cluster, node_pool))
    cluster.kubectl("cordon", cordoned)
    cluster.kubectl("taint", "node", disrupted, "karpenter.sh/disrupted:NoSchedule")
    cluster.apply(
        pool("web", namespace, 3, gpu={"memoryMiB": 20000})
    )  # one per GPU: room for 1 now

    def verdict():
        obj = cluster.get("inferencepools.gpucost.dev", "web", namespace)
        return (
            obj["status"].get("unplacedReplicas") == 2
            and obj["status"].get("readyReplicas") == 1
            and obj
        )

    obj = cluster.wait("1 replica running, 2 unplaced", verdict)
    assert {pinned(p) for p in pods(cluster, namespace)} == {open_}
    assert condition(obj, "Ready")["reason"] == "Unschedulable"
    cluster.kubectl("uncordon", cordoned)
    cluster.wait(
        "a replica on the uncordoned node",
        lambda: replica_homes(cluster, namespace, 2) == {open_, cordoned},
    )
    assert disrupted not in {pinned(p) for p in pods(cluster, namespace)}


def test_replicas_pending_on_a_deleted_node_are_placed_again(cluster, namespace, gpu_pool):
    node_pool, lost = growable(cluster, gpu_pool)
    squat(cluster, namespace, lost, 24000)
    cluster.apply(pool("web", namespace, 1, gpu={"memoryMiB": 20000}))
    cluster.wait(
        "the replica pinned to the full node, refused by the scheduler",
        lambda: refused_by_scheduler(cluster, namespace, "web-0"),
        timeout=60,
    )
    assert pinned(cluster.get("pod", "web-0", namespace)) == lost
    cluster.kubectl("delete", "node", lost, "--wait=false")
    homes = cluster.wait(
        "the replica runs on another node", lambda: replica_homes(cluster, namespace, 1), timeout=60
    )
    assert lost not in homes
    stranded = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "reason=ReplicaStranded",
        "-o",
        "jsonpath={.items[*].message}",
    ).stdout
    assert f"node {lost} no longer exists" in stranded


def test_a_job_attempt_pending_on_a_cordoned_node_is_placed_again(cluster, namespace, gpu_pool):
    spot, first = growable(cluster, gpu_pool, capacity_type="spot", pricePerHour=1.0)
    squat(cluster, namespace, first, 24000)
    cluster.apply(compression_job("shrink", namespace, "120s", interruptible=True))
    cluster.wait(
        "attempt 1 placed on the full node",
        lambda: status_of(cluster, "shrink", namespace).get("node") == first,
    )
    cluster.kubectl("cordon", first)
    second = cluster.wait(
        "attempt 2 running on another node",
        lambda: (
            (s := status_of(cluster, "shrink", namespace)).get("attempts") == 2
            and s.get("phase") == "Running"
            and s
        ),
        timeout=90,
    )
    assert second["node"] != first and second["node"] in node_names(cluster, spot)
    assert any(
        f"attempt 1 lost its node (node {first} is cordoned)" in m
        for m in events(cluster, namespace, "Interrupted")
    )


def test_demo_keep_then_down_leaves_no_demo_process(tmp_path):
    """Its own cluster under a temporary cache folder, so a demo the user keeps is not touched."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "GPUCOST_CACHE": str(tmp_path),
        "GPUCOST_BIN": str(binaries.bin_dir()),
        "COLUMNS": "120",
    }

    def gpucost(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gpucost", "demo", *args],
            env=env,
            cwd=root,
            text=True,
            capture_output=True,
            timeout=400,
        )

    kept = gpucost("--keep", "--root", str(root))
    assert kept.returncode == 0, kept.stdout[-3000:] + kept.stderr[-3000:]
    cp = ControlPlane(demo.NAME, tmp_path / "demo")
    started = cp.pids() + cp.children()
    assert len(cp.children()) == 1 and len(started) == 6 and all(alive(p) for p in started)
    down = gpucost("--down")
    assert down.returncode == 0, down.stderr
    assert [p for p in started if alive(p)] == []
