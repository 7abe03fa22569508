"""CostBudget and ClusterCostBudget: account what the covered namespaces spend, alert once per
threshold per period, and mark the budget Exceeded so the workload handlers enforce it.

Enforcement is read from the budget's status by the InferencePool and CompressionJob handlers
(``enforcing``), not kept in memory: a restarted operator keeps capping from the first reconcile.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import kopf

from gpucost.adapters import metrics, webhook
from gpucost.adapters.kube import Kube
from gpucost.api import GROUP, VERSION
from gpucost.api.budget import (
    BudgetSpec,
    BudgetStatus,
    ClusterBudgetSpec,
    LabelSelector,
    Webhook,
    WebhookFormat,
    Window,
)
from gpucost.api.common import Condition, ConditionStatus, epoch, rfc3339, set_condition
from gpucost.core.budget import Period, Spend, charge, exceeded, percent, period_bounds, settle
from gpucost.settings import Settings
from gpucost.state.budgets import ref as _ref
from gpucost.state.status import fresh, spec_or_report, write_if_changed

log = logging.getLogger(__name__)

SPECS: dict[str, tuple[str, type[BudgetSpec]]] = {
    "costbudgets": ("CostBudget", BudgetSpec),
    "clustercostbudgets": ("ClusterCostBudget", ClusterBudgetSpec),
}
# A timer tick and a spec update of the same budget may run at once; both would fire a threshold.
_LOCK = threading.Lock()


def selector_string(selector: LabelSelector) -> str:
    """A LabelSelector as the API's label_selector query, so the API server does the matching."""
    parts = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for req in selector.match_expressions:
        values = ",".join(req.values)
        parts.append(
            {
                "In": f"{req.key} in ({values})",
                "NotIn": f"{req.key} notin ({values})",
                "Exists": req.key,
                "DoesNotExist": f"!{req.key}",
            }[req.operator]
        )
    return ",".join(parts)


def covered_namespaces(kube: Kube, body: dict[str, Any], spec: BudgetSpec) -> list[str]:
    if isinstance(spec, ClusterBudgetSpec):
        return kube.namespaces(selector_string(spec.namespace_selector))
    return [body["metadata"]["namespace"]]


def spend_rate(kube: Kube, namespaces: list[str]) -> float:
    """$/hour the covered workloads hold now, as their own statuses account it."""
    covered = set(namespaces)
    return sum(
        float((o.get("status") or {}).get("costPerHour") or 0.0)
        for o in kube.inference_pools() + kube.compression_jobs()
        if o["metadata"]["namespace"] in covered
    )


def _spend_of(window: Window | None) -> Spend | None:
    if window is None or (start := epoch(window.period_start)) is None:
        return None
    return Spend(
        start, window.spent, tuple(window.reached), tuple(window.notified), window.last_period_spent
    )


def _window(spend: Spend, limit: float) -> Window:
    return Window(
        limit=limit,
        period_start=rfc3339(spend.period_start),
        spent=round(spend.spent, 6),
        percent=round(percent(spend, limit), 2),
        reached=list(spend.reached),
        notified=list(spend.notified),
        last_period_spent=None
        if spend.last_period_spent is None
        else round(spend.last_period_spent, 6),
    )


def alert_body(fmt: WebhookFormat | str, alert: dict[str, Any]) -> Any:
    """Alertmanager's /api/v2/alerts takes a list of alerts that resolve at endsAt (the period's
    end: the alert clears when the budget resets); json is the plain record."""
    if WebhookFormat(fmt) is WebhookFormat.JSON:
        return alert
    labels = {
        "alertname": "GPUCostBudgetThreshold",
        "severity": "critical" if alert["threshold"] >= 100 else "warning",
        "budget_kind": alert["kind"],
        "budget": alert["name"],
        "window": alert["window"],
        "threshold": str(alert["threshold"]),
    }
    if alert["namespace"]:
        labels["namespace"] = alert["namespace"]
    return [
        {
            "labels": labels,
            "annotations": {
                "summary": alert["message"],
                "namespaces": ",".join(alert["namespaces"]),
            },
            "startsAt": alert["at"],
            "endsAt": alert["periodEnd"],
        }
    ]


