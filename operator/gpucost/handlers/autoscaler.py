"""The autoscaler loop: one look at the whole cluster per interval, four decisions.

1. Idle marks and scale-down (``core.scaledown``): cordon and drain nodes idle past their timeout
   or being reclaimed; a drained node is deleted through its provider only once no pod but
   DaemonSet pods is left on it, so no workload ever loses its node under it.
2. Scale-up (``core.scaleup``): InferencePool replicas the placer could not place and plain pods
   kube-scheduler left Unschedulable for want of GPUs, batched until the set stops changing, are
   packed onto existing and booting nodes first, then onto the cheapest new nodes.
3. Consolidation (``core.consolidate``), only while nothing is pending, booting or draining: a
   busy node whose pods fit on the other nodes for the pool's ``consolidateAfter`` is drained the
   same way, and its InferencePool replicas are re-placed on the room the plan found.
4. A provider that fails to launch takes its pool out for a cool-down; the next plan falls back
   to the next cheapest pool the work allows (spot exhausted → on-demand, where permitted).

Every decision is logged and posted as an Event on the pool with its reason and $/hour change.
Runs from a timer on GPUNodePools (kopf gives it threads, retries and error logging); the first
pool's timer to fire does the work, the others find it done for this interval.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import kopf
from pydantic import ValidationError

from gpucost import names
from gpucost.adapters import metrics
from gpucost.adapters.kube import Kube
from gpucost.adapters.prometheus import UtilizationSource
from gpucost.adapters.provider import ProviderError, Providers
from gpucost.api import GROUP, VERSION
from gpucost.api.common import condition, duration_seconds, rfc3339
from gpucost.api.compressionjob import CompressionJobSpec
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.api.nodepool import ConsolidationPolicy
from gpucost.core import nodeview
from gpucost.core.consolidate import plan_consolidation
from gpucost.core.inventory import Ask
from gpucost.core.jobrun import UNPLACED
from gpucost.core.scaledown import INTERRUPTED, UNDERUTILIZED, Disruption, NodeState, PoolLimits, plan_scale_down
from gpucost.core.scaleup import Offer, Pending, ScaleUpPlan, plan_scale_up
from gpucost.core.snapshot import allocations, pool_template_node
from gpucost.handlers.cluster import Cluster, Pool, make_ask, read_cluster
from gpucost.handlers.inferencepool import ask_for
from gpucost.settings import Settings

log = logging.getLogger(__name__)


def _post(pool: Pool, type_: str, reason: str, message: str) -> None:
    """Every decision is both a log line and an Event on the pool."""
    (log.warning if type_ == "Warning" else log.info)("[%s] %s: %s", pool.name, reason, message)
    metrics.decisions.labels(pool.name, reason).inc()
    kopf.event(pool.ref, type=type_, reason=reason, message=message)


def pending_work(
    inference_pools: list[dict[str, Any]], cluster: Cluster, pods: list[dict[str, Any]],
    compression_jobs: Sequence[dict[str, Any]] = (),
) -> list[Pending]:
    """Unplaced InferencePool replicas, CompressionJobs waiting for a GPU, and Unschedulable plain
    GPU pods, as asks."""
    out: list[Pending] = []
    for obj in compression_jobs:
        status = obj.get("status") or {}
        if status.get("phase") != "Pending" or condition(status, "Ready").get("reason") not in UNPLACED \
                or obj["metadata"].get("deletionTimestamp"):
            continue
        try:
            job = CompressionJobSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            continue
        meta = obj["metadata"]
        capacity = ["spot", "on-demand"] if job.interruptible else ["on-demand"]
        out.append(Pending(names.workload("CompressionJob", meta["namespace"], meta["name"]),
                           make_ask(job.gpu, capacity, job.gpu_models, job.node_pool_selector, cluster)))
    for obj in inference_pools:
        unplaced = int((obj.get("status") or {}).get("unplacedReplicas") or 0)
        if not unplaced or obj["metadata"].get("deletionTimestamp"):
            continue
        try:
            spec = InferencePoolSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            continue  # its own handler reports the bad spec
        meta = obj["metadata"]
        out.append(Pending(names.workload("InferencePool", meta["namespace"], meta["name"]), ask_for(spec, cluster), unplaced))
    labels = {name: p.spec.node_labels(name) for name, p in cluster.pools.items()}
    taints = {name: [t.wire() for t in p.spec.taints] for name, p in cluster.pools.items()}
    for pod in pods:
        if nodeview.unschedulable_gpu_pod(pod):
            meta = pod["metadata"]
            out.append(Pending(names.workload("Pod", meta["namespace"], meta["name"]), nodeview.pod_ask(pod, labels, taints)))
    return out


class Autoscaler:
    def __init__(self, kube: Kube, settings: Settings, providers: Providers | None = None) -> None:
        self.kube = kube
        self.settings = settings.autoscaling
        self.policy = settings.placement.policy
        self.providers = providers or Providers(kube)
        self.utilization = UtilizationSource(settings.utilization) if settings.utilization.prometheus_url else None
        self._lock = threading.Lock()
        self._last = 0.0
        self._batch_key: frozenset[tuple[str, int]] = frozenset()
        self._batch_first: float | None = None
        self._batch_changed = 0.0
        self._cooldown: dict[str, float] = {}
        self._kept: dict[str, str] = {}
        self._underused: dict[str, float] = {}
        self._replacing: Disruption | None = None
        """A node consolidation launched a replacement for, drained once the replacement is up."""
        self._blocked: set[str] = set()
        """Pods whose eviction a PodDisruptionBudget refuses, so the refusal is told once, not every tick."""

    def maybe_tick(self) -> None:
        """Every pool's timer calls this; one tick per interval runs, the rest return at once."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            now = time.time()
            if now - self._last < self.settings.interval_seconds * 0.9:
                return
            self._last = now
            self.tick(now)
        finally:
            self._lock.release()

    def tick(self, now: float) -> None:
        cluster = read_cluster(self.kube)
        pods = self.kube.pods()
        inference_pools = self.kube.inference_pools()
        on_node = nodeview.pods_by_node(pods)
        states = [
            nodeview.node_state(n, on_node.get(n["metadata"]["name"], []))
            for n in cluster.raw_nodes
            if (n["metadata"].get("labels") or {}).get(names.LABEL_NODEPOOL) in cluster.pools
        ]
        limits = {
            name: PoolLimits(
                p.spec.min_nodes,
                duration_seconds(p.spec.idle_timeout),
                p.spec.disruption_budget,
                duration_seconds(p.spec.consolidate_after)
                if p.spec.consolidation_policy == ConsolidationPolicy.WHEN_EMPTY_OR_UNDERUTILIZED.value
                else None,
                p.spec.idle_utilization_pct,
            )
            for name, p in cluster.pools.items()
        }
        states = self._with_utilization(states, limits)
        pending = pending_work(inference_pools, cluster, pods, self.kube.compression_jobs())
        joining = self._joining(cluster)
        draining = self._scale_down(cluster, states, limits, now)
        calm = not (pending or draining or any(joining.values()) or any(s.booting or s.disruption for s in states))
        if not calm:  # work moves only while nothing else changes: no pending work, nothing booting or draining
            self._underused.clear()
        elif self._replacing is not None:  # its replacement nodes have booted: now drain it
            if any(s.name == self._replacing.node and s.disruption is None for s in states):
                self._disrupt(cluster.pools[self._replacing.pool], self._replacing)
            self._replacing = None
        else:
            self._consolidate(cluster, states, inference_pools, limits, self._offers(cluster, joining, now), now)
        self._drain(cluster, states, on_node)
        self._scale_up(cluster, states, pending, joining, now)

    def _with_utilization(self, states: list[NodeState], limits: dict[str, PoolLimits]) -> list[NodeState]:
        """Each node's peak GPU utilization over its pool's idleTimeout, where the pool asks for it."""
        if self.utilization is None:
            return states
        peaks: dict[float, dict[str, float] | None] = {}
        out = []
        for s in states:
            pool = limits.get(s.pool)
            if pool is None or pool.idle_utilization_pct is None:
                out.append(s)
                continue
            if pool.idle_timeout_s not in peaks:
                peaks[pool.idle_timeout_s] = self.utilization.peak_percent(pool.idle_timeout_s)
            peak = (peaks[pool.idle_timeout_s] or {}).get(s.name)
            out.append(replace(s, utilization_pct=peak))
        return out

    def _disrupt(self, pool: Pool, d: Disruption) -> None:
        """Cordon and mark the node; ``_drain`` evicts its pods and removes it once they are gone."""
        self.kube.patch_node(
            d.node, {"metadata": {"annotations": {names.ANNOTATION_DISRUPTION: d.reason}}, "spec": {"unschedulable": True}}
        )
        _post(pool, "Warning" if d.reason in (INTERRUPTED, UNDERUTILIZED) else "Normal", d.reason,
              f"draining node {d.node} for removal: {d.message}; -${pool.spec.price_per_hour:.2f}/h once removed")

    def _scale_down(self, cluster: Cluster, states: list[NodeState], limits: dict[str, PoolLimits], now: float) -> bool:
        """True when a drain started."""
        plan = plan_scale_down(states, limits, now)
        for node, since in plan.idle_since.items():
            self.kube.patch_node(node, {"metadata": {"annotations": {names.ANNOTATION_IDLE_SINCE: rfc3339(since) if since else None}}})
        for d in plan.drain:
            self._disrupt(cluster.pools[d.pool], d)
        for node, why in plan.kept.items():
            if self._kept.get(node) != why:
                log.info("node %s is idle past its idleTimeout but stays: %s", node, why)
        self._kept = plan.kept
        return bool(plan.drain)

    def _consolidate(
        self, cluster: Cluster, states: list[NodeState], inference_pools: list[dict[str, Any]],
        limits: dict[str, PoolLimits], offers: list[Offer], now: float,
    ) -> None:
        owners: dict[str, tuple[str, InferencePoolSpec]] = {}
        for obj in inference_pools:
            meta = obj["metadata"]
            try:
                spec = InferencePoolSpec.model_validate(obj.get("spec") or {})
            except ValidationError:
                continue
            owners[meta["uid"]] = (names.workload("InferencePool", meta["namespace"], meta["name"]), spec)
        movable: dict[str, list[tuple[str, Ask]]] = defaultdict(list)
        for pod in cluster.pods:
            if not pod.terminal and not pod.deleting and pod.owner_uid in owners:
                owner, spec = owners[pod.owner_uid]
                movable[pod.node].append((owner, ask_for(spec, cluster)))
        plan = plan_consolidation(cluster.nodes, {s.name: s for s in states}, allocations(cluster.pods), movable,
                                  limits, self._underused, self.policy, now, offers)
        self._underused = plan.since
        if plan.drain is None:
            return
        if plan.replacement is None:
            self._disrupt(cluster.pools[plan.drain.pool], plan.drain)
            return
        # Replace: launch the new nodes (held for the moved workloads) and drain the old one on the
        # next calm tick, when they have booted, so the moved replicas never wait for a boot.
        for name, count in plan.replacement.launches.items():
            if not self._launch(cluster.pools[name], count, plan.replacement, now):
                return
        self._replacing = plan.drain

    def _drain(self, cluster: Cluster, states: list[NodeState], on_node: dict[str, list[dict[str, Any]]]) -> None:
        """Evict what is left on nodes being removed; delete a node once only DaemonSet pods remain."""
        blocked: set[str] = set()
        for state in states:
            if state.disruption is None:
                continue
            pool = cluster.pools[state.pool]
            left = [p for p in on_node.get(state.name, []) if not nodeview.node_pod(p).daemon]
            for pod in left:
                meta = pod["metadata"]
                if meta.get("deletionTimestamp"):
                    continue
                if not self.kube.evict(meta["namespace"], meta["name"]):
                    blocked.add(meta["uid"])
                    if meta["uid"] not in self._blocked:
                        _post(pool, "Normal", "EvictionBlocked", f"a PodDisruptionBudget holds {meta['namespace']}/"
                              f"{meta['name']} on node {state.name}; retrying every tick")
            if left:
                continue
            try:
                self.providers.terminate(state.name, pool.name, pool.spec)
            except ProviderError as e:
                _post(pool, "Warning", "TerminateFailed", f"node {state.name}: {e}")
                continue
            _post(pool, "Normal", "NodeRemoved",
                  f"removed node {state.name} ({state.disruption}): -${pool.spec.price_per_hour:.2f}/h")
        self._blocked = blocked

    def _batch_ready(self, pending: list[Pending], now: float) -> bool:
        """Karpenter-style batching: act once the pending set has stopped changing for a moment."""
        key = frozenset((p.owner, p.count) for p in pending)
        if not key:
            self._batch_key, self._batch_first = key, None
            return False
        if key != self._batch_key:
            self._batch_key, self._batch_changed = key, now
            if self._batch_first is None:
                self._batch_first = now
        return (now - self._batch_changed >= self.settings.batch_idle_seconds
                or now - (self._batch_first or now) >= self.settings.batch_max_seconds)

    def _scale_up(
        self, cluster: Cluster, states: list[NodeState], pending: list[Pending], joining: dict[str, int], now: float
    ) -> None:
        if not self._batch_ready(pending, now):
            return
        booting_names = {s.name for s in states if s.booting}
        existing = [n for n in cluster.nodes if n.schedulable]
        booting = [n for n in cluster.nodes if n.name in booting_names]
        for name, count in joining.items():
            template = pool_template_node(name, cluster.pools[name].spec)
            booting += [replace(template, name=f"<{name} node joining #{i}>") for i in range(count)]
        plan = plan_scale_up(pending, self._offers(cluster, joining, now), existing, allocations(cluster.pods), booting, self.policy, now)
        self._batch_first = None
        for name, count in plan.launches.items():
            self._launch(cluster.pools[name], count, plan, now)

    def _offers(self, cluster: Cluster, joining: dict[str, int], now: float) -> list[Offer]:
        """A new node of each pool a provider can launch now (not cooling down), within maxNodes."""
        return [
            Offer(name, pool_template_node(name, p.spec),
                  p.spec.max_nodes - cluster.pool_node_counts.get(name, 0) - joining[name])
            for name, p in cluster.pools.items()
            if name in joining and self._cooldown.get(name, 0.0) <= now
        ]

    def _joining(self, cluster: Cluster) -> dict[str, int]:
        """Per pool the autoscaler can drive: nodes launched that have not joined as Nodes yet
        (in flight, never bought twice). Every tick, as it is also when a provider labels the nodes
        that joined. A pool whose provider can't say is left out of scale-up this tick."""
        labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in cluster.raw_nodes}
        out: dict[str, int] = {}
        for name, p in cluster.pools.items():
            if not self.providers.supports(p.spec):
                continue
            try:
                out[name] = self.providers.unregistered(name, p.spec, labels)
            except ProviderError as e:
                log.warning("[%s] left out of scale-up: its provider can't report launched nodes: %s", name, e)
        return out

    def _launch(self, pool: Pool, count: int, plan: ScaleUpPlan, now: float) -> bool:
        spec = pool.spec
        owners = plan.on_new[pool.name]
        until = now + duration_seconds(spec.provider.boot_delay) + self.settings.reservation_seconds
        reservation = {names.ANNOTATION_RESERVED_FOR: json.dumps({"owners": sorted(owners), "until": round(until, 3)})}
        try:
            made = self.providers.launch(pool.name, spec, count, reservation)
        except ProviderError as e:
            self._cooldown[pool.name] = now + self.settings.launch_cooldown_seconds
            _post(pool, "Warning", "LaunchFailed",
                  f"could not launch {count} {spec.instance_type} ({spec.capacity_type}): {e}; "
                  f"pool left out for {self.settings.launch_cooldown_seconds:.0f}s")
            return False
        holds = ", ".join(f"{owner} x{n}" for owner, n in sorted(owners.items()))
        _post(pool, "Normal", "ScaleUp",
              f"launched {count} {spec.instance_type} {spec.capacity_type} node(s) "
              f"({', '.join(made)}) for {holds}: +${count * spec.price_per_hour:.2f}/h")
        return True


def register(registry: kopf.OperatorRegistry, kube: Kube, settings: Settings) -> None:
    autoscaler = Autoscaler(kube, settings)

    @kopf.timer(GROUP, VERSION, "gpunodepools", interval=settings.autoscaling.interval_seconds / 2,
                idle=None, registry=registry, id="autoscale")
    def autoscale(**_: Any) -> None:
        autoscaler.maybe_tick()
