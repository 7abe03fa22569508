"""CompressionJob admission against budgets: a job that has not started waits, Suspended, while a
CostBudget enforcing on its namespace is over its limit, and goes back to Pending when the period
resets or the limit is raised. Running jobs are left alone (suspending one would waste its work)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from gpucost.adapters import metrics
from gpucost.adapters.kube import Kube
from gpucost.api import GROUP, VERSION
from gpucost.api.common import ConditionStatus, set_condition
from gpucost.api.compressionjob import CompressionJobSpec, CompressionJobStatus
from gpucost.handlers.budget import enforcing
from gpucost.handlers.status import spec_or_report, write_if_changed
from gpucost.settings import Settings

PLURAL = "compressionjobs"
NOT_STARTED = {"Pending", "Suspended"}
log = logging.getLogger(__name__)


def reconcile(kube: Kube, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    with metrics.reconciling("CompressionJob"):
        if spec_or_report(kube, PLURAL, body, CompressionJobSpec) is None:
            return
        old = CompressionJobStatus.model_validate(body.get("status") or {})
        if old.phase not in NOT_STARTED:
            return
        generation = meta.get("generation")
        budget = enforcing(kube, meta["namespace"], "suspendCompressionJobs")
        if budget:
            phase, reason = "Suspended", "BudgetExceeded"
            message = f"{budget} is over its limit: the job starts when its period resets or the limit is raised"
        else:
            phase, reason, message = "Pending", "WithinBudget", "no enforcing CostBudget is over its limit"
        conditions = set_condition(old.conditions, type="Suspended",
                                   status=ConditionStatus.TRUE if budget else ConditionStatus.FALSE,
                                   reason=reason, message=message, generation=generation)
        status = CompressionJobStatus(phase=phase, observed_generation=generation, conditions=conditions).wire()
        if write_if_changed(kube, PLURAL, body, status) and phase != old.phase:
            kopf.event(body, type="Warning" if budget else "Normal", reason=reason, message=message)
            log.info("[%s/%s] %s: %s", meta["namespace"], meta["name"], phase, message)


def register(registry: kopf.OperatorRegistry, kube: Kube, settings: Settings) -> None:
    resource = (GROUP, VERSION, PLURAL)

    def on_job(body: kopf.Body, **_: Any) -> None:
        reconcile(kube, dict(body))

    for decorator in (kopf.on.create, kopf.on.resume):
        decorator(*resource, registry=registry, id="admit")(on_job)
    kopf.timer(*resource, interval=settings.reconcile.resync_seconds, idle=None, registry=registry, id="resync")(on_job)
