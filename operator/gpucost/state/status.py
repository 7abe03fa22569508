"""Status writes that happen only when something changed (no write, no watch event, no loop)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from gpucost import names
from gpucost.adapters import metrics
from gpucost.adapters.kube import Kube
from gpucost.api.common import Condition, ConditionStatus, Costed, condition, epoch, set_condition
from gpucost.core.cost import Account, Holding, advance, cost_rates
from gpucost.core.snapshot import PlacedPod
from gpucost.state.cluster import Cluster


def fresh(kube: Kube, plural: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The object as the API has it now, or None when it is gone, replaced (another uid) or being
    deleted: kopf hands each handler its own, possibly older, copy of the body."""
    meta = body["metadata"]
    now = kube.get_object(plural, meta["name"], meta.get("namespace"))
    if (
        now is None
        or now["metadata"]["uid"] != meta["uid"]
        or now["metadata"].get("deletionTimestamp")
    ):
        return None
    return now


def write_if_changed(kube: Kube, plural: str, body: dict[str, Any], status: dict[str, Any]) -> bool:
    """A status that carries running cost totals lands only on the object it was computed from
    (resourceVersion as a precondition): one computed from an older copy would move the totals
    back. False when nothing changed or the object moved on (the next reconcile writes)."""
    current = body.get("status") or {}
    if all(current.get(k) == v for k, v in status.items()):
        return False
    meta = body["metadata"]
    version = meta.get("resourceVersion") if "costAccumulated" in status else None
    return kube.patch_status(
        plural, meta["name"], status, namespace=meta.get("namespace"), resource_version=version
    )


def write_status(
    kube: Kube,
    plural: str,
    body: dict[str, Any],
    compute: Callable[[dict[str, Any]], dict[str, Any]],
    attempts: int = 3,
) -> dict[str, Any]:
    """``compute`` the status from the object and write it if it changed; when the object moved on
    meanwhile (kopf's own annotations, another handler), read it again and compute again, so the
    write lands without moving running totals back. The status computed last."""
    status = compute(body)
    for _ in range(attempts - 1):
        current = body.get("status") or {}
        if all(current.get(k) == v for k, v in status.items()):
            return status
        if write_if_changed(kube, plural, body, status):
            return status
        again = fresh(kube, plural, body)
        if again is None:
            return status
        body, status = again, compute(again)
    write_if_changed(kube, plural, body, status)
    return status


def invalid_spec(body: dict[str, Any], error: ValidationError) -> dict[str, Any]:
    """Status for a spec the schema let through but the model rejects (e.g. an older CRD)."""
    first = error.errors()[0]
    old = [Condition.model_validate(c) for c in (body.get("status") or {}).get("conditions") or []]
    generation = body["metadata"].get("generation")
    conditions = set_condition(
        old,
        type="Ready",
        status=ConditionStatus.FALSE,
        reason="InvalidSpec",
        message=f"spec.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}",
        generation=generation,
    )
    return {"conditions": [c.wire() for c in conditions], "observedGeneration": generation}


Spec = TypeVar("Spec", bound=BaseModel)


def spec_or_report(kube: Kube, plural: str, body: dict[str, Any], model: type[Spec]) -> Spec | None:
    """The spec as ``model``; None when it is invalid, after saying why on the object
    (Ready=False, InvalidSpec, and one Warning event when that status is new)."""
    try:
        return model.model_validate(body.get("spec") or {})
    except ValidationError as e:
        status = invalid_spec(body, e)
        if write_if_changed(kube, plural, body, status):
            kopf.warn(body, reason="InvalidSpec", message=condition(status, "Ready")["message"])
        return None


def workload_cost(cluster: Cluster, workload: str, pods: list[PlacedPod]) -> float:
    """$/hour of the GPU memory the workload's live pods hold."""
    holdings = [
        Holding(workload, p.node, i, p.mib_per_gpu)
        for p in pods
        if not p.terminal
        for i in p.gpu_indices
    ]
    return cost_rates(cluster.nodes, holdings).workloads.get(workload, 0.0)


def account_workload(
    kind: str,
    body: dict[str, Any],
    cluster: Cluster,
    pods: list[PlacedPod],
    old: Costed,
    every: float,
) -> Account:
    """A workload's running cost brought up to now from its status, and exported on /metrics."""
    meta = body["metadata"]
    rate = workload_cost(cluster, names.workload(kind, meta["namespace"], meta["name"]), pods)
    cost = advance(account_of(old), rate, time.time(), every)
    export_cost(kind, meta, cost)
    return cost


def export_cost(kind: str, meta: dict[str, Any], cost: Account) -> None:
    metrics.workload_cost_per_hour.labels(kind, meta["namespace"], meta["name"]).set(cost.rate)
    metrics.workload_cost.labels(kind, meta["namespace"], meta["name"]).set(cost.total)


def account_of(status: Costed) -> Account:
    """The running cost a status carries (what a restarted operator continues from)."""
    return Account(status.cost_per_hour, status.cost_accumulated, epoch(status.cost_accounted_at))
