"""The operator's /metrics (prometheus-client): cost, allocation, placements, decisions, reconciles.

Names and labels are documented in README ("Metrics"). Cost per workload is labelled by kind,
namespace and name; sum by (namespace) gives a team's bill. Series of deleted objects are removed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

WORKLOAD = ["kind", "namespace", "name"]
POOL = ["pool", "capacity_type"]

workload_cost_per_hour = Gauge(
    "gpucost_workload_cost_per_hour", "USD per hour of the GPU memory a workload holds", WORKLOAD
)
workload_cost = Gauge(
    "gpucost_workload_cost_dollars", "USD accumulated by a workload (as in its status)", WORKLOAD
)
pool_cost_per_hour = Gauge(
    "gpucost_pool_cost_per_hour", "USD per hour of a GPUNodePool's nodes", POOL
)
pool_idle_cost_per_hour = Gauge(
    "gpucost_pool_idle_cost_per_hour", "USD per hour of GPU memory nobody holds", POOL
)
pool_cost = Gauge("gpucost_pool_cost_dollars", "USD accumulated by a pool's nodes", POOL)
pool_idle_cost = Gauge("gpucost_pool_idle_cost_dollars", "USD accumulated by idle GPU memory", POOL)
gpu_memory_allocated = Gauge(
    "gpucost_pool_gpu_memory_allocated_mib", "GPU memory held by placed pods", POOL
)
gpu_memory_total = Gauge(
    "gpucost_pool_gpu_memory_total_mib", "GPU memory of the pool's nodes", POOL
)
pool_nodes = Gauge("gpucost_pool_nodes", "Nodes of the pool", POOL)
BUDGET = ["kind", "namespace", "name", "window"]
budget_spent = Gauge(
    "gpucost_budget_spent_dollars", "USD spent in a CostBudget's current period", BUDGET
)
budget_limit = Gauge("gpucost_budget_limit_dollars", "A CostBudget's limit for its period", BUDGET)
placements = Counter("gpucost_placements_total", "Replica placement attempts", ["result"])
decisions = Counter(
    "gpucost_autoscaler_decisions_total",
    "Autoscaler decisions (the Event reasons)",
    ["pool", "reason"],
)
reconcile_seconds = Histogram("gpucost_reconcile_duration_seconds", "Reconcile wall time", ["kind"])
usd_per_million_tokens = Gauge(
    "gpucost_usd_per_million_tokens",
    "USD per million generated tokens over the token window",
    ["namespace", "pool", "model"],
)
generated_tokens = Gauge(
    "gpucost_generated_tokens_window",
    "Tokens generated over the token window",
    ["namespace", "pool", "model"],
)
reconcile_errors = Counter("gpucost_reconcile_errors_total", "Reconciles that raised", ["kind"])


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except Exception:
        reconcile_errors.labels(kind).inc()
        raise
    finally:
        reconcile_seconds.labels(kind).observe(time.perf_counter() - started)


def remove_series(gauges: tuple[Gauge, ...], *labels: str) -> None:
    """Drop the series of an object that is gone (a gauge that never had them is fine)."""
    for gauge in gauges:
        try:
            gauge.remove(*labels)
        except KeyError:
            pass


def forget_workload(kind: str, namespace: str, name: str) -> None:
    remove_series((workload_cost_per_hour, workload_cost), kind, namespace, name)


def forget_pool(pool: str, capacity_type: str) -> None:
    remove_series(
        (
            pool_cost_per_hour,
            pool_idle_cost_per_hour,
            pool_cost,
            pool_idle_cost,
            gpu_memory_allocated,
            gpu_memory_total,
            pool_nodes,
        ),
        pool,
        capacity_type,
    )


def forget_budget(kind: str, namespace: str, name: str, window: str) -> None:
    remove_series((budget_spent, budget_limit), kind, namespace, name, window)


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address)
