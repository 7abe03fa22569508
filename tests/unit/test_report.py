"""gpucost report: rows, namespace sums and the naive baseline from statuses alone."""

from __future__ import annotations

import pytest

from gpucost.report import IDLE, History, build, plot


def node_pool(name: str, capacity: str, price: float, gpus: int, mib: int, status: dict) -> dict:
    spec = {
        "instanceType": "x",
        "capacityType": capacity,
        "pricePerHour": price,
        "cpu": "8",
        "memory": "64Gi",
        "gpu": {"model": "G", "memoryMiB": mib, "count": gpus},
    }
    return {"metadata": {"name": name}, "spec": spec, "status": status}


def inference_pool(
    ns: str, name: str, replicas: int, gpu: dict, per_hour: float, total: float
) -> dict:
    return {
        "metadata": {"namespace": ns, "name": name},
        "spec": {"image": "x", "replicas": replicas, "gpu": gpu},
        "status": {"replicas": replicas, "costPerHour": per_hour, "costAccumulated": total},
    }


def test_rows_namespaces_and_savings_against_a_whole_on_demand_gpu_per_replica():
    pools = [
        node_pool(
            "a100",
            "on-demand",
            32.0,
            8,
            81920,
            {
                "nodes": 1,
                "costPerHour": 32.0,
                "idleCostPerHour": 20.0,
                "costAccumulated": 64.0,
                "idleCostAccumulated": 40.0,
            },
        ),
        node_pool("l4", "on-demand", 1.0, 1, 23034, {"nodes": 0}),
        node_pool(
            "l4-spot", "spot", 0.3, 1, 23034, {"nodes": 0}
        ),  # spot never sets the naive price
    ]
    workloads = [
        inference_pool(
            "team-a", "embed", 4, {"memoryMiB": 10000}, 4.0, 8.0
        ),  # naive: 4 x L4 $1 = 4
        inference_pool(
            "team-a", "chat", 2, {"memoryMiB": 40000}, 8.0, 16.0
        ),  # too big for an L4: 2 x $4 = 8
        inference_pool("team-b", "llm", 1, {"gpus": 2}, 0.0, 0.0),  # 2 GPUs on one node: 2 x $4 = 8
    ]
    jobs = [
        {
            "metadata": {"namespace": "team-a", "name": "shrink"},
            "spec": {
                "modelUri": "m",
                "method": {"quantize": {}},
                "dataset": "d",
                "outputUri": "o",
                "gpu": {"gpus": 1},
            },
            "status": {"phase": "Running", "costPerHour": 4.0, "costAccumulated": 1.0},
        },
        {
            "metadata": {
                "namespace": "team-b",
                "name": "waiting",
            },  # not running: nothing naive either
            "spec": {
                "modelUri": "m",
                "method": {"quantize": {}},
                "dataset": "d",
                "outputUri": "o",
                "gpu": {"gpus": 1},
            },
            "status": {"phase": "Suspended"},
        },
    ]
    report = build(workloads, pools, jobs)
    assert [(w.kind, w.namespace, w.name, w.naive_per_hour) for w in report.workloads] == [
        ("CompressionJob", "team-a", "shrink", 1.0),
        ("InferencePool", "team-a", "chat", 8.0),  # an L4 would do
        ("InferencePool", "team-a", "embed", 4.0),
        ("CompressionJob", "team-b", "waiting", 0.0),
        ("InferencePool", "team-b", "llm", 8.0),
    ]
    assert report.namespaces == {"team-a": (16.0, 25.0), "team-b": (0.0, 0.0)}
    totals = report.totals()
    assert (
        totals["per_hour"] == 32.0
        and totals["idle_per_hour"] == 20.0
        and totals["accumulated"] == 64.0
    )
    assert totals["naive_per_hour"] == pytest.approx(21.0) and totals[
        "savings_per_hour"
    ] == pytest.approx(-11.0)