def reconcile(kube: Kube, plural: str, body: dict[str, Any]) -> None:
    with _LOCK, metrics.reconciling(SPECS[plural][0]):
        current = fresh(kube, plural, body)
        if current is None:
            return
        _reconcile(kube, plural, current, time.time())


def _reconcile(kube: Kube, plural: str, body: dict[str, Any], now: float) -> None:
    kind, model = SPECS[plural]
    meta = body["metadata"]
    spec = spec_or_report(kube, plural, body, model)
    if spec is None:
        return
    old = BudgetStatus.model_validate(body.get("status") or {})
    tz = ZoneInfo(spec.time_zone)
    since = epoch(old.accounted_at)
    namespaces = covered_namespaces(kube, body, spec)
    rate = spend_rate(kube, namespaces)
    windows: dict[Period, tuple[Spend, float]] = {}
    alerts: list[dict[str, Any]] = []
    for period, limit, window in (
        (Period.DAILY, spec.daily, old.daily),
        (Period.MONTHLY, spec.monthly, old.monthly),
    ):
        if limit is None:
            continue
        spend = charge(_spend_of(window), period, old.cost_per_hour, since, now, tz)
        spend, fired = settle(spend, limit, spec.thresholds)
        end = period_bounds(period, now, tz)[1]
        for threshold in fired:
            message = (
                f"{kind} {_ref(meta)}: ${spend.spent:.2f} of the ${limit:.2f} {period.value} limit "
                f"({percent(spend, limit):.0f} %) reached the {threshold} % threshold"
            )
            kopf.event(
                body,
                type="Warning" if threshold >= 100 else "Normal",
                reason="BudgetExceeded" if threshold >= 100 else "BudgetThreshold",
                message=message,
            )
            log.info(message)
        alerts += [
            {
                "kind": kind,
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "namespaces": namespaces,
                "window": period.value,
                "threshold": t,
                "percent": round(percent(spend, limit), 2),
                "spent": round(spend.spent, 6),
                "limit": limit,
                "currency": "USD",
                "periodStart": rfc3339(spend.period_start),
                "periodEnd": rfc3339(end),
                "at": rfc3339(now),
                "message": f"{kind} {_ref(meta)} at {percent(spend, limit):.0f} % of its "
                f"{period.value} limit "
                f"(${spend.spent:.2f} of ${limit:.2f})",
            }
            for t in spend.reached
            if t not in spend.notified
        ]
        windows[period] = (spend, limit)
    conditions, windows = _notify(
        old.conditions, spec.webhook, alerts, windows, meta.get("generation")
    )
    conditions = _conditions(
        conditions, spec, windows, namespaces, rate, meta.get("generation"), tz, now
    )
    status = BudgetStatus(
        namespaces=namespaces,
        cost_per_hour=round(rate, 6),
        accounted_at=rfc3339(now),
        daily=_window(*windows[Period.DAILY]) if Period.DAILY in windows else None,
        monthly=_window(*windows[Period.MONTHLY]) if Period.MONTHLY in windows else None,
        observed_generation=meta.get("generation"),
        conditions=conditions,
    ).wire()
    for period in Period:
        status.setdefault(
            period.value, None
        )  # a limit taken out of the spec takes its window along
        spend_limit = windows.get(period)
        if spend_limit is None:
            metrics.forget_budget(kind, meta.get("namespace", ""), meta["name"], period.value)
        else:
            metrics.budget_spent.labels(
                kind, meta.get("namespace", ""), meta["name"], period.value
            ).set(spend_limit[0].spent)
            metrics.budget_limit.labels(
                kind, meta.get("namespace", ""), meta["name"], period.value
            ).set(spend_limit[1])
    write_if_changed(kube, plural, body, status)


