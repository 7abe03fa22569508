"""The autoscaler handler: read a snapshot, ask ``core.autoscale.plan``, hand its commands to the
executor. The decisions and their order are documented in ``core.autoscale``.

A look runs when pending work appears (an InferencePool or CompressionJob event says so: the batch
window then starts at once, not at the next interval), when the planner said something falls due,
and at least every interval from a timer on GPUNodePools (the first pool's timer to fire does the
work, the others find it done). One look at a time, never two within ``MIN_GAP`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import kopf
from pydantic import ValidationError

from gpucost import names
from gpucost.adapters.kube import Kube
from gpucost.adapters.prometheus import UtilizationSource
from gpucost.adapters.provider import ProviderError, Providers
from gpucost.api import GROUP, VERSION
from gpucost.api.common import condition, epoch
from gpucost.api.compressionjob import CompressionJobSpec
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.core import adoption, nodeview, ondemandbase
from gpucost.core.autoscale import Batch, Decision, PoolView, Snapshot, Timing, plan, pool_view
from gpucost.core.inventory import Ask
from gpucost.core.jobrun import UNPLACED
from gpucost.core.placement import Filled
from gpucost.core.rollout import resolve, revision
from gpucost.core.scaledown import NodeState, PoolLimits
from gpucost.core.scaleup import Pending
from gpucost.core.snapshot import PlacedPod, allocations
from gpucost.executor import Executor
from gpucost.handlers.worker import Worker
from gpucost.settings import Settings
from gpucost.state.cluster import Cluster, ask_for, make_ask, read_cluster

log = logging.getLogger(__name__)
MIN_GAP = 1.0
"""Seconds between two looks at least: a burst's events coalesce into one."""


def _by_owner(pods: Iterable[PlacedPod]) -> defaultdict[str, list[PlacedPod]]:
    out: defaultdict[str, list[PlacedPod]] = defaultdict(list)
    for pod in pods:
        out[pod.owner_uid].append(pod)
    return out


def pending_work(
    inference_pools: list[dict[str, Any]],
    cluster: Cluster,
    pods: list[dict[str, Any]],
    compression_jobs: Sequence[dict[str, Any]] = (),
) -> list[Pending]:
    """Unplaced InferencePool replicas, CompressionJobs waiting for a GPU, and Unschedulable plain
    GPU pods, as asks."""
    out: list[Pending] = []
    for obj in compression_jobs:
        status = obj.get("status") or {}
        if (
            status.get("phase") != "Pending"
            or condition(status, "Ready").get("reason") not in UNPLACED
            or obj["metadata"].get("deletionTimestamp")
        ):
            continue
        try:
            job = CompressionJobSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            continue
        meta = obj["metadata"]
        capacity = ["spot", "on-demand"] if job.interruptible else ["on-demand"]
        out.append(
            Pending(
                names.workload("CompressionJob", meta["namespace"], meta["name"]),
                make_ask(job.gpu, capacity, job.gpu_models, job.node_pool_selector, cluster),
            )
        )
    live = _by_owner(p for p in cluster.pods if not p.terminal and not p.deleting)
    on_base = ondemandbase.base_nodes(cluster.nodes)
    for obj in inference_pools:
        unplaced = int((obj.get("status") or {}).get("unplacedReplicas") or 0)
        if not unplaced or obj["metadata"].get("deletionTimestamp"):
            continue
        try:
            spec = adoption.served(obj)
        except ValidationError:
            continue  # its own handler reports the bad spec
        meta = obj["metadata"]
        # The status trails the pods its reconcile is creating: a replica with a pod is not
        # pending, or a look between the two buys a node for it twice. A rollout's surge
        # replicas are wanted on top of the count.
        status = obj.get("status") or {}
        rolling = status.get("updateRevision") != status.get("currentRevision")
        surge = resolve(spec.strategy.rolling_update.max_surge, spec.replicas, round_up=True)
        ceiling = spec.replicas + (surge if rolling else 0)
        mine = live[meta["uid"]]
        unplaced = min(unplaced, max(ceiling - len(mine), 0))
        if not unplaced:
            continue
        owner = names.workload("InferencePool", meta["namespace"], meta["name"])
        waking = spec.autoscaling is not None and not status.get("readyReplicas")
        # the on-demand base's missing replicas first: the pool places them first
        base = ondemandbase.missing(mine, on_base, revision(spec), spec.base_size(spec.replicas))
        on_demand = min(unplaced, base)
        for count, ask in ((on_demand, ask_for(spec, cluster, base=True)),
                           (unplaced - on_demand, ask_for(spec, cluster))):  # fmt: skip
            if count:
                out.append(Pending(owner, ask, count, waking=waking))
    labels = {name: p.spec.node_labels(name) for name, p in cluster.pools.items()}
    taints = {name: [t.wire() for t in p.spec.taints] for name, p in cluster.pools.items()}
    for pod in pods:
        if nodeview.unschedulable_gpu_pod(pod):
            meta = pod["metadata"]
            out.append(
                Pending(
                    names.workload("Pod", meta["namespace"], meta["name"]),
                    nodeview.pod_ask(pod, labels, taints),
                )
            )
    return out


