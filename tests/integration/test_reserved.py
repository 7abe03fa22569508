"""Capacity paid for in advance on the real control plane: reserved nodes are used before any is
bought and kept however idle; an unused commitment is flagged while on-demand is bought."""

from __future__ import annotations

from tests.integration.conftest import condition
from tests.integration.test_autoscaler import all_ready, node_names, pool_events
from tests.integration.test_inferencepool import pool
from tests.integration.test_kill import scale


def test_reserved_nodes_first_kept_when_idle_and_an_idle_commitment_is_flagged(
    cluster, namespace, gpu_pool
):
    small = dict(gpus=1, memory_mib=24000, minNodes=0, idleTimeout="3s")
    reserved = gpu_pool(
        0, capacity_type="reserved", reservedNodes=2, pricePerHour=3.0, maxNodes=5, **small
    )
    on_demand = gpu_pool(0, pricePerHour=1.0, maxNodes=5, **small)
    # A Savings Plan on a pool whose GPUs are too small for the replicas below.
    committed = gpu_pool(
        0,
        gpus=1,
        memory_mib=16000,
        pricePerHour=0.8,
        minNodes=0,
        maxNodes=5,
        commitment={"usdPerHour": 2.0, "coveredPricePerHour": 0.5},
    )
    cluster.apply(pool("web", namespace, 3, gpu={"memoryMiB": 20000}))
    cluster.wait("3 replicas ready", lambda: all_ready(cluster, namespace, "web"), timeout=90)
    # The reserved pool lists at $3/h a node, but its nodes are paid for anyway: used first.
    assert len(node_names(cluster, reserved)) == 2 and len(node_names(cluster, on_demand)) == 1
    status = cluster.wait(
        "the reserved pool's bill",
        lambda: (s := cluster.get("gpunodepool", reserved)["status"]).get("nodes") == 2 and s,
    )
    assert status["costPerHour"] == 6.0 and status["commitmentUtilization"] == 1.0
    flagged = cluster.wait(
        "the idle commitment flagged",
        lambda: (
            condition(cluster.get("gpunodepool", committed), "CommitmentUnused").get("status")
            == "True"
            and cluster.get("gpunodepool", committed)
        ),
    )
    message = condition(flagged, "CommitmentUnused")["message"]
    assert "$2.00/h paid for and unused" in message and f"{on_demand} (1 nodes)" in message
    assert flagged["status"]["costPerHour"] == 2.0  # paid with no node running

    scale(cluster, namespace, "web", 0)
    cluster.wait("the on-demand node removed", lambda: not node_names(cluster, on_demand), 90)
    assert len(node_names(cluster, reserved)) == 2  # idle, and still paid for: kept
    assert not pool_events(cluster, reserved, "NodeRemoved")
    cluster.wait(
        "nothing bought elsewhere: the commitment is no longer flagged",
        lambda: (
            condition(cluster.get("gpunodepool", committed), "CommitmentUnused").get("status")
            == "False"
        ),
    )
