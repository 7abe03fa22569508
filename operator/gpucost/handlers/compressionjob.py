"""CompressionJob cost and admission against budgets.

Cost: the GPU memory the job's pods hold, accounted like an InferencePool's. Admission: a job that
has not started waits, Suspended, while a CostBudget enforcing on its namespace is over its limit,
and goes back to Pending when the period resets or the limit is raised. Running jobs are left alone
(suspending one would waste its work; its own maxCost stops it)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from gpucost.adapters import metrics
from gpucost.adapters.kube import Kube
from gpucost.api import GROUP, VERSION
from gpucost.api.common import Condition, ConditionStatus, rfc3339, set_condition
from gpucost.api.compressionjob import CompressionJobSpec, CompressionJobStatus
from gpucost.handlers.budget import enforcing
from gpucost.handlers.cluster import read_cluster
from gpucost.handlers.status import account_workload, spec_or_report, write_if_changed
from gpucost.settings import Settings

PLURAL = "compressionjobs"
NOT_STARTED = {"Pending", "Suspended"}
log = logging.getLogger(__name__)


def reconcile(kube: Kube, body: dict[str, Any], cost_every: float) -> None:
    meta = body["metadata"]
    with metrics.reconciling("CompressionJob"):
        if spec_or_report(kube, PLURAL, body, CompressionJobSpec) is None:
            return
        old = CompressionJobStatus.model_validate(body.get("status") or {})
        cluster = read_cluster(kube)
        # The job's pods (the controller, #6, creates them placed like replicas) are charged as any workload's.
        mine = [p for p in cluster.pods if p.owner_uid == meta["uid"]]
        cost = account_workload("CompressionJob", body, cluster, mine, old, cost_every)
        phase, conditions = old.phase, old.conditions
        if old.phase in NOT_STARTED:
            phase, conditions = _admit(kube, body, old)
        status = CompressionJobStatus(
            phase=phase, observed_generation=meta.get("generation"), conditions=conditions,
            cost_per_hour=round(cost.rate, 6), cost_accumulated=round(cost.total, 6),
            cost_accounted_at=rfc3339(cost.at) if cost.at is not None else None,
        ).wire()
        write_if_changed(kube, PLURAL, body, status)


def _admit(kube: Kube, body: dict[str, Any], old: CompressionJobStatus) -> tuple[str, list[Condition]]:
    """Pending, or Suspended while an enforcing budget is over its limit; an Event when that changes."""
    meta = body["metadata"]
    budget = enforcing(kube, meta["namespace"], "suspendCompressionJobs")
    if budget:
        phase, reason = "Suspended", "BudgetExceeded"
        message = f"{budget} is over its limit: the job starts when its period resets or the limit is raised"
    else:
        phase, reason, message = "Pending", "WithinBudget", "no enforcing CostBudget is over its limit"
    conditions = set_condition(old.conditions, type="Suspended",
                               status=ConditionStatus.TRUE if budget else ConditionStatus.FALSE,
                               reason=reason, message=message, generation=meta.get("generation"))
    if phase != old.phase or not any(c.type == "Suspended" for c in old.conditions):
        if budget or old.phase == "Suspended":
            kopf.event(body, type="Warning" if budget else "Normal", reason=reason, message=message)
        log.info("[%s/%s] %s: %s", meta["namespace"], meta["name"], phase, message)
    return phase, conditions


def register(registry: kopf.OperatorRegistry, kube: Kube, settings: Settings) -> None:
    resource = (GROUP, VERSION, PLURAL)

    def on_job(body: kopf.Body, **_: Any) -> None:
        reconcile(kube, dict(body), settings.reconcile.cost_write_seconds)

    for decorator in (kopf.on.create, kopf.on.resume):
        decorator(*resource, registry=registry, id="admit")(on_job)
    kopf.timer(*resource, interval=settings.reconcile.resync_seconds, idle=None, registry=registry, id="resync")(on_job)

    @kopf.on.delete(*resource, registry=registry, id="forget-metrics", optional=True)
    def on_delete(meta: kopf.Meta, **_: Any) -> None:
        metrics.forget_workload("CompressionJob", meta["namespace"], meta["name"])
