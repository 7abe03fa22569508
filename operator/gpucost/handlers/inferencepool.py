"""InferencePool reconcile: level-based, every time from what the API says now."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import kopf

from gpucost import names
from gpucost.adapters import metrics
from gpucost.adapters.kube import Kube
from gpucost.api import GROUP, VERSION
from gpucost.api.common import Condition, ConditionStatus, condition, rfc3339, set_condition
from gpucost.api.inferencepool import InferencePoolSpec, InferencePoolStatus, ReplicaPlacement
from gpucost.core import adoption, endpoint, poolplan, refusal, snapshot
from gpucost.core.cost import Account
from gpucost.core.packing.policies import DEFAULT_POLICY
from gpucost.core.placement import (
    NoFit,
)
from gpucost.core.snapshot import PlacedPod
from gpucost.executor.pool import apply_pool_plan
from gpucost.handlers.worker import Worker
from gpucost.settings import Settings
from gpucost.state.budgets import enforcing
from gpucost.state.cluster import PLACEMENT_LOCK, Cluster, ask_for, read_cluster
from gpucost.state.objects import EXTENSION
from gpucost.state.status import account_workload, fresh, spec_or_report, write_status

PLURAL = "inferencepools"
NODE_UNAVAILABLE = "NodeUnavailable"
"""Ready/Placed reason while a stranded replica's old pod is still being removed."""
log = logging.getLogger(__name__)


def _placement_status(pod: PlacedPod) -> ReplicaPlacement:
    return ReplicaPlacement(
        replica=pod.replica,
        pod=pod.name,
        node=pod.node,
        gpu_indices=list(pod.gpu_indices),
        gpu_uuids=list(pod.gpu_uuids),
        memory_mib=pod.memory_mib,
        phase=_phase(pod),
        ready=pod.ready,
    )


def _phase(pod: PlacedPod) -> str:
    return "Terminating" if pod.deleting else pod.phase


def build_status(
    *,
    body: dict[str, Any],
    spec: InferencePoolSpec,
    mine: list[PlacedPod],
    unplaced: list[NoFit],
    impossible: str | None = None,
    decision: poolplan.PoolPlan | None = None,
    cost: Account = Account(),
    capped_by: str | None = None,
    verdict: adoption.Verdict | None = None,
) -> dict[str, Any]:
    generation = body["metadata"].get("generation")
    if decision is not None:
        impossible = decision.impossible
    old = InferencePoolStatus.model_validate(body.get("status") or {})
    conditions: list[Condition] = old.conditions
    want = budget_cap(spec) if capped_by else spec.replicas
    if capped_by:
        conditions = set_condition(
            conditions,
            type="BudgetCapped",
            status=ConditionStatus.TRUE,
            reason="BudgetExceeded",
            message=f"{want} of {spec.replicas} replicas (minReplicas) until {capped_by} resets "
            "or is raised",
            generation=generation,
        )
    elif any(c.type == "BudgetCapped" for c in conditions):
        conditions = set_condition(
            conditions,
            type="BudgetCapped",
            status=ConditionStatus.FALSE,
            reason="WithinBudget",
            message="no enforcing CostBudget is over its limit",
            generation=generation,
        )
    if verdict is not None:
        ok = ConditionStatus.TRUE if verdict.ok else ConditionStatus.FALSE
        conditions = _set(
            conditions, adoption.CONDITION, (ok, verdict.reason, verdict.message), generation
        )
    elif any(c.type == adoption.CONDITION for c in conditions):
        conditions = [c for c in conditions if c.type != adoption.CONDITION]
    live = sorted((p for p in mine if not p.terminal and not p.deleting), key=lambda p: p.replica)
    ready = sum(p.ready for p in live)
    invalid = decision.invalid if decision is not None else None
    if invalid:
        placed = (ConditionStatus.FALSE, "InvalidSpec", invalid)
    elif impossible:
        placed = (ConditionStatus.FALSE, "NoMatchingGPU", impossible)
    elif unplaced:
        placed = (
            ConditionStatus.FALSE,
            unplaced[0].reason,
            f"{len(unplaced)} of {want} replicas unplaced: {unplaced[0].message}",
        )
    else:
        placed = (ConditionStatus.TRUE, "AllReplicasPlaced", f"{len(live)} replicas placed on GPUs")
    conditions = _set(conditions, "Placed", placed, generation)
    if placed[0] == ConditionStatus.FALSE:
        readiness = (ConditionStatus.FALSE, placed[1], placed[2])
    elif ready < want or len(live) < want:
        readiness = (ConditionStatus.FALSE, "ReplicasNotReady", f"{ready} of {want} replicas ready")
    else:
        readiness = (ConditionStatus.TRUE, "AllReplicasReady", f"{ready} of {want} replicas ready")
    conditions = _set(conditions, "Ready", readiness, generation)
    meta = body["metadata"]
    rollout: dict[str, Any] = {
        "selector": endpoint.selector_string(meta["name"]),
        "endpoint": endpoint.endpoint(meta["name"], meta["namespace"], spec)
        if spec.service.enabled
        else None,
    }
    if decision is not None and decision.rollout is not None:
        conditions, fields = _progressing(conditions, spec, decision, mine, want, generation)
        rollout.update(fields)
    status = InferencePoolStatus(
        **rollout,
        replicas=len(live),
        ready_replicas=ready,
        unplaced_replicas=len(unplaced) if not impossible else max(want - len(live), 0),
        placements=[_placement_status(p) for p in live],
        observed_generation=generation,
        conditions=conditions,
        cost_per_hour=round(cost.rate, 6),
        cost_accumulated=round(cost.total, 6),
        cost_accounted_at=rfc3339(cost.at) if cost.at is not None else None,
    ).wire()
    adopted = verdict.adopted if verdict is not None else None
    # explicit, so that removing spec.modelFrom clears it (wire() leaves unset fields out)
    status["adoptedModel"] = adopted.wire() if adopted is not None else None
    return status


