"""Node autoscaling against the real control plane: KWOK nodes appear, boot, drain and go away."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gpucost import names
from gpucost.adapters.prometheus import UtilizationSource
from gpucost.settings import Utilization
from tests.integration.conftest import Cluster, condition
from tests.integration.test_inferencepool import pool
from tests.integration.test_serving import rolled_out

TOLERATE_ALL = [{"operator": "Exists"}]


def pool_nodes(cluster: Cluster, node_pool: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "nodes", "-l", f"{names.LABEL_NODEPOOL}={node_pool}", "-o", "json"
    ).stdout
    return json.loads(out)["items"]


def node_names(cluster: Cluster, node_pool: str) -> set[str]:
    return {n["metadata"]["name"] for n in pool_nodes(cluster, node_pool)}


def all_ready(cluster: Cluster, namespace: str, *pools: str) -> bool:
    objs = [cluster.get("inferencepools.gpucost.dev", p, namespace) for p in pools]
    return all(condition(o, "Ready").get("status") == "True" for o in objs)


def pool_events(cluster: Cluster, node_pool: str, reason: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get",
        "events",
        "-A",
        "--field-selector",
        f"involvedObject.name={node_pool},reason={reason}",
        "-o",
        "json",
    ).stdout
    return json.loads(out)["items"]


def launch_recorded(cluster: Cluster, node_pool: str, launched: Callable[[], bool]) -> None:
    """Wait until ``launched`` and the one ScaleUp event that tells of it. The event is posted
    after the nodes (or claims) exist, and kopf drops events still queued when the operator
    stops: a restart test that did not wait for it counted 0 launches, not the launches made."""
    cluster.wait(
        "the launch made and recorded",
        lambda: launched() and len(pool_events(cluster, node_pool, "ScaleUp")) == 1,
        timeout=60,
    )


def replica_nodes(cluster: Cluster, namespace: str) -> set[str]:
    return {
        p["spec"].get("nodeName")
        for p in cluster.list("pods", namespace)
        if p["status"].get("phase") == "Running"
    }


def test_unplaced_replicas_get_the_cheapest_fitting_nodes_once(cluster, namespace, gpu_pool):
    spot = gpu_pool(
        0,
        gpus=1,
        memory_mib=24000,
        capacity_type="spot",
        pricePerHour=0.4,
        minNodes=0,
        maxNodes=4,
        idleTimeout="1h",
        provider={"kind": "kwok", "bootDelay": "3s"},
    )
    dear = gpu_pool(
        0, gpus=1, memory_mib=24000, pricePerHour=1.0, minNodes=0, maxNodes=4, idleTimeout="1h"
    )
    cluster.apply(
        pool("web", namespace, 3, gpu={"memoryMiB": 20000}, capacityTypes=["spot", "on-demand"])
    )
    cluster.apply(pool("db", namespace, 2, gpu={"memoryMiB": 20000}))  # on-demand only: never spot

    def booting():
        obj = cluster.get("gpunodepool", spot)
        return (obj.get("status") or {}).get("inFlightNodes", 0) > 0

    cluster.wait("spot nodes booting (in flight)", booting, timeout=60)
    cluster.wait(
        "every replica ready", lambda: all_ready(cluster, namespace, "web", "db"), timeout=120
    )
    # One 20 GB slice per 24 GB GPU: web (may use spot) on the cheaper spot pool, db on on-demand.
    assert len(node_names(cluster, spot)) == 3
    assert len(node_names(cluster, dear)) == 2
    assert replica_nodes(cluster, namespace) == node_names(cluster, spot) | node_names(
        cluster, dear
    )
    (event,) = pool_events(cluster, spot, "ScaleUp")  # one batched decision, not one per replica
    assert "launched 3" in event["message"] and "+$1.20/h" in event["message"]
    assert sum(int(e["message"].split()[1]) for e in pool_events(cluster, dear, "ScaleUp")) == 2
    # The pool's status is refreshed on its resync timer, so it may trail the replicas by a tick.
    cluster.wait(
        "the spot pool's status: 3 ready, none in flight",
        lambda: (
            (s := cluster.get("gpunodepool", spot)["status"])["inFlightNodes"] == 0
            and s["readyNodes"] == 3
        ),
    )


def test_idle_nodes_go_away_but_a_do_not_disrupt_pod_keeps_its_node(cluster, namespace, gpu_pool):
    node_pool = gpu_pool(
        0, gpus=1, memory_mib=24000, pricePerHour=1.0, minNodes=0, maxNodes=3, idleTimeout="3s"
    )
    cluster.apply(pool("web", namespace, 3, gpu={"memoryMiB": 20000}))
    cluster.wait("3 replicas ready", lambda: all_ready(cluster, namespace, "web"), timeout=90)
    nodes = sorted(node_names(cluster, node_pool))
    assert len(nodes) == 3
    keeper = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "notebook",
            "namespace": namespace,
            "annotations": {"karpenter.sh/do-not-disrupt": "true"},
        },
        "spec": {
            "nodeName": nodes[0],
            "tolerations": TOLERATE_ALL,
            "containers": [{"name": "c", "image": "x"}],
        },
    }
    cluster.apply(keeper)
    cluster.kubectl(
        "patch",
        "inferencepools.gpucost.dev",
        "web",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"replicas":0}}',
    )
    cluster.wait(
        "idle nodes removed", lambda: node_names(cluster, node_pool) == {nodes[0]}, timeout=90
    )
    kept = cluster.get("node", nodes[0])
    assert names.ANNOTATION_DISRUPTION not in kept["metadata"].get("annotations", {})
    assert not kept["spec"].get("unschedulable")
    assert cluster.get("pod", "notebook", namespace)["status"]["phase"] == "Running"
    removed = pool_events(cluster, node_pool, "NodeRemoved")
    assert sorted(e["message"].split()[2] for e in removed) == nodes[1:]
    cluster.wait(
        "status lists the kept node as idle",
        lambda: cluster.get("gpunodepool", node_pool)["status"].get("idleNodes") == [nodes[0]],
    )


def test_a_spot_interruption_moves_the_work_and_removes_the_node(cluster, namespace, gpu_pool):
    spot = gpu_pool(
        0,
        gpus=1,
        memory_mib=24000,
        capacity_type="spot",
        pricePerHour=0.4,
        minNodes=0,
        maxNodes=3,
        idleTimeout="1h",
    )
    cluster.apply(pool("web", namespace, 1, gpu={"memoryMiB": 20000}, capacityTypes=["spot"]))
    cluster.wait("replica ready", lambda: all_ready(cluster, namespace, "web"), timeout=90)
    doomed, new_home = reclaimed(cluster, namespace, spot)
    assert new_home != doomed
    assert pool_events(cluster, spot, "SpotInterruption")


def reclaimed(cluster: Cluster, namespace: str, spot: str, timeout: float = 120) -> tuple[str, str]:
    """The cloud takes the pool's one node back: (that node, where pool web's replica runs once
    the node is gone)."""
    (doomed,) = node_names(cluster, spot)
    cluster.kubectl("taint", "node", doomed, "gpucost.dev/interruption=reclaim:NoSchedule")

    def moved():
        return (
            doomed not in node_names(cluster, spot)
            and all_ready(cluster, namespace, "web")
            and replica_nodes(cluster, namespace)
        )

    (new_home,) = cluster.wait("work re-placed and the reclaimed node removed", moved, timeout)
    return doomed, new_home


def test_a_failing_spot_launch_falls_back_to_on_demand(cluster, namespace, gpu_pool):
    # The API server rejects this label value on the Node, so every launch in this pool fails.
    broken = gpu_pool(
        0,
        gpus=1,
        memory_mib=24000,
        capacity_type="spot",
        pricePerHour=0.1,
        minNodes=0,
        maxNodes=3,
        labels={"zone": "not a valid label value!"},
    )
    fallback = gpu_pool(0, gpus=1, memory_mib=24000, pricePerHour=1.0, minNodes=0, maxNodes=3)
    cluster.apply(
        pool("web", namespace, 1, gpu={"memoryMiB": 20000}, capacityTypes=["spot", "on-demand"])
    )
    cluster.wait(
        "replica ready on on-demand", lambda: all_ready(cluster, namespace, "web"), timeout=90
    )
    assert not node_names(cluster, broken) and len(node_names(cluster, fallback)) == 1
    (failed,) = pool_events(cluster, broken, "LaunchFailed")
    assert "422" in failed["message"]


def test_work_that_fell_back_to_on_demand_moves_back_to_spot_once_spot_launches_again(
    cluster, namespace, gpu_pool
):
    spot = gpu_pool(
        0,
        gpus=1,
        memory_mib=24000,
        capacity_type="spot",
        pricePerHour=0.4,
        minNodes=0,
        maxNodes=3,
        idleTimeout="1h",
        labels={"zone": "not a valid label value!"},  # every launch fails until this is fixed
    )
    fallback = gpu_pool(
        0, gpus=1, memory_mib=24000, pricePerHour=1.0, minNodes=0, maxNodes=3,
        idleTimeout="1h", consolidateAfter="2s",
    )  # fmt: skip
    cluster.apply(
        pool("web", namespace, 1, gpu={"memoryMiB": 20000}, capacityTypes=["spot", "on-demand"])
    )
    cluster.wait("web on on-demand", lambda: all_ready(cluster, namespace, "web"), timeout=90)
    (on_demand,) = node_names(cluster, fallback)
    assert pool_events(cluster, spot, "LaunchFailed")
    # Spot capacity is back and the pool's cool-down is over (its time is in the API).
    cluster.kubectl(
        "patch", "gpunodepool", spot, "--type=merge", "-p",
        json.dumps({"metadata": {"annotations": {
            names.ANNOTATION_LAUNCH_COOLDOWN: "2020-01-01T00:00:00Z"}},
            "spec": {"labels": {"zone": "us-east-1a"}}}),
    )  # fmt: skip

    def back_on_spot():
        return (
            not node_names(cluster, fallback)
            and all_ready(cluster, namespace, "web")
            and replica_nodes(cluster, namespace) == node_names(cluster, spot)
        )

    cluster.wait("web moved back to spot, the on-demand node removed", back_on_spot, timeout=120)
    (event,) = pool_events(cluster, fallback, "Consolidation")
    assert on_demand in event["message"] and "saving $0.60/h" in event["message"]


def test_an_unschedulable_plain_gpu_pod_gets_a_node(cluster, namespace, gpu_pool):
    node_pool = gpu_pool(
        0, gpus=4, pricePerHour=8.0, minNodes=0, maxNodes=2, labels={"team": namespace}
    )
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "trainer", "namespace": namespace},
            "spec": {
                "nodeSelector": {"team": namespace},
                "tolerations": TOLERATE_ALL,
                "containers": [
                    {"name": "c", "image": "x", "resources": {"limits": {names.RESOURCE_GPU: "2"}}}
                ],
            },
        }
    )
    cluster.wait(
        "the pod runs on a new node",
        lambda: cluster.get("pod", "trainer", namespace)["status"].get("phase") == "Running",
        timeout=90,
    )
    assert cluster.get("pod", "trainer", namespace)["spec"]["nodeName"] in node_names(
        cluster, node_pool
    )


def test_an_operator_restart_mid_scale_up_makes_no_duplicate_nodes(
    cluster, operator, namespace, gpu_pool
):
    node_pool = gpu_pool(
        0,
        gpus=1,
        memory_mib=24000,
        pricePerHour=1.0,
        minNodes=0,
        maxNodes=6,
        idleTimeout="1h",
        provider={"kind": "kwok", "bootDelay": "6s"},
    )
    cluster.apply(pool("web", namespace, 2, gpu={"memoryMiB": 20000}))
    launch_recorded(cluster, node_pool, lambda: len(node_names(cluster, node_pool)) == 2)
    operator.restart()  # the nodes still boot for 6 s: the restart lands mid scale-up
    cluster.wait("replicas ready", lambda: all_ready(cluster, namespace, "web"), timeout=90)
    assert len(node_names(cluster, node_pool)) == 2
    assert len(pool_events(cluster, node_pool, "ScaleUp")) == 1


def test_two_half_used_nodes_are_consolidated_into_one(cluster, namespace, gpu_pool):
    node_pool = gpu_pool(
        2,
        gpus=1,
        memory_mib=24000,
        pricePerHour=1.0,
        minNodes=0,
        maxNodes=2,
        idleTimeout="1h",
        consolidateAfter="2s",
    )
    for name in (
        "a",
        "b",
        "c",
    ):  # three 12000 MiB replicas on two 24000 MiB GPUs: one node holds two
        cluster.apply(pool(name, namespace, 1, gpu={"memoryMiB": 12000}))
    cluster.wait(
        "3 replicas ready", lambda: all_ready(cluster, namespace, "a", "b", "c"), timeout=60
    )
    homes = {n: cluster.get("pod", f"{n}-0", namespace)["spec"]["nodeName"] for n in "abc"}
    shared = next(n for n in "abc" if list(homes.values()).count(homes[n]) == 2)
    cluster.kubectl("delete", "inferencepools.gpucost.dev", shared, "-n", namespace)
    # Now each node holds one 12000 MiB replica: one of them fits beside the other.
    left = sorted(set("abc") - {shared})
    cluster.wait(
        "consolidated onto one node", lambda: len(node_names(cluster, node_pool)) == 1, timeout=90
    )
    cluster.wait(
        "both replicas ready again", lambda: all_ready(cluster, namespace, *left), timeout=60
    )
    (kept,) = node_names(cluster, node_pool)
    # A moved replica is a new pod (a new ordinal: it was made before its old pod was gone).
    homes = {
        p["spec"]["nodeName"]
        for n in left
        for p in cluster.list("pods", namespace, f"{names.LABEL_POOL}={n}")
    }
    assert homes == {kept}
    (event,) = pool_events(cluster, node_pool, "Consolidation")
    assert "fit on the other nodes" in event["message"] and "-$1.00/h" in event["message"]


def test_a_dear_node_held_by_one_small_replica_is_replaced_by_a_cheaper_node(
    cluster, namespace, gpu_pool
):
    dear = gpu_pool(
        1,
        gpus=4,
        memory_mib=81920,
        pricePerHour=20.0,
        minNodes=0,
        maxNodes=1,
        idleTimeout="1h",
        consolidateAfter="2s",
    )
    cheap = gpu_pool(
        0,
        gpus=1,
        memory_mib=24000,
        pricePerHour=1.0,
        minNodes=0,
        maxNodes=2,
        idleTimeout="1h",
        provider={"kind": "kwok", "bootDelay": "2s"},
    )
    (old,) = node_names(cluster, dear)
    cluster.apply(pool("web", namespace, 1, gpu={"memoryMiB": 10000}))
    cluster.wait(
        "web runs on the only node there is",
        lambda: replica_nodes(cluster, namespace) == {old},
        timeout=60,
    )

    def moved():
        return (
            not node_names(cluster, dear)
            and all_ready(cluster, namespace, "web")
            and replica_nodes(cluster, namespace) == node_names(cluster, cheap)
        )

    cluster.wait("web moved to a cheap node and the dear one removed", moved, timeout=120)
    assert len(node_names(cluster, cheap)) == 1
    (event,) = pool_events(cluster, dear, "Consolidation")
    assert f"1 new {cheap} node(s)" in event["message"] and "saving $19.00/h" in event["message"]
    assert len(pool_events(cluster, cheap, "ScaleUp")) == 1


def test_a_node_whose_gpus_sat_unused_for_the_idle_timeout_is_drained(
    cluster, namespace, gpu_pool, gpu_exporter, prometheus
):
    quiet = gpu_pool(
        1,
        gpus=1,
        memory_mib=24000,
        pricePerHour=1.0,
        minNodes=0,
        maxNodes=1,
        idleTimeout="4s",
        idleUtilizationPercent=10,
    )
    (node,) = node_names(cluster, quiet)
    cluster.apply(pool("web", namespace, 1, gpu={"memoryMiB": 20000}))
    cluster.wait("web runs", lambda: replica_nodes(cluster, namespace) == {node}, timeout=60)
    # What the operator will ask Prometheus is what the exporter exposed (through a real scrape).
    source = UtilizationSource(Utilization(prometheus_url=prometheus.url))
    gpu_exporter.set(node, 2.0)
    cluster.wait(
        "Prometheus scraped the exporter",
        lambda: (source.peak_percent(4) or {}).get(node) == 2.0,
        timeout=30,
    )
    # Long idleTimeout: the new node must not be removed for being empty before web moves onto it.
    busy = gpu_pool(
        1,
        gpus=1,
        memory_mib=24000,
        pricePerHour=1.0,
        minNodes=0,
        maxNodes=1,
        idleTimeout="1h",
        idleUtilizationPercent=10,
    )
    (other,) = node_names(cluster, busy)
    gpu_exporter.set(other, 80.0)
    cluster.wait(
        "the unused node drained and removed, web moved",
        lambda: not node_names(cluster, quiet) and replica_nodes(cluster, namespace) == {other},
        timeout=90,
    )
    (event,) = pool_events(cluster, quiet, "Underutilized")
    assert "peaked at 2%" in event["message"]
    assert cluster.get("node", other) is not None  # 80 % busy: stays


def test_a_pod_disruption_budget_holds_the_drain_until_it_allows_the_eviction(
    cluster, operator, namespace, gpu_pool
):
    spot = gpu_pool(
        1,
        gpus=1,
        memory_mib=24000,
        capacity_type="spot",
        pricePerHour=0.4,
        minNodes=0,
        maxNodes=1,
        idleTimeout="1h",
    )
    cluster.apply(pool("web", namespace, 1, gpu={"memoryMiB": 20000}, capacityTypes=["spot"]))
    cluster.wait("replica ready", lambda: all_ready(cluster, namespace, "web"), timeout=60)
    uid = cluster.get("inferencepools.gpucost.dev", "web", namespace)["metadata"]["uid"]
    cluster.apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {names.LABEL_OWNER_UID: uid}}},
        }
    )
    cluster.wait(
        "the budget sees the replica",
        lambda: (
            (cluster.get("pdb", "web", namespace) or {}).get("status", {}).get("currentHealthy")
            == 1
        ),
        timeout=30,
    )
    (doomed,) = node_names(cluster, spot)
    cluster.kubectl("taint", "node", doomed, "gpucost.dev/interruption=reclaim:NoSchedule")
    cluster.wait(
        "the node is cordoned for removal",
        lambda: (
            names.ANNOTATION_DISRUPTION
            in (cluster.get("node", doomed)["metadata"].get("annotations") or {})
        ),
    )
    # The budget refuses the eviction (429): the replica keeps running and the node is not deleted.
    cluster.wait(
        "an eviction refused", lambda: pool_events(cluster, spot, "EvictionBlocked"), timeout=30
    )
    assert (
        cluster.get("node", doomed) is not None
        and cluster.get("pod", "web-0", namespace)["status"]["phase"] == "Running"
    )
    # Told once, though every tick retries the eviction.
    (event,) = pool_events(cluster, spot, "EvictionBlocked")
    assert f"holds {namespace}/web-0 on node {doomed}" in event["message"]
    cluster.kubectl("delete", "pdb", "web", "-n", namespace)
    cluster.wait(
        "drained and removed once the budget is gone",
        lambda: cluster.get("node", doomed) is None,
        timeout=60,
    )


def test_an_on_demand_base_stays_on_on_demand_while_the_rest_takes_spot(
    cluster, namespace, gpu_pool
):
    spot = gpu_pool(
        0, gpus=1, memory_mib=24000, capacity_type="spot", pricePerHour=0.4, minNodes=0, maxNodes=4
    )
    on_demand = gpu_pool(0, gpus=1, memory_mib=24000, pricePerHour=1.0, minNodes=0, maxNodes=4)
    cluster.apply(
        pool("web", namespace, 3, gpu={"gpus": 1}, capacityTypes=["spot", "on-demand"],
             onDemandBase=1)
    )  # fmt: skip
    cluster.wait("replicas ready", lambda: all_ready(cluster, namespace, "web"), timeout=120)
    placements = cluster.get("inferencepools.gpucost.dev", "web", namespace)["status"]["placements"]
    homes = {p["replica"]: p["node"] for p in placements}
    # replica 0 on the on-demand node bought for it, the other two on the cheaper spot nodes
    assert homes[0] in node_names(cluster, on_demand)
    assert {homes[1], homes[2]} <= node_names(cluster, spot) and len(node_names(cluster, spot)) == 2
    assert len(node_names(cluster, on_demand)) == 1
    # A rolling update names its new replicas by the lowest free ordinals (3 first, as 0 to 2
    # still run): its first new replica takes the base, so the pool is not left all on spot.
    cluster.kubectl(
        "patch", "inferencepools.gpucost.dev", "web", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"image": "vllm/vllm-openai:B"}}),
    )  # fmt: skip
    done = cluster.wait(
        "the rollout", lambda: rolled_out(cluster, namespace, "web", 3), timeout=180
    )
    homes = {p["replica"]: p["node"] for p in done["status"]["placements"]}
    assert len(set(homes.values()) & node_names(cluster, on_demand)) == 1, homes
