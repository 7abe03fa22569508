"""Cost in status: a shared GPU split by memory, idle cost on the pool, totals that survive a
restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from prometheus_api_client import PrometheusConnect

from gpucost.api.common import epoch
from tests.integration.test_compressionjob import compression_job, status_of
from tests.integration.test_inferencepool import pool


def test_cost_per_hour_splits_the_gpu_and_accumulates_across_a_restart(
    cluster, operator, namespace, gpu_pool
):
    node_pool = gpu_pool(1, gpus=1, memory_mib=81920, pricePerHour=3.6)
    cluster.apply(pool("web", namespace, 1, gpu={"memoryMiB": 20480}))  # a quarter of the GPU

    def status(kind: str, name: str, ns: str | None = None) -> dict:
        return (cluster.get(kind, name, ns) or {}).get("status") or {}

    cluster.wait(
        "web charged its quarter",
        lambda: status("inferencepools.gpucost.dev", "web", namespace).get("costPerHour") == 0.9,
    )
    cluster.wait(
        "the pool's idle three quarters",
        lambda: status("gpunodepool", node_pool).get("idleCostPerHour") == pytest.approx(2.7),
    )
    assert status("gpunodepool", node_pool)["costPerHour"] == 3.6
    before = cluster.wait(
        "some cost accumulated",
        lambda: (
            (s := status("inferencepools.gpucost.dev", "web", namespace)).get("costAccumulated", 0)
            > 0
            and s
        ),
    )
    operator.restart()
    after = cluster.wait(
        "accounted again after the restart",
        lambda: (
            epoch(
                (s := status("inferencepools.gpucost.dev", "web", namespace)).get("costAccountedAt")
            )
            > epoch(before["costAccountedAt"]) + 1
            and s
        ),
    )
    # The total went on from the stored one at the same rate, across the time the operator was down.
    elapsed_h = (epoch(after["costAccountedAt"]) - epoch(before["costAccountedAt"])) / 3600
    assert after["costAccumulated"] == pytest.approx(
        before["costAccumulated"] + 0.9 * elapsed_h, abs=1e-5
    )


def test_prometheus_scrapes_the_cost_the_status_shows(cluster, namespace, gpu_pool, prometheus):
    node_pool = gpu_pool(1, gpus=2, memory_mib=81920, pricePerHour=8.0)
    cluster.apply(
        pool("chat", namespace, 2, gpu={"gpus": 1})
    )  # a whole GPU each: the node's full $8/h
    client = PrometheusConnect(url=prometheus.url, disable_ssl=True)

    def scraped(query: str) -> float | None:
        result = client.custom_query(query)
        return float(result[0]["value"][1]) if result else None

    labels = f'kind="InferencePool",namespace="{namespace}",name="chat"'
    workload = f"gpucost_workload_cost_per_hour{{{labels}}}"
    cluster.wait("the operator's /metrics scraped", lambda: scraped(workload) == 8.0, timeout=60)
    assert (
        cluster.get("inferencepools.gpucost.dev", "chat", namespace)["status"]["costPerHour"] == 8.0
    )
    cluster.wait(
        "the pool's idle cost is zero",
        lambda: scraped(f'gpucost_pool_idle_cost_per_hour{{pool="{node_pool}"}}') == 0.0,
    )
    assert (
        scraped(f'sum by (namespace) (gpucost_workload_cost_per_hour{{namespace="{namespace}"}})')
        == 8.0
    )
    assert (scraped('sum(gpucost_placements_total{result="placed"})') or 0) >= 2


def test_gpucost_report_shows_the_cluster_cost(cluster, namespace, gpu_pool, prometheus, tmp_path):
    gpu_pool(1, gpus=1, memory_mib=81920, pricePerHour=2.0)
    cluster.apply(pool("web", namespace, 1, gpu={"memoryMiB": 40960}))  # half the GPU: $1/h
    cluster.wait(
        "charged",
        lambda: (
            (
                (cluster.get("inferencepools.gpucost.dev", "web", namespace) or {}).get("status")
                or {}
            ).get("costPerHour")
            == 1.0
        ),
    )
    env = {**os.environ, "KUBECONFIG": str(cluster.cp.kubeconfig)}
    out = subprocess.run(
        [sys.executable, "-m", "gpucost", "report", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout)
    (row,) = [w for w in report["workloads"] if w["namespace"] == namespace]
    assert row["name"] == "web" and row["per_hour"] == 1.0 and row["naive_per_hour"] is not None
    assert report["namespaces"][namespace]["per_hour"] == 1.0
    assert report["totals"]["per_hour"] >= 2.0
    table = subprocess.run(
        [sys.executable, "-m", "gpucost", "report"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert namespace in table and "by GPUNodePool" in table and "saving $" in table

    # Over a period, from what Prometheus scraped: the same dollars the status accumulated, counted
    # another way (the $/h gauge integrated at the scrape interval, not the operator's own sum).
    status = cluster.wait(
        "some cost accumulated",
        lambda: (
            (s := cluster.get("inferencepools.gpucost.dev", "web", namespace)["status"]).get(
                "costAccumulated", 0
            )
            > 0.002
            and s
        ),
        timeout=60,
    )
    png = tmp_path / "cost.png"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpucost",
            "report",
            "--json",
            "--prometheus-url",
            prometheus.url,
            "--period",
            "10m",
            "--png",
            str(png),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    past = json.loads(out.stdout)["history"]
    (row,) = [w for w in past["workloads"] if w["namespace"] == namespace]
    assert (row["kind"], row["name"]) == ("InferencePool", "web")
    after = cluster.get("inferencepools.gpucost.dev", "web", namespace)["status"]
    # At $1/h a second of scrape or status-write lag is $0.00028: within 5 s of the statuses either
    # side.
    assert status["costAccumulated"] - 0.0014 <= row["spent"] <= after["costAccumulated"] + 0.0014
    assert past["namespaces"][namespace] == row["spent"] and past["total"] >= row["spent"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    refused = subprocess.run(
        [sys.executable, "-m", "gpucost", "report", "--png", str(png)],
        env={**env, "GPUCOST_PROMETHEUS_URL": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "give --prometheus-url" in refused.stderr


def test_a_compression_jobs_pods_are_charged_to_the_job(cluster, namespace, gpu_pool):
    node_pool = gpu_pool(1, gpus=1, memory_mib=81920, pricePerHour=2.0)
    # Its worker holds a quarter of the GPU while it runs (KWOK keeps the pod Running 300 s):
    # $0.50/h.
    cluster.apply(compression_job("shrink", namespace, "300s", gpu={"memoryMiB": 20480}))
    cluster.wait(
        "the job charged its quarter",
        lambda: status_of(cluster, "shrink", namespace).get("costPerHour") == 0.5,
    )
    cluster.wait(
        "and accumulating",
        lambda: status_of(cluster, "shrink", namespace).get("costAccumulated", 0) > 0,
    )
    cluster.wait(
        "the pool's idle cost is the other three quarters",
        lambda: (
            (cluster.get("gpunodepool", node_pool).get("status") or {}).get("idleCostPerHour")
            == 1.5
        ),
    )