def _progressing(
    conditions: list[Condition],
    spec: InferencePoolSpec,
    decision: poolplan.PoolPlan,
    mine: list[PlacedPod],
    want: int,
    generation: int | None,
) -> tuple[list[Condition], dict[str, Any]]:
    """The rollout's fields and its Progressing condition (reasons as Deployment's), from the pods
    as they are after the plan was applied."""
    plan = decision.rollout
    assert plan is not None
    live = [p for p in mine if not p.terminal and not p.deleting]
    new = [p for p in live if p.revision == plan.update]
    ready_new = sum(p.ready for p in new)
    complete = ready_new >= want and len(new) == len(live)
    if decision.invalid:
        state = (ConditionStatus.FALSE, "InvalidSpec", decision.invalid)
    elif plan.stalled:
        state = (
            ConditionStatus.FALSE,
            "ProgressDeadlineExceeded",
            f"revision {plan.update} made no progress for {spec.progress_deadline_seconds}s "
            f"({ready_new} of {want} updated replicas Ready); the rollout stopped and the "
            f"replicas of revision {plan.current} keep serving",
        )
    elif complete:
        state = (
            ConditionStatus.TRUE,
            "NewRevisionAvailable",
            f"revision {plan.update}: {ready_new} of {want} replicas updated and Ready",
        )
    else:
        state = (
            ConditionStatus.TRUE,
            "ReplicaSetUpdated",
            f"rolling out revision {plan.update}: {len(new)} of {want} replicas updated, "
            f"{ready_new} Ready",
        )
    conditions = _set(conditions, "Progressing", state, generation)
    fields = {
        "updated_replicas": len(new),
        "updated_ready_replicas": ready_new,
        "update_revision": plan.update,
        "current_revision": plan.update if complete else plan.current,
        "last_progress_time": rfc3339(plan.progress_at),
    }
    return conditions, fields


def _set(
    conditions: list[Condition],
    type: str,
    state: tuple[ConditionStatus, str, str],
    generation: int | None,
) -> list[Condition]:
    """``state`` is (status, reason, message)."""
    status, reason, message = state
    return set_condition(
        conditions,
        type=type,
        status=status,
        reason=reason,
        message=message,
        generation=generation,
    )


def budget_cap(spec: InferencePoolSpec) -> int:
    """Replicas an InferencePool keeps while an enforcing budget is exceeded: its floor."""
    return min(spec.replicas, spec.min_replicas or 0)


def reconcile(
    kube: Kube,
    body: dict[str, Any],
    logger: logging.Logger | logging.LoggerAdapter,
    policy: str = DEFAULT_POLICY,
    cost_every: float = 60.0,
    cluster: Cluster | None = None,
) -> None:
    """Serialised per operator: kopf may run the create handler, the timer and a pod event at once,
    each with its own copy of the body; under the lock we re-read the object and decide once.
    ``cluster``: a view read under the same hold of the lock, shared by a batch of reconciles
    (each brings its own pods up to date in it)."""
    meta = body["metadata"]
    with PLACEMENT_LOCK, metrics.reconciling("InferencePool"):
        current = fresh(kube, PLURAL, body)
        if current is None:
            metrics.forget_workload("InferencePool", meta["namespace"], meta["name"])
            return  # gone, replaced, or going: the garbage collector removes the owned pods
        _reconcile(kube, current, logger, policy, cost_every, cluster or read_cluster(kube))


