"""CompressionJob: admission against budgets, one batch/v1 Job per attempt placed by the packing
core (spot first when interruptible), re-placement after an interruption, deadline and maxCost,
and cost like any workload's.

A job that has not started waits, Suspended, while a CostBudget enforcing on its namespace is over
its limit. Running jobs are left alone by budgets (stopping one would waste its work; its own
maxCost stops it). Deleting the CompressionJob deletes its Jobs and pods (owner references); the
output is the worker's and is never touched here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from pydantic import ValidationError

from gpucost import manifests, names
from gpucost.adapters import metrics
from gpucost.adapters.kube import Kube
from gpucost.api import GROUP, VERSION
from gpucost.api.common import ConditionStatus, condition, rfc3339, set_condition
from gpucost.api.compressionjob import CompressionJobSpec, CompressionJobStatus, Results
from gpucost.core import nodeview, refusal, snapshot
from gpucost.core.inventory import FreeMap
from gpucost.core.jobrun import (
    TERMINAL,
    UNPLACED,
    Attempt,
    Decision,
    Step,
    decide,
    termination,
)
from gpucost.core.placement import NoFit, Placement, place
from gpucost.core.snapshot import allocations
from gpucost.settings import Settings
from gpucost.state.budgets import enforcing
from gpucost.state.cluster import PLACEMENT_LOCK, Cluster, make_ask, read_cluster
from gpucost.state.status import (
    account_of,
    account_workload,
    export_cost,
    fresh,
    spec_or_report,
    write_if_changed,
)

PLURAL = "compressionjobs"
log = logging.getLogger(__name__)


def reconcile(kube: Kube, body: dict[str, Any], policy: str, cost_every: float) -> None:
    with PLACEMENT_LOCK, metrics.reconciling("CompressionJob"):
        current = fresh(kube, PLURAL, body)
        if current is None:
            return
        spec = spec_or_report(kube, PLURAL, current, CompressionJobSpec)
        if spec is not None:
            _reconcile(kube, current, spec, policy, cost_every)


def _reconcile(
    kube: Kube, body: dict[str, Any], spec: CompressionJobSpec, policy: str, cost_every: float
) -> None:
    meta = body["metadata"]
    old = CompressionJobStatus.model_validate(body.get("status") or {})
    if old.phase in TERMINAL and not old.cost_per_hour:
        # Finished and nothing held any more: finished jobs pile up, and each resync of each one
        # would otherwise read the whole cluster to find no pods.
        export_cost("CompressionJob", meta, account_of(old))
        write_if_changed(kube, PLURAL, body, {"observedGeneration": meta.get("generation")})
        return
    cluster = read_cluster(kube)
    mine = [p for p in cluster.pods if p.owner_uid == meta["uid"]]
    cost = account_workload("CompressionJob", body, cluster, mine, old, cost_every)
    status = old.model_copy(
        update={
            "observed_generation": meta.get("generation"),
            "cost_per_hour": round(cost.rate, 6),
            "cost_accumulated": round(cost.total, 6),
            "cost_accounted_at": rfc3339(cost.at) if cost.at is not None else None,
        }
    )
    if old.attempts == 0 and old.phase in {"Pending", "Suspended"}:
        status = _admit(kube, body, status)
    if status.phase != "Suspended":
        status = _run(kube, body, spec, status, cluster, policy, cost.total)
    write_if_changed(kube, PLURAL, body, status.wire())


def _admit(kube: Kube, body: dict[str, Any], status: CompressionJobStatus) -> CompressionJobStatus:
    """Pending, or Suspended while an enforcing budget is over its limit; an Event when that
    changes."""
    meta = body["metadata"]
    budget = enforcing(kube, meta["namespace"], "suspendCompressionJobs")
    if budget:
        phase, reason = "Suspended", "BudgetExceeded"
        message = (
            f"{budget} is over its limit: the job starts when its period resets or the limit is "
            "raised"
        )
    else:
        phase, reason, message = (
            "Pending",
            "WithinBudget",
            "no enforcing CostBudget is over its limit",
        )
    if phase != status.phase and (budget or status.phase == "Suspended"):
        kopf.event(body, type="Warning" if budget else "Normal", reason=reason, message=message)
        log.info("[%s/%s] %s: %s", meta["namespace"], meta["name"], phase, message)
    conditions = set_condition(
        status.conditions,
        type="Suspended",
        status=ConditionStatus.TRUE if budget else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        generation=meta.get("generation"),
    )
    return status.model_copy(update={"phase": phase, "conditions": conditions})


def _attempt(
    kube: Kube, body: dict[str, Any], status: CompressionJobStatus, cluster: Cluster
) -> Attempt | None:
    if not status.job_name:
        return None
    namespace = body["metadata"]["namespace"]
    job = kube.get_job(namespace, status.job_name)
    if job is None:
        return Attempt(exists=False)
    pods = [
        p
        for p in kube.placed_pods(owner_uid=body["metadata"]["uid"])
        if (p["metadata"].get("labels") or {}).get("job-name") == status.job_name
    ]
    node = status.node
    raw = {n["metadata"]["name"]: n for n in cluster.raw_nodes}
    # A node the cloud reclaims ends the attempt even while it runs: it resumes from its checkpoint
    # elsewhere instead of waiting for the drain. Otherwise only a pod its node will never run.
    reclaimed = node not in raw or nodeview.interrupted(raw[node])
    why = (cluster.refusals.get(node, f"node {node} no longer exists") or "") if reclaimed else ""
    pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), default=None)
    if pod is None:
        # A Job that failed with its pod gone lost it to an eviction (a drain, consolidation).
        job_failed = condition(job.get("status"), "Failed").get("status") == "True"
        return Attempt(exists=True, node_lost=reclaimed or job_failed, lost_why=why)
    placed = snapshot.placed_pod(pod)
    if not why and placed is not None:
        why = refusal.stranded([placed], cluster.refusals, time.time(), cluster.catching_up).get(
            placed.name, ""
        )
    disrupted = condition(pod.get("status"), "DisruptionTarget").get("status") == "True"
    terminated = (
        next(
            (
                c.get("state", {}).get("terminated")
                for c in (pod.get("status") or {}).get("containerStatuses") or []
                if c.get("state", {}).get("terminated")
            ),
            None,
        )
        or {}
    )
    said, results = termination(terminated.get("message") or "")
    return Attempt(
        exists=True,
        pod_phase=(pod.get("status") or {}).get("phase"),
        node_lost=reclaimed or bool(why) or disrupted,
        message=said,
        lost_why=why,
        results=results,
    )


def _run(
    kube: Kube,
    body: dict[str, Any],
    spec: CompressionJobSpec,
    status: CompressionJobStatus,
    cluster: Cluster,
    policy: str,
    spent: float,
) -> CompressionJobStatus:
    meta = body["metadata"]
    if status.phase in TERMINAL:
        return status  # finished: its reason and message stay as they were
    now = time.time()
    deadline = spec.deadline.timestamp() if spec.deadline else None
    attempt = _attempt(kube, body, status, cluster)
    d = decide(status.attempts, attempt, now, deadline, spent, spec.max_cost)
    update: dict[str, Any] = {}
    if d.step is Step.SUCCEED and attempt is not None and attempt.results is not None:
        try:
            update["results"] = Results.model_validate(attempt.results)
        except ValidationError as e:  # a worker of another version: its summary still shows
            log.warning("[%s/%s] results not understood: %s", meta["namespace"], meta["name"], e)
    if d.step is Step.STOP:
        # every attempt's Job, not only the one the status names: a launch whose status write
        # lost its race (the object moved on) left a Job the status does not know yet
        kube.delete_jobs(meta["namespace"], f"{names.LABEL_OWNER_UID}={meta['uid']}")
    elif d.step is Step.RELAUNCH and status.job_name:
        kube.delete_job(meta["namespace"], status.job_name)
    if d.step is Step.RELAUNCH:
        update["interruptions"] = status.interruptions + 1
        kopf.event(body, type="Warning", reason=d.reason, message=d.message)
    if d.step in (Step.LAUNCH, Step.RELAUNCH):
        launched = _launch(kube, body, spec, status.attempts + 1, cluster, policy)
        if isinstance(launched, NoFit):
            d = Decision(Step.WAIT, "Pending", launched.reason, launched.message)
        else:
            update.update(
                attempts=status.attempts + 1,
                job_name=f"{meta['name']}-{status.attempts + 1}",
                node=launched.node,
                gpu_indices=list(launched.gpu_indices),
            )
    if d.phase == "Running" and not status.start_time:
        update["start_time"] = rfc3339(now)
    if d.phase in {"Succeeded", "Failed"} and status.phase != d.phase:
        update.update(completion_time=rfc3339(now), message=d.message)
        kopf.event(
            body,
            type="Normal" if d.phase == "Succeeded" else "Warning",
            reason=d.reason,
            message=d.message,
        )
        log.info("[%s/%s] %s: %s", meta["namespace"], meta["name"], d.phase, d.message)
    ok = (
        ConditionStatus.TRUE
        if d.phase != "Failed" and d.reason not in UNPLACED
        else ConditionStatus.FALSE
    )
    conditions = set_condition(
        status.conditions,
        type="Ready" if d.phase != "Succeeded" else "Complete",
        status=ok,
        reason=d.reason,
        message=d.message,
        generation=meta.get("generation"),
    )
    return status.model_copy(update={"phase": d.phase, "conditions": conditions, **update})


def _launch(
    kube: Kube,
    body: dict[str, Any],
    spec: CompressionJobSpec,
    attempt: int,
    cluster: Cluster,
    policy: str,
) -> Placement | NoFit:
    """Place the worker (spot first when it may be interrupted) and create the attempt's Job."""
    meta = body["metadata"]
    owner = names.workload("CompressionJob", meta["namespace"], meta["name"])
    now = time.time()
    nodes = [n for n in cluster.nodes if n.open_to(owner, now)]
    free = FreeMap.of(nodes, allocations(cluster.pods))
    tiers = [["spot"], ["spot", "on-demand"]] if spec.interruptible else [["on-demand"]]
    for capacity in tiers:  # never empty: result is always set
        result = place(
            make_ask(spec.gpu, capacity, spec.gpu_models, spec.node_pool_selector, cluster),
            nodes,
            free,
            policy,
        )
        if isinstance(result, Placement):
            break
    if isinstance(result, NoFit):
        return result
    pool = next(n.pool for n in cluster.nodes if n.name == result.node)
    job = manifests.compression_job(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        spec=spec,
        attempt=attempt,
        placement=result,
        node_pool=cluster.pools[pool].spec,
    )
    if kube.create_job(job):
        message = (
            f"attempt {attempt} ({job['metadata']['name']}) placed on node {result.node} GPU "
            f"{','.join(map(str, result.gpu_indices))}, {result.memory_mib} MiB"
        )
        kopf.event(body, type="Normal", reason="Placed", message=message)
        log.info("[%s/%s] %s", meta["namespace"], meta["name"], message)
    return result


def register(registry: kopf.OperatorRegistry, kube: Kube, settings: Settings) -> None:
    resource = (GROUP, VERSION, PLURAL)

    def on_job(body: kopf.Body, **_: Any) -> None:
        reconcile(
            kube, dict(body), settings.placement.policy, settings.reconcile.cost_write_seconds
        )

    for decorator in (kopf.on.create, kopf.on.resume):
        decorator(*resource, registry=registry, id="reconcile")(on_job)
    kopf.timer(
        *resource,
        interval=settings.reconcile.resync_seconds,
        idle=None,
        registry=registry,
        id="resync",
    )(on_job)

    @kopf.on.delete(*resource, registry=registry, id="forget-metrics", optional=True)
    def on_delete(meta: kopf.Meta, **_: Any) -> None:
        metrics.forget_workload("CompressionJob", meta["namespace"], meta["name"])
