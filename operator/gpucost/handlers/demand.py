"""Replicas that follow the load: each InferencePool with spec.autoscaling is looked at on a
timer and whenever a gateway's demand annotation on it changes; ``core.demand`` decides, and the
replica count is written through the scale subresource, as an HPA writes it."""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from pydantic import ValidationError

from gpucost import names
from gpucost.adapters.kube import Kube
from gpucost.adapters.prometheus import PoolMetric, vllm
from gpucost.api import GROUP, VERSION
from gpucost.api.autoscaling import AutoscalingStatus, Metric
from gpucost.api.common import epoch, rfc3339
from gpucost.api.inferencepool import InferencePoolSpec, InferencePoolStatus
from gpucost.core import demand
from gpucost.settings import Settings

PLURAL = "inferencepools"
VLLM_METRICS = {
    Metric.QUEUE_DEPTH.value: "num_requests_waiting",
    Metric.KV_CACHE_USAGE.value: "kv_cache_usage_perc",
}
"""Series labelled namespace and pool (the chart's PodMonitor relabels the replicas' pod label
gpucost.dev/inferencepool to pool)."""
log = logging.getLogger(__name__)


def conflicting_hpa(kube: Kube, namespace: str, name: str) -> str | None:
    """An HPA (a KEDA ScaledObject makes one) that scales this pool too."""
    for hpa in kube.autoscalers(namespace):
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") == "InferencePool" and ref.get("name") == name:
            return hpa["metadata"]["name"]
    return None


def load_of(
    spec: InferencePoolSpec,
    meta: dict[str, Any],
    gateways: demand.GatewayLoad,
    prom: PoolMetric | None,
) -> float | None:
    scaling = spec.autoscaling
    assert scaling is not None
    if scaling.metric == Metric.CONCURRENCY.value:
        return float(gateways.in_flight + gateways.held)
    if prom is None:
        return None
    labels = f'namespace="{meta["namespace"]}",pool="{meta["name"]}"'
    query = scaling.query or f"sum({vllm(VLLM_METRICS[scaling.metric], labels)})"
    return prom.value(query)


def look(kube: Kube, namespace: str, name: str, prom: PoolMetric | None) -> None:
    """Decides from the pool as it is now, not from the event that woke the look: a busy
    operator's watch lags, and a count decided from an old body undoes the last decision (or
    reads a busy pool's gateways as gone). Both writes are conditional on the resourceVersion
    read, so of two looks racing only one lands."""
    body = kube.get_inference_pool(namespace, name)
    if body is None:
        return
    meta = body["metadata"]
    try:
        spec = InferencePoolSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return  # the pool's own handler reports it
    if spec.autoscaling is None or meta.get("deletionTimestamp"):
        return
    now = time.time()
    pool_status = InferencePoolStatus.model_validate(body.get("status") or {})
    old = pool_status.autoscaling or AutoscalingStatus()
    per_replica = (
        round(pool_status.cost_per_hour / pool_status.replicas, 6)
        if pool_status.replicas
        else old.replica_cost_per_hour
    )
    hpa = conflicting_hpa(kube, namespace, name)
    if hpa is not None:
        reason = f"HorizontalPodAutoscaler {hpa} also scales this pool: left to it"
        if old.reason != reason:
            kopf.warn(body, reason="AutoscalingConflict", message=reason)
            kube.patch_status(PLURAL, name, {"autoscaling": {"reason": reason}}, namespace)
        return
    gateways = demand.gateway_load(
        meta.get("annotations") or {}, names.DEMAND_ANNOTATION_PREFIX, now
    )
    # quiet since the last request, or since the pool was made or the operator last grew it
    # (a wake): a scale-down is not activity, so it does not put off the scale to zero
    grew = max((float(t) for t, d in old.events if d > 0), default=0.0)
    since = max(
        gateways.last_request_at or 0.0,
        grew,
        epoch(meta.get("creationTimestamp")) or 0.0,
    )
    history = demand.History(
        tuple((float(t), int(n)) for t, n in old.recommendations),
        tuple((float(t), int(d)) for t, d in old.events),
    )
    observation = demand.Observation(
        now=now,
        replicas=spec.replicas,
        load=load_of(spec, meta, gateways, prom),
        held=gateways.held,
        last_request_at=since or None,
    )
    decision = demand.decide(observation, demand.target_of(spec.autoscaling), history)
    version: str | None = meta["resourceVersion"]
    if decision.replicas != spec.replicas:
        version = kube.scale_inference_pool(
            namespace, name, decision.replicas, meta["resourceVersion"]
        )
        if version is None:
            return  # it changed since it was read: the next look decides from what it is now
        kind = "ScaledUp" if decision.replicas > spec.replicas else "ScaledDown"
        message = f"{spec.replicas} → {decision.replicas} replicas: {decision.reason}"
        log.info("[%s/%s] %s", namespace, name, message)
        kopf.event(body, type="Normal", reason=kind, message=message)
    status = AutoscalingStatus(
        desired_replicas=decision.replicas,
        reason=decision.reason,
        load=observation.load,
        last_request_time=rfc3339(gateways.last_request_at) if gateways.last_request_at else None,
        last_scale_time=rfc3339(now) if decision.replicas != spec.replicas else old.last_scale_time,
        recommendations=[[round(t, 3), n] for t, n in decision.history.recommendations],
        events=[[round(t, 3), d] for t, d in decision.history.events],
        last_cold_start_seconds=gateways.cold_start_s or old.last_cold_start_seconds,
        replica_cost_per_hour=per_replica,
    ).wire()
    if status != old.wire():
        kube.patch_status(PLURAL, name, {"autoscaling": status}, namespace, version)


def register(registry: kopf.OperatorRegistry, kube: Kube, settings: Settings) -> None:
    resource = (GROUP, VERSION, PLURAL)
    url = settings.utilization.prometheus_url
    prom = PoolMetric(url) if url else None
    seen: dict[str, str] = {}

    def scaled(spec: kopf.Spec, **_: Any) -> bool:
        return bool(spec.get("autoscaling"))

    @kopf.timer(
        *resource, interval=settings.demand.interval_seconds, idle=None, when=scaled,
        registry=registry, id="demand",
    )  # fmt: skip
    def on_timer(namespace: str, name: str, **_: Any) -> None:
        look(kube, namespace, name, prom)

    @kopf.on.event(*resource, registry=registry, when=scaled)
    def on_demand(event: kopf.RawEvent, **_: Any) -> None:
        """A gateway's annotation changed (a held request above all): look now, not at the timer.
        Raw events keep no handler state on the object, so they cost no write of their own."""
        meta = (event.get("object") or {}).get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        marks = {
            k: v
            for k, v in (meta.get("annotations") or {}).items()
            if k.startswith(names.DEMAND_ANNOTATION_PREFIX)
        }
        if event.get("type") == "DELETED":
            seen.pop(key, None)
            return
        if seen.get(key) != str(sorted(marks.items())):
            seen[key] = str(sorted(marks.items()))
            look(kube, meta["namespace"], meta["name"], prom)