def _reconcile(
    kube: Kube,
    body: dict[str, Any],
    logger: logging.Logger | logging.LoggerAdapter,
    policy: str,
    cost_every: float,
    cluster: Cluster,
) -> None:
    meta = body["metadata"]
    namespace, uid = meta["namespace"], meta["uid"]
    spec = spec_or_report(kube, PLURAL, body, InferencePoolSpec)
    if spec is None:
        return
    verdict = _adoption(kube, body, spec)
    spec = adoption.effective(spec, verdict.adopted if verdict else None)
    mine = [p for p in cluster.pods if p.owner_uid == uid]
    moving = _release_stranded(kube, body, cluster, mine, logger)
    avoid = frozenset(p.node for p in mine if p.replica in moving)
    if moving:
        mine = [p for p in (snapshot.placed_pod(o) for o in kube.placed_pods(owner_uid=uid)) if p]
    capped_by = enforcing(kube, namespace, "capInferencePools")
    pool = poolplan.Pool(
        name=meta["name"],
        namespace=namespace,
        uid=uid,
        spec=spec,
        status=InferencePoolStatus.model_validate(body.get("status") or {}),
        want=budget_cap(spec) if capped_by else spec.replicas,
    )
    snap = poolplan.Snapshot(
        nodes=cluster.nodes,
        pods=cluster.pods,
        pool_specs={n: p.spec for n, p in cluster.pools.items()},
        ask=ask_for(spec, cluster),
        base_ask=ask_for(spec, cluster, base=True) if spec.base_size(spec.replicas) else None,
        avoid=avoid,
        extension_served=EXTENSION.served(kube),
    )
    decision = poolplan.decide(pool, mine, snap, time.time(), policy)
    node_pools = {n.name: cluster.pools[n.pool].spec for n in cluster.nodes}
    apply_pool_plan(kube, body, spec, decision, node_pools, logger)
    unplaced = [_left(miss, moving) for miss in decision.unplaced]
    if decision.delete or decision.create or moving:
        mine = [p for p in (snapshot.placed_pod(o) for o in kube.placed_pods(owner_uid=uid)) if p]
        cluster.pods[:] = [p for p in cluster.pods if p.owner_uid != uid] + mine
    if verdict is not None and verdict.adopted is not None:
        # Priced on the replicas as they stand after this plan, so the write that records a
        # rollout's placements records its price too (the replicas before it may all be gone).
        on = {p.node for p in mine}
        node = next((n for n in cluster.nodes if n.name in on), None)
        if node is not None:
            verdict = replace(verdict, adopted=adoption.priced(verdict.adopted, node))

    def compute(obj: dict[str, Any]) -> dict[str, Any]:
        old = InferencePoolStatus.model_validate(obj.get("status") or {})
        cost = account_workload("InferencePool", obj, cluster, mine, old, cost_every)
        return build_status(
            body=obj,
            spec=spec,
            mine=mine,
            decision=decision,
            unplaced=unplaced,
            cost=cost,
            capped_by=capped_by,
            verdict=verdict,
        )

    _announce(body, write_status(kube, PLURAL, body, compute))


def _adoption(kube: Kube, body: dict[str, Any], spec: InferencePoolSpec) -> adoption.Verdict | None:
    """The modelFrom verdict, with an Event when it changes (a rollout to the compressed model
    above all)."""
    if spec.model_from is None:
        return None
    meta = body["metadata"]
    status = InferencePoolStatus.model_validate(body.get("status") or {})
    job = kube.get_object("compressionjobs", spec.model_from.compression_job, meta["namespace"])
    verdict = adoption.judge(spec, job, status.adopted_model)
    before = next((c for c in status.conditions if c.type == adoption.CONDITION), None)
    if before is None or (before.reason, before.message) != (verdict.reason, verdict.message):
        kind = "Normal" if verdict.ok else "Warning"
        kopf.event(body, type=kind, reason=verdict.reason, message=verdict.message)
        log.info("[%s/%s] %s: %s", meta["namespace"], meta["name"], verdict.reason, verdict.message)
    return verdict


def _left(miss: NoFit, moving: dict[int, str]) -> NoFit:
    """An unplaced replacement says which node its replica had to leave, and why."""
    if not moving:
        return miss
    replica, why = min(moving.items())
    message = f"replica {replica} had to leave its node ({why}); {miss.message}"
    reason = NODE_UNAVAILABLE if miss.reason == "Unschedulable" else miss.reason
    return NoFit(reason, message, miss.missing_mib)


