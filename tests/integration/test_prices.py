"""Pools priced by the operator's price sources: AWS's published snapshot and a ConfigMap whose
edits move prices, re-rank pools for new nodes, and never lose the last good price."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.conftest import PRICE_CONFIGMAP, Cluster, condition
from tests.integration.test_autoscaler import all_ready, node_names
from tests.integration.test_inferencepool import pool
from tests.integration.test_kill import scale

NAMESPACE, NAME = PRICE_CONFIGMAP.split("/")


def set_prices(cluster: Cluster, table: str) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "data": {"table.csv": table},
        }
    )


@pytest.fixture
def prices(cluster: Cluster):
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    yield lambda table: set_prices(cluster, table)
    cluster.kubectl("delete", "configmap", NAME, "-n", NAMESPACE, check=False)


def status(cluster: Cluster, name: str) -> dict:
    return cluster.get("gpunodepool", name).get("status") or {}


def test_pools_without_a_price_take_the_sources_and_a_price_move_re_ranks_them(
    cluster, namespace, gpu_pool, prices
):
    a, b = f"test.{uuid.uuid4().hex[:6]}", f"test.{uuid.uuid4().hex[:6]}"
    header = "instanceType,capacityType,region,usdPerHour\n"
    prices(header + f"{a},spot,us-east-1,0.30\n{b},on-demand,us-east-1,0.50\n")
    small = dict(gpus=1, memory_mib=24000, pricePerHour=None, minNodes=0, maxNodes=3)
    spot = gpu_pool(0, capacity_type="spot", instanceType=a, idleTimeout="1h", **small)
    on_demand = gpu_pool(0, instanceType=b, idleTimeout="1h", **small)
    # Too small for the replicas below: these two only show how they are priced.
    tiny = {**small, "memory_mib": 16000}
    aws = gpu_pool(0, capacity_type="spot", instanceType="g5.xlarge", **tiny)
    unknown = gpu_pool(0, instanceType="test.unlisted", **tiny)

    cluster.wait("priced from the ConfigMap", lambda: status(cluster, spot).get("pricePerHour"))
    assert status(cluster, spot)["priceSource"] == f"configmap:{PRICE_CONFIGMAP}/table.csv:2"
    assert condition(cluster.get("gpunodepool", spot), "Priced")["reason"] == "PriceList"
    # AWS's snapshot as published: g5.xlarge spot in us-east-1 with its Spot Advisor bucket.
    g5 = cluster.wait("priced from AWS's file", lambda: status(cluster, aws).get("priceSource"))
    assert g5.endswith("aws_ec2_gpu_linux_ondemand_spot.csv:481")
    g5_status = status(cluster, aws)
    assert g5_status["pricePerHour"] == 0.39388 and g5_status["interruptionsPerMonth"] == 0.25
    assert g5_status["expectedPricePerHour"] > g5_status["pricePerHour"]
    lost = cluster.wait(
        "a pool no source prices is left out, saying why",
        lambda: (
            condition(cluster.get("gpunodepool", unknown), "Priced").get("reason") == "NoPrice"
            and cluster.get("gpunodepool", unknown)
        ),
    )
    assert "test.unlisted" in condition(lost, "Priced")["message"]
    assert condition(lost, "Ready")["status"] == "False"

    cluster.apply(
        pool("web", namespace, 1, gpu={"memoryMiB": 20000}, capacityTypes=["spot", "on-demand"],
             nodePoolSelector={"test": namespace})
    )  # fmt: skip
    cluster.wait("a replica on the cheapest pool", lambda: all_ready(cluster, namespace, "web"))
    assert len(node_names(cluster, spot)) == 1 and not node_names(cluster, on_demand)

    prices(header + f"{a},spot,us-east-1,0.80\n{b},on-demand,us-east-1,0.50\n")
    cluster.wait("the spot price moved", lambda: status(cluster, spot)["pricePerHour"] == 0.8)
    scale(cluster, namespace, "web", 2)
    cluster.wait(
        "the next replica ready",
        lambda: (
            cluster.get("inferencepools.gpucost.dev", "web", namespace)["status"].get(
                "readyReplicas"
            )
            == 2
        ),
    )
    assert len(node_names(cluster, on_demand)) == 1  # now the cheaper pool for new capacity
    assert len(node_names(cluster, spot)) == 1  # the running node is not moved for it

    prices("instanceType,capacityType,region,usdPerHour\n" + f"{a},spot,us-east-1,cheap\n")
    broken = cluster.wait(
        "a broken ConfigMap reported where a price is missing",
        lambda: (
            "table.csv:2: usdPerHour 'cheap'"
            in condition(cluster.get("gpunodepool", unknown), "Priced").get("message", "")
            and cluster.get("gpunodepool", spot)
        ),
    )
    assert broken["status"]["pricePerHour"] == 0.8  # the last good price is kept
