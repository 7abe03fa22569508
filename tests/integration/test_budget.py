"""Budgets against the real control plane: thresholds fire once, enforcement holds until the period
resets, a cluster budget covers what its selector picks, and the webhook is retried until it
answers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from gpucost.api.common import epoch
from tests.integration.conftest import condition
from tests.integration.test_inferencepool import pool


def budget(name: str, namespace: str | None, **spec) -> dict:
    kind = "CostBudget" if namespace else "ClusterCostBudget"
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "gpucost.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def job(name: str, namespace: str) -> dict:
    return {
        "apiVersion": "gpucost.dev/v1alpha1",
        "kind": "CompressionJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "modelUri": "file:///models/m.pt",
            "method": {"quantize": {}},
            "dataset": "file:///data/eval",
            "outputUri": "file:///models/out/",
            "gpu": {"memoryMiB": 4096},
        },
    }


def budget_events(cluster, namespace: str, reason: str) -> list[str]:
    return cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.kind=CostBudget,reason={reason}",
        "-o",
        "name",
    ).stdout.split()


def accounted_past(cluster, kind: str, name: str, namespace: str | None, seconds: float) -> dict:
    """Wait until the budget has been accounted ``seconds`` after now: that many more ticks ran."""
    mark = datetime.now(timezone.utc).timestamp() + seconds
    return cluster.wait(
        f"{kind} {name} accounted {seconds}s on",
        lambda: (
            (b := cluster.get(kind, name, namespace))
            and (epoch(b["status"].get("accountedAt")) or 0) > mark
            and b
        ),
    )


def test_thresholds_fire_once_and_enforcement_holds_until_the_period_resets(
    cluster, namespace, gpu_pool, webhook_receiver
):
    gpu_pool(1, gpus=1, memory_mib=81920, pricePerHour=36.0)
    # Three tenth-of-a-GPU replicas: 3 x $3.60/h = $10.80/h = $0.003/s, so $0.02 is spent in ~7 s.
    cluster.apply(pool("web", namespace, 3, minReplicas=1, gpu={"memoryMiB": 8192}))
    cluster.wait(
        "web charged",
        lambda: (
            (
                cluster.get("inferencepools.gpucost.dev", "web", namespace)["status"].get(
                    "costPerHour"
                )
                or 0
            )
            > 10.7
        ),
    )
    cluster.apply(
        budget(
            "team",
            namespace,
            daily=0.02,
            thresholds=[80, 100],
            enforce={},
            webhook={"url": webhook_receiver.url, "format": "json"},
        )
    )

    exceeded = cluster.wait(
        "the budget exceeded",
        lambda: (
            (b := cluster.get("costbudget", "team", namespace))
            and condition(b, "Exceeded").get("status") == "True"
            and b
        ),
        timeout=90,
    )
    assert exceeded["status"]["daily"]["percent"] >= 100 and exceeded["status"]["namespaces"] == [
        namespace
    ]
    assert "InferencePools capped at minReplicas" in condition(exceeded, "Exceeded")["message"]
    capped = cluster.wait(
        "web capped at minReplicas",
        lambda: (
            (p := cluster.get("inferencepools.gpucost.dev", "web", namespace))
            and p["status"]["replicas"] == 1
            and condition(p, "BudgetCapped").get("status") == "True"
            and p
        ),
    )
    assert (
        condition(capped, "Ready")["status"] == "True"
    )  # 1 of the 1 it may run: serving, not broken
    cluster.apply(job("shrink", namespace))
    suspended = cluster.wait(
        "the new job suspended",
        lambda: (
            (j := cluster.get("compressionjob", "shrink", namespace))
            and (j.get("status") or {}).get("phase") == "Suspended"
            and j
        ),
    )
    assert condition(suspended, "Suspended")["reason"] == "BudgetExceeded"

    # Ticks later: still capped, and each threshold was sent and announced exactly once.
    held = accounted_past(cluster, "costbudget", "team", namespace, 3)
    assert cluster.get("inferencepools.gpucost.dev", "web", namespace)["status"]["replicas"] == 1
    assert [(b["threshold"], b["window"], b["namespaces"]) for b in webhook_receiver.bodies] == [
        (80, "daily", [namespace]),
        (100, "daily", [namespace]),
    ]
    assert (
        webhook_receiver.bodies[1]["spent"] >= 0.02 and webhook_receiver.bodies[1]["limit"] == 0.02
    )
    assert held["status"]["daily"]["notified"] == [80, 100]
    assert condition(held, "WebhookDelivered")["status"] == "True"
    assert len(budget_events(cluster, namespace, "BudgetThreshold")) == 1
    assert len(budget_events(cluster, namespace, "BudgetExceeded")) == 1

    # Midnight: a budget whose stored period is yesterday's, as an operator finds it after the day
    # turned. The new day starts from nothing, enforcement lifts, and the job may start.
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")

    def reset() -> dict | None:
        b = cluster.get("costbudget", "team", namespace)
        if condition(b, "Exceeded").get("status") == "False":
            return b
        cluster.kubectl(
            "patch",
            "costbudget",
            "team",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            f'{{"status": {{"daily": {{"periodStart": "{yesterday}"}}}}}}',
        )
        return None

    after = cluster.wait("the day turned over", reset)
    assert after["status"]["daily"]["lastPeriodSpent"] >= 0.02
    assert after["status"]["daily"]["reached"] == [] and after["status"]["daily"]["spent"] < 0.016
    cluster.wait(
        "web back to 3 replicas",
        lambda: (
            cluster.get("inferencepools.gpucost.dev", "web", namespace)["status"]["replicas"] == 3
        ),
    )
    freed = cluster.get("inferencepools.gpucost.dev", "web", namespace)
    assert condition(freed, "BudgetCapped")["status"] == "False"
    released = cluster.wait(
        "the job released",
        lambda: (
            (j := cluster.get("compressionjob", "shrink", namespace))
            and j["status"]["phase"] != "Suspended"
            and j
        ),
    )
    # Admitted again, it starts (KWOK may already have completed it): placed as attempt 1.
    assert condition(released, "Suspended")["reason"] == "WithinBudget" and released["status"][
        "phase"
    ] in ("Pending", "Running", "Succeeded")


def test_a_cluster_budget_covers_selected_namespaces_and_retries_its_webhook(
    cluster, namespace, gpu_pool, webhook_receiver
):
    gpu_pool(1, gpus=1, memory_mib=81920, pricePerHour=36.0)
    cluster.kubectl("label", "namespace", namespace, f"budget-test={namespace}")
    cluster.apply(pool("web", namespace, 1, gpu={"memoryMiB": 8192}))  # $3.60/h = $0.001/s
    webhook_receiver.fail_first = 3
    name = f"cb-{namespace}"
    cluster.apply(
        budget(
            name,
            None,
            daily=0.004,
            thresholds=[50],
            timeZone="Asia/Kolkata",
            namespaceSelector={
                "matchExpressions": [
                    {"key": "budget-test", "operator": "In", "values": [namespace]}
                ]
            },
            webhook={"url": webhook_receiver.url, "format": "alertmanager"},
        )
    )
    try:
        failing = cluster.wait(
            "the refused webhook shown",
            lambda: (
                (b := cluster.get("clustercostbudget", name))
                and condition(b, "WebhookDelivered").get("status") == "False"
                and b
            ),
            timeout=60,
        )
        assert "HTTP 503" in condition(failing, "WebhookDelivered")["message"]
        delivered = cluster.wait(
            "delivered on a later tick",
            lambda: (
                (b := cluster.get("clustercostbudget", name))
                and condition(b, "WebhookDelivered").get("status") == "True"
                and b
            ),
            timeout=60,
        )
        assert delivered["status"]["namespaces"] == [namespace] and delivered["status"]["daily"][
            "notified"
        ] == [50]
        assert webhook_receiver.refused == 3
        ((alert,),) = webhook_receiver.bodies  # one POST, a list of one alert, after three refusals
        assert alert["labels"] == {
            "alertname": "GPUCostBudgetThreshold",
            "severity": "warning",
            "budget_kind": "ClusterCostBudget",
            "budget": name,
            "window": "daily",
            "threshold": "50",
        }
        # The alert resolves when the day ends in Kolkata (UTC+5:30), midnight there.
        ends = datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")).astimezone(
            timezone(timedelta(hours=5, minutes=30))
        )
        assert (ends.hour, ends.minute) == (0, 0)
        over = cluster.wait(
            "over the limit",
            lambda: (
                (b := cluster.get("clustercostbudget", name))
                and condition(b, "Exceeded").get("status") == "True"
                and b
            ),
            timeout=60,
        )
        assert "alerting only" in condition(over, "Exceeded")["message"]
        accounted_past(cluster, "clustercostbudget", name, None, 2)
        pool_now = cluster.get(
            "inferencepools.gpucost.dev", "web", namespace
        )  # no enforce: the pool keeps running
        assert pool_now["status"]["replicas"] == 1 and not condition(pool_now, "BudgetCapped")
        assert len(webhook_receiver.bodies) == 1  # 100 % is no threshold of this budget
    finally:
        cluster.kubectl("delete", "clustercostbudget", name, "--wait=false")


def test_what_the_schema_cannot_check_is_a_condition_and_what_it_can_is_refused(cluster, namespace):
    refused = cluster.apply(budget("none", namespace, thresholds=[50]), check=False)
    assert refused.returncode != 0 and "set daily, monthly or both" in refused.stderr
    cluster.apply(budget("mars", namespace, daily=10, timeZone="Mars/Olympus_Mons"))
    bad = cluster.wait(
        "the zone reported",
        lambda: (
            condition(cluster.get("costbudget", "mars", namespace), "Ready").get("reason")
            == "InvalidSpec"
            and cluster.get("costbudget", "mars", namespace)
        ),
    )
    assert "not an IANA time zone" in condition(bad, "Ready")["message"]
    cluster.apply(budget("mars", namespace, daily=10, timeZone="Europe/Berlin"))
    fixed = cluster.wait(
        "the fixed budget accounting",
        lambda: (
            condition(cluster.get("costbudget", "mars", namespace), "Ready").get("status") == "True"
            and cluster.get("costbudget", "mars", namespace)
        ),
    )
    assert fixed["status"]["daily"]["limit"] == 10 and fixed["status"]["costPerHour"] == 0