def _release_stranded(
    kube: Kube,
    body: dict[str, Any],
    cluster: Cluster,
    mine: list[PlacedPod],
    logger: logging.Logger | logging.LoggerAdapter,
) -> dict[int, str]:
    """Delete the replicas whose node will never run them (gone, going, or refusing them), so
    their ordinals are placed again; ordinal → why. A Warning Event says which node and why."""
    namespace = body["metadata"]["namespace"]
    why = refusal.stranded(mine, cluster.refusals, time.time(), cluster.catching_up)
    out: dict[int, str] = {}
    for pod in (p for p in mine if p.name in why):
        gone = pod.node not in cluster.refusals
        if gone and pod.bound and kube.get_node(pod.node) is not None:
            continue  # the node joined again after the list: not lost after all
        kube.delete_pod(namespace, pod.name, force=gone)
        out[pod.replica] = why[pod.name]
        message = f"replica {pod.replica} ({pod.name}) deleted to be placed again: {why[pod.name]}"
        logger.warning(message)
        kopf.event(body, type="Warning", reason="ReplicaStranded", message=message)
    return out


def _announce(body: dict[str, Any], status: dict[str, Any]) -> None:
    """One Event (and log line) when the pool becomes unplaceable or why changes, or a budget caps
    or frees it; never per reconcile."""
    capped, was = condition(status, "BudgetCapped"), condition(body.get("status"), "BudgetCapped")
    if capped and capped["status"] != was.get("status"):
        log.info(
            "[%s/%s] %s", body["metadata"]["namespace"], body["metadata"]["name"], capped["message"]
        )
        kopf.event(
            body,
            type="Warning" if capped["status"] == "True" else "Normal",
            reason=capped["reason"],
            message=capped["message"],
        )
    new, old = condition(status, "Ready"), condition(body.get("status"), "Ready")
    unplaced = {"Unschedulable", "NoMatchingGPU", NODE_UNAVAILABLE}
    if new.get("status") != "False" or new.get("reason") not in unplaced:
        return
    if (old.get("reason"), old.get("message")) == (new["reason"], new["message"]):
        return
    meta = body["metadata"]
    # A plain logger: kopf's object logger would post every warning line as another Event.
    log.warning(
        "[%s/%s] cannot place replicas: %s", meta["namespace"], meta["name"], new["message"]
    )
    kopf.warn(body, reason=new["reason"], message=new["message"])


