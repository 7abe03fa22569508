"""GPUNodePool status: what the pool's nodes are, hold and cost right now."""

from __future__ import annotations

import time
from typing import Any

import kopf

from gpucost import names
from gpucost.adapters import metrics
from gpucost.adapters.kube import Kube
from gpucost.adapters.prices import PriceSources
from gpucost.api import GROUP, VERSION
from gpucost.api.common import Condition, ConditionStatus, epoch, rfc3339, set_condition
from gpucost.api.nodepool import GPUNodePoolSpec, GPUNodePoolStatus
from gpucost.core import nodeview
from gpucost.core.commitment import Bill, bought_at_list_price, pool_bill
from gpucost.core.cost import Holding, accrue, advance, cost_rates
from gpucost.core.inventory import Allocation, GPUNode
from gpucost.core.prices import Priced, resolve
from gpucost.core.scaledown import NodeState
from gpucost.core.snapshot import allocations
from gpucost.settings import Prices as PriceSettings
from gpucost.settings import Settings
from gpucost.state.cluster import read_cluster
from gpucost.state.status import account_of, fresh, spec_or_report, write_status

PLURAL = "gpunodepools"


def priced_condition(
    conditions: list[Condition],
    priced: Priced | None,
    why_none: str,
    generation: int | None,
) -> list[Condition]:
    if priced is None:
        status, reason, message = ConditionStatus.FALSE, "NoPrice", why_none
    elif priced.source == "spec":
        status, reason, message = ConditionStatus.TRUE, "Override", "spec.pricePerHour"
    else:
        status, reason = ConditionStatus.TRUE, "Stale" if priced.stale else "PriceList"
        message = f"${priced.usd_per_hour:g}/h from {priced.source}"
        if priced.as_of is not None:
            message += f" as of {rfc3339(priced.as_of)}"
        if priced.stale:
            message += ": older than the operator's maximum price age, check the source"
    return set_condition(
        conditions,
        type="Priced",
        status=status,
        reason=reason,
        message=message,
        generation=generation,
    )


def unused_condition(
    conditions: list[Condition], paid: Bill, at_list_price: tuple[str, ...], generation: int | None
) -> list[Condition]:
    """CommitmentUnused: capacity paid for in advance sits unused while other pools buy on-demand
    nodes at list price (a reserved pool whose GPUs or labels the work does not match, say)."""
    if paid.unused_per_hour > 1e-9 and at_list_price:
        status, reason = ConditionStatus.TRUE, "UnusedWhileBuyingOnDemand"
        message = (
            f"${paid.unused_per_hour:,.2f}/h paid for and unused "
            f"({(paid.utilization or 0) * 100:.0f}% used) while on-demand pools pay list price: "
            f"{', '.join(at_list_price)}"
        )
    else:
        status, reason = ConditionStatus.FALSE, "NoWaste"
        message = f"{(paid.utilization or 0) * 100:.0f}% used"
    return set_condition(
        conditions,
        type="CommitmentUnused",
        status=status,
        reason=reason,
        message=message,
        generation=generation,
    )