def _notify(
    conditions: list[Condition],
    hook: Webhook | None,
    alerts: list[dict[str, Any]],
    windows: dict[Period, tuple[Spend, float]],
    generation: int | None,
) -> tuple[list[Condition], dict[Period, tuple[Spend, float]]]:
    """POST each threshold not yet accepted; one that fails is tried again on the next tick."""
    if hook is None:
        return [c for c in conditions if c.type != "WebhookDelivered"], windows
    error = None
    for alert in alerts:
        error = webhook.post(hook.url, alert_body(hook.format, alert))
        if error:
            log.warning("budget webhook failed, retried next tick: %s", error)
            break
        spend, limit = windows[Period(alert["window"])]
        windows[Period(alert["window"])] = (
            replace(spend, notified=(*spend.notified, alert["threshold"])),
            limit,
        )
    if error:
        return set_condition(
            conditions,
            type="WebhookDelivered",
            status=ConditionStatus.FALSE,
            reason="WebhookFailed",
            message=error,
            generation=generation,
        ), windows
    if alerts or not any(c.type == "WebhookDelivered" for c in conditions):
        conditions = set_condition(
            conditions,
            type="WebhookDelivered",
            status=ConditionStatus.TRUE,
            reason="Delivered",
            message=f"{len(alerts)} alerts accepted by {hook.url}"
            if alerts
            else "nothing to send yet",
            generation=generation,
        )
    return conditions, windows


def _conditions(
    conditions: list[Condition],
    spec: BudgetSpec,
    windows: dict[Period, tuple[Spend, float]],
    namespaces: list[str],
    rate: float,
    generation: int | None,
    tz: ZoneInfo,
    now: float,
) -> list[Condition]:
    conditions = set_condition(
        conditions,
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="Accounting",
        message=f"{len(namespaces)} namespaces spending ${rate:.2f}/h",
        generation=generation,
    )
    summary = "; ".join(
        f"{p.value} ${s.spent:.2f} of ${limit:.2f} ({percent(s, limit):.0f} %)"
        for p, (s, limit) in windows.items()
    )
    over = [p for p, (s, limit) in windows.items() if exceeded(s, limit)]
    if over:
        reset = datetime.fromtimestamp(max(period_bounds(p, now, tz)[1] for p in over), tz)
        actions = _actions(spec)
        acting = actions or "alerting only (no enforce)"
        message = f"{summary}; {acting} until {reset:%Y-%m-%d %H:%M} {spec.time_zone}"
        return set_condition(
            conditions,
            type="Exceeded",
            status=ConditionStatus.TRUE,
            reason="LimitReached",
            message=message,
            generation=generation,
        )
    return set_condition(
        conditions,
        type="Exceeded",
        status=ConditionStatus.FALSE,
        reason="WithinLimit",
        message=summary,
        generation=generation,
    )


def _actions(spec: BudgetSpec) -> str:
    if spec.enforce is None:
        return ""
    return " and ".join(
        text
        for on, text in (
            (spec.enforce.cap_inference_pools, "InferencePools capped at minReplicas"),
            (spec.enforce.suspend_compression_jobs, "new CompressionJobs suspended"),
        )
        if on
    )


def register(registry: kopf.OperatorRegistry, kube: Kube, settings: Settings) -> None:
    for plural in SPECS:
        resource = (GROUP, VERSION, plural)

        def on_budget(body: kopf.Body, plural: str = plural, **_: Any) -> None:
            reconcile(kube, plural, dict(body))

        for decorator in (kopf.on.create, kopf.on.resume):
            decorator(*resource, registry=registry, id="account")(on_budget)
        kopf.on.update(*resource, field="spec", registry=registry, id="account")(on_budget)
        kopf.timer(
            *resource,
            interval=settings.budgets.interval_seconds,
            idle=None,
            registry=registry,
            id="tick",
        )(on_budget)

        @kopf.on.delete(*resource, registry=registry, id="forget-metrics", optional=True)
        def on_delete(meta: kopf.Meta, plural: str = plural, **_: Any) -> None:
            for period in Period:
                metrics.forget_budget(
                    SPECS[plural][0], meta.get("namespace", ""), meta["name"], period.value
                )