class _Prefixed(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Log lines that name their pool, like kopf's per-object logger."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{(self.extra or {}).get('pool')}] {msg}", kwargs


class PodEvents(Worker):
    """Replica pod changes and nodes turning Ready, coalesced per InferencePool into one
    reconcile on one worker thread.

    A reconcile reads the whole cluster under the placement lock; run once per pod event, a burst
    of 1,000 replicas going Running queued 2,000 of them behind each other (measured: 100 pods
    Running per minute). Coalesced, a burst costs a few reconciles per pool.
    """

    def __init__(self, kube: Kube, policy: str, cost_every: float) -> None:
        super().__init__("pod-events")
        self.kube, self.policy, self.cost_every = kube, policy, cost_every
        self._dirty: dict[tuple[str, str], str] = {}
        self._nodes: set[str] = set()

    def event(self, event: dict[str, Any]) -> None:
        """From kopf's pod event handler: cheap, never reconciles or reads itself."""
        pod = event.get("object") or {}
        meta = pod.get("metadata") or {}
        owner = next(
            (o for o in meta.get("ownerReferences") or [] if o.get("kind") == "InferencePool"), None
        )
        if owner is None:
            return
        # No read here: a burst's pods send thousands of events, and a GET of the pool per event
        # cost more than the one coalesced reconcile they end up in (which re-reads the pool).
        with self._wake:
            self._start_once()
            self._dirty[(meta["namespace"], owner["name"])] = owner["uid"]
            self._wake.notify()

    def node_changed(self, name: str) -> None:
        """A node turned Ready, went, or started refusing pods: pools with unplaced replicas get
        another try, and pools with replicas on it a look (once per batch)."""
        with self._wake:
            self._start_once()
            self._nodes.add(name)
            self._wake.notify()

    def _affected(self, nodes: set[str]) -> dict[tuple[str, str], str]:
        def touched(status: dict[str, Any]) -> bool:
            return int(status.get("unplacedReplicas") or 0) > 0 or any(
                p.get("node") in nodes for p in status.get("placements") or []
            )

        return {
            (o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"]["uid"]
            for o in self.kube.inference_pools()
            if touched(o.get("status") or {})
        }

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._wait(lambda: self._dirty or self._nodes):
                    return
                batch, self._dirty = self._dirty, {}
                nodes, self._nodes = self._nodes, set()
            try:
                batch.update(self._affected(nodes) if nodes else {})
            except Exception:
                log.exception("listing the InferencePools a node change affects failed")
            # One read of the cluster for the whole batch, under one hold of the placement lock:
            # read per pool, a burst's ten pools parsed every node and pod ten times over.
            with PLACEMENT_LOCK:
                try:
                    cluster = read_cluster(self.kube) if batch else None
                except Exception:
                    log.exception("reading the cluster for a batch of reconciles failed")
                    continue
                for (namespace, name), uid in batch.items():
                    body = {"metadata": {"namespace": namespace, "name": name, "uid": uid}}
                    logger = _Prefixed(log, {"pool": f"{namespace}/{name}"})
                    try:
                        reconcile(self.kube, body, logger, self.policy, self.cost_every, cluster)
                    except Exception:  # the resync timer retries; this thread must not die
                        log.exception(
                            "reconcile of %s/%s after a pod event failed", namespace, name
                        )


def register(registry: kopf.OperatorRegistry, kube: Kube, settings: Settings) -> None:
    resource = (GROUP, VERSION, PLURAL)

    def on_spec(body: kopf.Body, logger: Any, **_: Any) -> None:
        reconcile(
            kube,
            dict(body),
            logger,
            settings.placement.policy,
            settings.reconcile.cost_write_seconds,
        )

    for decorator in (kopf.on.create, kopf.on.resume):
        decorator(*resource, registry=registry, id="reconcile")(on_spec)
    kopf.on.update(*resource, field="spec", registry=registry, id="reconcile")(on_spec)
    kopf.timer(
        *resource,
        interval=settings.reconcile.resync_seconds,
        idle=None,
        registry=registry,
        id="resync",
    )(on_spec)

    @kopf.on.delete(*resource, registry=registry, id="forget-metrics", optional=True)
    def on_delete(meta: kopf.Meta, **_: Any) -> None:
        metrics.forget_workload("InferencePool", meta["namespace"], meta["name"])

    phases: dict[str, str] = {}

    @kopf.on.event(GROUP, VERSION, "compressionjobs", registry=registry)
    def on_compression_job(event: kopf.RawEvent, logger: Any, **_: Any) -> None:
        """A job that succeeds (or fails) is adopted (or reported) by the pools that name it in
        spec.modelFrom now, not at their next resync. Raw events keep no state on the job."""
        meta = (event.get("object") or {}).get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if event.get("type") == "DELETED":
            phases.pop(key, None)
        else:
            phase = ((event.get("object") or {}).get("status") or {}).get("phase") or ""
            if phases.get(key) == phase:
                return
            phases[key] = phase
        for pool in kube.inference_pools():
            ref = ((pool.get("spec") or {}).get("modelFrom") or {}).get("compressionJob")
            if pool["metadata"]["namespace"] == meta.get("namespace") and ref == meta.get("name"):
                on_spec(pool, logger)

    pod_events = PodEvents(kube, settings.placement.policy, settings.reconcile.cost_write_seconds)
    kopf.on.cleanup(registry=registry, id="pod-events-stop")(lambda **_: pod_events.stop())

    @kopf.on.event(
        "", "v1", "pods", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY}, registry=registry
    )
    def on_pod(event: kopf.RawEvent, **_: Any) -> None:
        pod_events.event(dict(event))

    seen: dict[str, tuple[Any, ...]] = {}

    @kopf.on.event(
        "", "v1", "nodes", labels={names.LABEL_NODEPOOL: kopf.PRESENT}, registry=registry
    )
    def on_node(event: kopf.RawEvent, **_: Any) -> None:
        """Unplaced replicas are placed when a node turns Ready, and replicas pinned to a node that
        goes or starts refusing pods are moved, not at the next resync. Only a change of what
        decides that counts (heartbeats do not); the reconcile itself judges the node."""
        node = dict(event.get("object") or {})
        meta, spec = node.get("metadata") or {}, node.get("spec") or {}
        name = meta.get("name", "")
        if event.get("type") == "DELETED":
            seen.pop(name, None)
            pod_events.node_changed(name)
            return
        state = (
            condition(node.get("status"), "Ready").get("status"),
            spec.get("unschedulable"),
            str(spec.get("taints")),
            meta.get("deletionTimestamp"),
            (meta.get("annotations") or {}).get(names.ANNOTATION_DISRUPTION),
        )
        if seen.get(name) != state:
            seen[name] = state
            pod_events.node_changed(name)