def pool_status(
    *,
    name: str,
    spec: GPUNodePoolSpec,
    priced: Priced | None,
    why_unpriced: str,
    node_count: int,
    nodes: list[GPUNode],
    held: list[Allocation],
    states: list[NodeState],
    body: dict[str, Any],
    idle_per_hour: float = 0.0,
    now: float = 0.0,
    cost_every: float = 60.0,
    at_list_price: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``node_count`` counts every node labelled for the pool; ``nodes`` only the GPU nodes read;
    ``states`` are the pool's nodes as the autoscaler sees them; ``idle_per_hour`` what its
    unheld GPU memory costs. Both running totals move on together, from the status they find."""
    mine = [n for n in nodes if n.pool == name]
    names_ = {n.name for n in mine}
    total = sum(g.memory_mib for n in mine for g in n.gpus)
    allocated = sum(a.memory_mib for a in held if a.node in names_)
    ready = sum(n.schedulable for n in mine)
    generation = body["metadata"].get("generation")
    old = GPUNodePoolStatus.model_validate(body.get("status") or {})
    in_flight = sum(s.booting for s in states)
    idle = sorted(s.name for s in states if s.idle_since is not None)
    draining = sorted(s.name for s in states if s.disruption is not None)
    message = f"{ready}/{node_count} nodes ready, {allocated}/{total} MiB GPU memory allocated"
    if in_flight or draining:
        message += f", {in_flight} booting, {len(draining)} being removed"
    conditions = set_condition(
        priced_condition(old.conditions, priced, why_unpriced, generation),
        type="Ready",
        status=ConditionStatus.TRUE if priced else ConditionStatus.FALSE,
        reason="Reconciled" if priced else "NoPrice",
        message=message if priced else f"not used until it has a price: {why_unpriced}",
        generation=generation,
    )
    price = priced.usd_per_hour if priced else 0.0
    paid = pool_bill(spec, node_count, price, now)
    cost = advance(account_of(old), paid.cost_per_hour, now, cost_every)
    if paid.utilization is not None:
        conditions = unused_condition(conditions, paid, at_list_price, generation)
    idle_total = old.idle_cost_accumulated
    if cost.at != epoch(old.cost_accounted_at):
        idle_total = accrue(idle_total, epoch(old.cost_accounted_at), old.idle_cost_per_hour, now)
        idle_rate = idle_per_hour + paid.unused_per_hour  # paid for, and nothing runs on it
    else:
        idle_rate = old.idle_cost_per_hour
    return GPUNodePoolStatus(
        nodes=node_count,
        ready_nodes=ready,
        in_flight_nodes=in_flight,
        idle_nodes=idle,
        draining_nodes=draining,
        gpu_memory_allocated_mib=allocated,
        gpu_memory_total_mib=total,
        cost_per_hour=round(cost.rate, 6),
        cost_accumulated=round(cost.total, 6),
        cost_accounted_at=rfc3339(cost.at) if cost.at is not None else None,
        idle_cost_per_hour=round(idle_rate, 6),
        idle_cost_accumulated=round(idle_total, 6),
        price_per_hour=priced.usd_per_hour if priced else None,
        expected_price_per_hour=round(priced.expected_usd_per_hour, 6) if priced else None,
        price_source=priced.source if priced else None,
        price_as_of=rfc3339(priced.as_of) if priced and priced.as_of is not None else None,
        interruptions_per_month=priced.interruptions_per_month if priced else None,
        effective_price_per_hour=round(paid.effective_price, 6)
        if paid.effective_price is not None
        else None,
        commitment_utilization=round(paid.utilization, 4) if paid.utilization is not None else None,
        observed_generation=generation,
        conditions=conditions,
    ).wire()


def price_of(
    spec: GPUNodePoolSpec, prices: PriceSources | None, settings: PriceSettings, now: float
) -> tuple[Priced | None, str]:
    """The pool's price and, when it has none, why (naming what was looked for and where)."""
    region = spec.region or settings.region
    book = prices.book(now) if prices is not None else {}
    priced = resolve(
        override=spec.price_per_hour,
        region=region,
        instance_type=spec.instance_type,
        capacity_type=spec.capacity_type,
        book=book,
        now=now,
        max_age_seconds=settings.max_age_seconds,
        interruptions_per_month=spec.interruptions_per_month,
        lost_seconds=spec.interruption_loss_seconds,
    )
    where = ", ".join(settings.sources) or "none configured (GPUCOST_PRICE_SOURCES)"
    why = (
        f"no pricePerHour and no {spec.capacity_type} price for {spec.instance_type} in "
        f"{region} in the price sources ({where})"
    )
    errors = prices.errors() if prices is not None else {}
    if errors:
        why += "; " + "; ".join(errors.values())
    return priced, why


def reconcile(
    kube: Kube,
    body: dict[str, Any],
    cost_every: float = 60.0,
    prices: PriceSources | None = None,
    price_settings: PriceSettings | None = None,
) -> None:
    name = body["metadata"]["name"]
    spec = spec_or_report(kube, PLURAL, body, GPUNodePoolSpec)
    if spec is None:
        return
    priced, why_unpriced = price_of(spec, prices, price_settings or PriceSettings(), time.time())
    cluster = read_cluster(kube)
    held = allocations(cluster.pods)
    rates = cost_rates(
        cluster.nodes, [Holding("", a.node, a.gpu_index, a.memory_mib) for a in held]
    )
    unread = cluster.pool_node_counts.get(name, 0) - sum(n.pool == name for n in cluster.nodes)
    at_list_price = bought_at_list_price(
        name, spec, {n: p.spec for n, p in cluster.pools.items()}, cluster.pool_node_counts
    )
    states = [
        nodeview.node_state(n, [])
        for n in cluster.raw_nodes
        if (n["metadata"].get("labels") or {}).get(names.LABEL_NODEPOOL) == name
    ]

    def compute(obj: dict[str, Any]) -> dict[str, Any]:
        return pool_status(
            name=name,
            spec=spec,
            priced=priced,
            why_unpriced=why_unpriced,
            node_count=cluster.pool_node_counts.get(name, 0),
            nodes=cluster.nodes,
            held=held,
            idle_per_hour=rates.pool_idle.get(name, 0.0)
            + unread * (priced.usd_per_hour if priced else 0.0),  # no GPU inventory: holds nothing
            now=time.time(),
            cost_every=cost_every,
            states=states,
            body=obj,
            at_list_price=at_list_price,
        )

    status = write_status(kube, PLURAL, body, compute)
    for gauge, key in (
        (metrics.pool_cost_per_hour, "costPerHour"),
        (metrics.pool_idle_cost_per_hour, "idleCostPerHour"),
        (metrics.pool_cost, "costAccumulated"),
        (metrics.pool_idle_cost, "idleCostAccumulated"),
        (metrics.gpu_memory_allocated, "gpuMemoryAllocatedMiB"),
        (metrics.gpu_memory_total, "gpuMemoryTotalMiB"),
        (metrics.pool_nodes, "nodes"),
    ):
        gauge.labels(name, spec.capacity_type).set(status.get(key, 0))


def register(registry: kopf.OperatorRegistry, kube: Kube, settings: Settings) -> None:
    resource = (GROUP, VERSION, PLURAL)
    prices = PriceSources(settings.prices, kube) if settings.prices.sources else None

    def handler(body: kopf.Body, **_: Any) -> None:
        with metrics.reconciling("GPUNodePool"):
            current = fresh(kube, PLURAL, dict(body))
            if current is not None:
                reconcile(
                    kube, current, settings.reconcile.cost_write_seconds, prices, settings.prices
                )

    @kopf.on.delete(*resource, registry=registry, id="forget-metrics", optional=True)
    def on_delete(meta: kopf.Meta, spec: kopf.Spec, **_: Any) -> None:
        metrics.forget_pool(meta["name"], str(spec.get("capacityType", "")))

    for decorator in (kopf.on.create, kopf.on.resume):
        decorator(*resource, registry=registry, id="status")(handler)
    kopf.on.update(*resource, field="spec", registry=registry, id="status")(handler)
    kopf.timer(
        *resource, interval=settings.reconcile.resync_seconds, registry=registry, id="resync"
    )(handler)
