"""CostBudget and ClusterCostBudget: a spending limit per day and/or month, with alerts and actions.

Two kinds, as Kyverno's Policy/ClusterPolicy: a namespaced budget covers its own namespace (a
team can own it without cluster rights); a cluster budget covers the namespaces a selector picks.
"""

from __future__ import annotations

import enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, field_validator, model_validator

from gpucost.api.common import Condition, Wire


class WebhookFormat(str, enum.Enum):
    ALERTMANAGER = "alertmanager"
    JSON = "json"


class Webhook(Wire):
    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="POSTed once per threshold crossed per period; retried on the next tick until "
        "it answers 2xx.",
    )
    format: WebhookFormat = Field(
        WebhookFormat.JSON,
        description="alertmanager: a list of alerts for Alertmanager's /api/v2/alerts; json: one "
        "plain object.",
    )


class Enforcement(Wire):
    suspend_compression_jobs: bool = Field(
        True,
        description="At 100 %, CompressionJobs that have not started stay Suspended until the "
        "period resets.",
    )
    cap_inference_pools: bool = Field(
        True,
        description="At 100 %, InferencePools run at most spec.minReplicas (0 when unset) until "
        "the period resets.",
    )


class BudgetSpec(Wire):
    daily: float | None = Field(
        None, gt=0, description="USD limit per day (from local midnight in timeZone)."
    )
    monthly: float | None = Field(
        None, gt=0, description="USD limit per calendar month in timeZone."
    )
    thresholds: list[int] = Field(
        default=[50, 80, 100],
        min_length=1,
        max_length=20,
        description="Percent of a limit at which to alert (Event, condition, webhook), each once "
        "per period.",
    )
    time_zone: str = Field(
        "UTC", min_length=1, max_length=64, description="IANA time zone the periods reset in."
    )
    webhook: Webhook | None = None
    enforce: Enforcement | None = Field(
        None, description="What happens at 100 % of a limit; unset alerts only."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.daily) || has(self.monthly)",
                    "message": "set daily, monthly or both",
                },
                {
                    "rule": "self.thresholds.all(t, t >= 1 && t <= 1000)",
                    "message": "thresholds are percentages between 1 and 1000",
                },
            ]
        }
    )

    @field_validator("thresholds")
    @classmethod
    def _percentages(cls, value: list[int]) -> list[int]:
        if any(not 1 <= t <= 1000 for t in value):
            raise ValueError("thresholds are percentages between 1 and 1000")
        return sorted(set(value))

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        # The schema can't know the zone database: an unknown zone is a status condition, not a
        # crash.
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)"
            ) from None
        return value

    @model_validator(mode="after")
    def _a_limit(self) -> "BudgetSpec":
        if self.daily is None and self.monthly is None:
            raise ValueError("set daily, monthly or both")
        return self


class SelectorOperator(str, enum.Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class SelectorRequirement(Wire):
    key: str = Field(min_length=1, max_length=317)
    operator: SelectorOperator
    values: list[str] = Field(default_factory=list)

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.operator in ['Exists', 'DoesNotExist'] ? (!has(self.values) || "
                    "size(self.values) == 0)"
                    " : (has(self.values) && size(self.values) > 0)",
                    "message": "In and NotIn need values; Exists and DoesNotExist take none",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _values(self) -> "SelectorRequirement":
        if (self.operator in {"Exists", "DoesNotExist"}) == bool(self.values):
            raise ValueError("In and NotIn need values; Exists and DoesNotExist take none")
        return self


class LabelSelector(Wire):
    """metav1.LabelSelector; empty selects every namespace."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[SelectorRequirement] = Field(default_factory=list)


class ClusterBudgetSpec(BudgetSpec):
    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector,
        json_schema_extra={"default": {}},
        description="Namespaces whose workloads count against this budget; empty is all of them.",
    )


class Window(Wire):
    """One period's spend (daily or monthly), as a restarted operator continues it."""

    limit: float = Field(ge=0)
    period_start: str = Field(description="RFC 3339 start of the current period.")
    spent: float = Field(0.0, ge=0, description="USD spent in this period.")
    percent: float = Field(0.0, ge=0)
    reached: list[int] = Field(
        default_factory=list, description="Thresholds crossed this period (Event posted)."
    )
    notified: list[int] = Field(
        default_factory=list, description="Thresholds the webhook has accepted this period."
    )
    last_period_spent: float | None = Field(
        None, ge=0, description="USD spent in the period before."
    )


class BudgetStatus(Wire):
    namespaces: list[str] = Field(default_factory=list, description="Namespaces counted.")
    cost_per_hour: float = Field(
        0.0, ge=0, description="USD per hour of their workloads right now."
    )
    accounted_at: str | None = Field(
        None, description="RFC 3339 time the windows are accounted up to."
    )
    daily: Window | None = None
    monthly: Window | None = None
    observed_generation: int | None = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)


class CostBudget(Wire):
    spec: BudgetSpec
    status: BudgetStatus | None = None


class ClusterCostBudget(Wire):
    spec: ClusterBudgetSpec
    status: BudgetStatus | None = None