def test_a_pool_serving_a_compressed_model_shows_what_its_smaller_slices_save():
    served = inference_pool("team-a", "chat", 3, {"memoryMiB": 24000}, 3.0, 0.0)
    served["status"]["adoptedModel"] = {
        "compressionJob": "chat-w4",
        "jobUid": "u",
        "modelUri": "s3://m/chat-w4/",
        "memoryMiB": 11776,
        "modelMemoryMiB": 5436,
        "scheme": "W4A16",
        "costPerReplicaHourBefore": 2.0,
        "costPerReplicaHourAfter": 0.98,
    }
    unpriced = inference_pool("team-a", "embed", 2, {"memoryMiB": 8000}, 1.0, 0.0)
    report = build([served, unpriced], [])
    (row,) = report.compression
    assert (row.pool, row.job, row.replicas) == ("chat", "chat-w4", 3)
    assert row.saving_per_hour == pytest.approx(3 * 1.02)
    assert report.totals()["compression_savings_per_hour"] == pytest.approx(3.06)
    assert report.as_dict()["compression"][0]["saving_per_hour"] == pytest.approx(3.06)


def test_history_sums_namespaces_and_plots_every_namespace_over_idle(tmp_path):
    t0 = 1_780_000_000.0
    past = History(
        "1h",
        {
            ("InferencePool", "team-a", "chat"): 2.0,
            ("InferencePool", "team-a", "embed"): 0.5,
            ("InferencePool", "team-b", "llm"): 3.0,
        },
        {"a100": (7.0, 1.5)},
        {
            "team-a": [(t0, 2.5), (t0 + 60, 2.5)],
            "team-b": [(t0 + 60, 3.0)],
            IDLE: [(t0, 1.5), (t0 + 60, 1.5)],
        },
    )
    assert past.namespaces == {"team-a": 2.5, "team-b": 3.0}
    assert past.as_dict()["total"] == 7.0 and past.as_dict()["pools"] == {
        "a100": {"spent": 7.0, "idle": 1.5}
    }
    plot(past, tmp_path / "cost.png")
    assert (tmp_path / "cost.png").read_bytes()[:4] == b"\x89PNG"


def serving(ns: str, name: str, model: str, tokens: float, cost: float) -> dict:
    obj = inference_pool(ns, name, 1, {"memoryMiB": 10000}, 1.0, 1.0)
    obj["spec"]["servedModelName"] = model
    obj["status"]["tokens"] = {
        "windowSeconds": 3600,
        "generatedTokens": tokens,
        "cost": cost,
        "usdPerMillionTokens": cost / tokens * 1e6 if tokens else None,
        "source": "gateway",
        "measuredAt": "2026-12-04T00:00:00Z",
    }
    return obj


def test_cost_per_million_tokens_is_each_groups_cost_over_its_tokens():
    report = build(
        [
            serving("team-a", "chat", "llama-8b", 2_000_000, 4.0),
            serving("team-b", "chat", "llama-8b", 1_000_000, 5.0),
            serving("team-b", "idle", "qwen", 0, 1.0),  # paid for, nothing generated
        ],
        [],
    )
    groups = report.per_million_tokens()
    assert groups["pool"]["team-a/chat"].usd_per_million == pytest.approx(2.0)
    # Not the mean of 2 and 5: (4 + 5) / 3M tokens.
    assert groups["model"]["llama-8b"].usd_per_million == pytest.approx(3.0)
    assert groups["model"]["qwen"].usd_per_million is None
    assert groups["namespace"]["team-b"].usd_per_million == pytest.approx(6.0)  # 6 $ / 1M
    per_model = report.as_dict()["usd_per_million_tokens"]["model"]
    assert per_model["llama-8b"]["tokens"] == 3_000_000


def test_pools_show_list_and_effective_price_and_warn_of_an_unused_commitment():
    from io import StringIO

    from rich.console import Console

    from gpucost.report import render

    unused = {
        "type": "CommitmentUnused",
        "status": "True",
        "reason": "UnusedWhileBuyingOnDemand",
        "message": "$8.80/h paid for and unused (12% used) while on-demand pools pay list "
        "price: od (3 nodes)",
        "lastTransitionTime": "2026-12-04T00:00:00Z",
    }
    status = {"nodes": 2, "costPerHour": 10.0, "pricePerHour": 1.0,
              "effectivePricePerHour": 5.0, "commitmentUtilization": 0.12,
              "conditions": [unused]}  # fmt: skip
    report = build([], [node_pool("committed", "on-demand", 1.0, 1, 23034, status)])
    (row,) = report.pools
    assert (row.list_price, row.effective_price, row.utilization) == (1.0, 5.0, 0.12)
    out = StringIO()
    render(Console(file=out, width=200), report)
    assert "12%" in out.getvalue() and "warning committed: $8.80/h paid for and unused" in (
        out.getvalue()
    )