class Autoscaler(Worker):
    def __init__(self, kube: Kube, settings: Settings, providers: Providers | None = None) -> None:
        super().__init__("autoscaler")
        self.kube = kube
        self.settings = settings.autoscaling
        self.timing = Timing(
            self.settings.batch_idle_seconds,
            self.settings.batch_max_seconds,
            self.settings.reservation_seconds,
            self.settings.launch_cooldown_seconds,
        )
        self.policy = settings.placement.policy
        self.providers = providers or Providers(kube)
        self.executor = Executor(kube, self.providers)
        self.utilization = (
            UtilizationSource(settings.utilization) if settings.utilization.prometheus_url else None
        )
        self._lock = threading.Lock()
        self._last = 0.0
        self._batch = Batch()
        self._wake_at: float | None = None
        self._poked = False

    def maybe_tick(self, min_gap: float | None = None) -> None:
        """One look unless another runs or ran less than ``min_gap`` (default: most of the
        interval, for the timers) seconds ago."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            now = time.time()
            gap = self.settings.interval_seconds * 0.9 if min_gap is None else min_gap
            if now - self._last < gap:
                return
            self._last = now
            self._wake_at = self.tick(now).wake_at
        finally:
            self._lock.release()

    def poke(self) -> None:
        """Pending work appeared: look now (from kopf's event handlers; never blocks)."""
        with self._wake:
            self._start_once()
            self._poked = True
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                interval = self.settings.interval_seconds
                due = self._wake_at - time.time() if self._wake_at is not None else interval
                if not self._wait(lambda: self._poked, min(max(due, 0.0), interval)):
                    return
                self._poked = False
                pause = self._last + MIN_GAP - time.time()
                if pause > 0 and not self._wait(lambda: False, pause):  # a stop ends it at once
                    return
            try:
                self.maybe_tick(MIN_GAP)
            except Exception:  # the timers keep looking; this thread must not die
                log.exception("autoscaler look failed")

    def tick(self, now: float) -> Decision:
        cluster = read_cluster(self.kube)
        self._failed_launches(cluster, now)
        snap = self.snapshot(cluster, now)
        decision = plan(snap, self._batch, self.timing)
        self._batch = decision.batch
        self.executor.apply(decision.commands, cluster.pools)
        return decision

    def _failed_launches(self, cluster: Cluster, now: float) -> None:
        """Launches a provider gave up on since they were asked for: the same cool-down as a
        launch refused at once, so this look already plans around the pool."""
        for name, p in cluster.pools.items():
            if not self.providers.supports(p.spec):
                continue
            try:
                failed = self.providers.failed_launches(name, p.spec)
            except ProviderError as e:
                log.warning("[%s] its provider can't report failed launches: %s", name, e)
                continue
            if failed:
                self.executor.launch_failed(p, failed, now + self.timing.cooldown)

    def snapshot(self, cluster: Cluster, now: float) -> Snapshot:
        pods = self.kube.pods()
        inference_pools = self.kube.inference_pools()
        on_node = nodeview.pods_by_node(pods)
        states = [
            nodeview.node_state(n, on_node.get(n["metadata"]["name"], []))
            for n in cluster.raw_nodes
            if (n["metadata"].get("labels") or {}).get(names.LABEL_NODEPOOL) in cluster.pools
        ]
        views = self._pools(cluster, now)
        states = self._with_utilization(states, {name: v.limits for name, v in views.items()})
        movable, filled = replicas_on_nodes(cluster, inference_pools)
        return Snapshot(
            now=now,
            pools=views,
            nodes=cluster.nodes,
            states=states,
            held=allocations(cluster.pods),
            pending=pending_work(inference_pools, cluster, pods, self.kube.compression_jobs()),
            movable=movable,
            policy=self.policy,
            filled=filled,
        )

    def _pools(self, cluster: Cluster, now: float) -> dict[str, PoolView]:
        labels = {
            n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in cluster.raw_nodes
        }
        out = {}
        for name, p in cluster.pools.items():
            spec = p.spec
            joining: int | None = None
            if self.providers.supports(spec):
                try:
                    joining = self.providers.unregistered(name, spec, labels)
                except ProviderError as e:
                    log.warning(
                        "[%s] left out of scale-up: its provider can't report launched nodes: %s",
                        name,
                        e,
                    )
            cooldown = epoch(p.annotations.get(names.ANNOTATION_LAUNCH_COOLDOWN)) or 0.0
            out[name] = pool_view(
                name,
                spec,
                cluster.pool_node_counts.get(name, 0),
                joining,
                cooldown,
                p.expected_price,
                now,
            )
        return out

    def _with_utilization(
        self, states: list[NodeState], limits: dict[str, PoolLimits]
    ) -> list[NodeState]:
        """Each node's peak GPU utilization over its pool's idleTimeout, where the pool asks for
        it."""
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


def replicas_on_nodes(
    cluster: Cluster, inference_pools: list[dict[str, Any]]
) -> tuple[dict[str, list[tuple[str, Ask]]], dict[str, Filled]]:
    """Per node, the InferencePool replicas on it (their pool re-places them after a drain); per
    pool, the GPUs its replicas fill (the planned slots they take)."""
    owners: dict[str, tuple[str, InferencePoolSpec]] = {}
    for obj in inference_pools:
        meta = obj["metadata"]
        try:
            spec = adoption.served(obj)
        except ValidationError:
            continue
        owners[meta["uid"]] = (
            names.workload("InferencePool", meta["namespace"], meta["name"]),
            spec,
        )
    on_base = ondemandbase.base_nodes(cluster.nodes)
    by_owner = _by_owner(cluster.pods)
    base = {
        p.name
        for uid, (_, spec) in owners.items()
        for p in ondemandbase.base_pods(
            by_owner[uid], on_base, revision(spec), spec.base_size(spec.replicas)
        )
    }
    out: dict[str, list[tuple[str, Ask]]] = defaultdict(list)
    filled: dict[str, Filled] = defaultdict(Counter)
    for pod in cluster.pods:
        if not pod.terminal and not pod.deleting and pod.owner_uid in owners:
            owner, spec = owners[pod.owner_uid]
            out[pod.node].append((owner, ask_for(spec, cluster, base=pod.name in base)))
            filled[owner][(pod.node, tuple(pod.gpu_indices))] += 1
    return out, filled


def register(registry: kopf.OperatorRegistry, kube: Kube, settings: Settings) -> None:
    autoscaler = Autoscaler(kube, settings)

    @kopf.timer(
        GROUP,
        VERSION,
        "gpunodepools",
        interval=settings.autoscaling.interval_seconds / 2,
        idle=None,
        registry=registry,
        id="autoscale",
    )
    def autoscale(**_: Any) -> None:
        autoscaler.maybe_tick()

    kopf.on.cleanup(registry=registry, id="autoscaler-stop")(lambda **_: autoscaler.stop())

    def on_work(event: kopf.RawEvent, **_: Any) -> None:
        status = (event.get("object") or {}).get("status") or {}
        if int(status.get("unplacedReplicas") or 0) > 0 or status.get("phase") == "Pending":
            autoscaler.poke()

    for plural in ("inferencepools", "compressionjobs"):
        kopf.on.event(GROUP, VERSION, plural, registry=registry, id="autoscaler-poke")(on_work)
