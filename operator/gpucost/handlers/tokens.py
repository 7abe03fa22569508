"""Each InferencePool's $ per million generated tokens, in its status and on /metrics.

One Prometheus read per interval serves every pool (``TokenUsage`` caches it); each pool's timer
writes only ``status.tokens``, a field no other handler sets, so it never races the pool's own
status writes.
"""

from __future__ import annotations

import time
from typing import Any

import kopf

from gpucost.adapters import metrics
from gpucost.adapters.kube import Kube
from gpucost.adapters.prometheus import TokenUsage
from gpucost.api import GROUP, VERSION
from gpucost.api.common import rfc3339
from gpucost.api.inferencepool import TokenCost
from gpucost.core.tokens import Usage
from gpucost.settings import Settings

PLURAL = "inferencepools"


def token_cost(usage: Usage, window_seconds: float, now: float) -> dict[str, Any]:
    per_million = usage.usd_per_million
    return TokenCost(
        window_seconds=int(window_seconds),
        generated_tokens=round(usage.tokens, 1),
        cost=round(usage.cost, 6),
        usd_per_million_tokens=round(per_million, 6) if per_million is not None else None,
        source=usage.source,
        measured_at=rfc3339(now),
    ).wire()


def register(registry: kopf.OperatorRegistry, kube: Kube, settings: Settings) -> None:
    url = settings.utilization.prometheus_url
    if not url:
        return
    window = settings.tokens.window_seconds
    source = TokenUsage(url, window, settings.tokens.interval_seconds)
    resource = (GROUP, VERSION, PLURAL)

    @kopf.timer(
        *resource, interval=settings.tokens.interval_seconds, idle=None, registry=registry,
        id="tokens",
    )  # fmt: skip
    def on_timer(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> None:
        now = time.time()
        usage = (source.usage(now) or {}).get((namespace, name))
        if usage is None:
            return  # nothing counted for it (yet), or Prometheus did not answer: keep the last
        model = spec.get("servedModelName") or name
        metrics.generated_tokens.labels(namespace, name, model).set(usage.tokens)
        if usage.usd_per_million is not None:
            metrics.usd_per_million_tokens.labels(namespace, name, model).set(usage.usd_per_million)
        old = dict(status.get("tokens") or {})
        new = token_cost(usage, window, now)
        if {k: v for k, v in old.items() if k != "measuredAt"} != {
            k: v for k, v in new.items() if k != "measuredAt"
        }:
            kube.patch_status(PLURAL, name, {"tokens": new}, namespace)

    @kopf.on.delete(*resource, registry=registry, id="forget-token-metrics", optional=True)
    def on_delete(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> None:
        model = spec.get("servedModelName") or name
        gauges = (metrics.generated_tokens, metrics.usd_per_million_tokens)
        metrics.remove_series(gauges, namespace, name, model)
