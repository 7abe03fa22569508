"""InferencePool.spec.autoscaling: replicas that follow the load, down to zero when idle."""

from __future__ import annotations

import enum

from pydantic import ConfigDict, Field, model_validator

from gpucost.api.common import Duration, Wire


class Metric(str, enum.Enum):
    """What a replica's target is in."""

    CONCURRENCY = "concurrency"  # in-flight requests, counted by the gateway
    QUEUE_DEPTH = "queueDepth"  # vllm:num_requests_waiting
    KV_CACHE_USAGE = "kvCacheUsage"  # vllm:kv_cache_usage_perc, 0-1
    PROMQL = "promql"  # the query's value, summed over the pool


class PolicyType(str, enum.Enum):
    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(str, enum.Enum):
    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


class ScalingPolicy(Wire):
    """At most ``value`` replicas (Pods) or ``value`` % of them (Percent) per period."""

    type: PolicyType = Field(description="Pods or Percent.")
    value: int = Field(ge=1, le=1000, description="Replicas, or percent of the replicas.")
    period_seconds: int = Field(ge=1, le=1800, description="The window the change is counted in.")


class ScalingRules(Wire):
    """HPA's scaling rules for one direction."""

    stabilization_window_seconds: int | None = Field(
        None,
        ge=0,
        le=3600,
        description="Recommendations over this window are taken into account: the lowest for "
        "scaling up, the highest for scaling down (defaults: 0 up, 300 down).",
    )
    select_policy: SelectPolicy = Field(
        SelectPolicy.MAX, description="Which policy wins (Max, Min), or Disabled."
    )
    policies: list[ScalingPolicy] = Field(
        default_factory=list,
        description="Rate limits (defaults: up 100 % or 4 replicas per 15 s, down 1 per 60 s).",
    )


class Behavior(Wire):
    """How fast replicas follow the load (fast up, slow down by default)."""

    scale_up: ScalingRules | None = Field(None, description="Rules for adding replicas.")
    scale_down: ScalingRules | None = Field(None, description="Rules for removing replicas.")


class Autoscaling(Wire):
    """The operator owns spec.replicas (through the scale subresource, as an HPA does) and sets
    it from the load; a user's HPA or ScaledObject on the same pool is reported, not fought."""

    min_replicas: int = Field(
        1, ge=0, le=1000, description="Floor; 0 lets an idle pool scale to zero."
    )
    max_replicas: int = Field(ge=1, le=1000, description="Ceiling.")
    metric: Metric = Field(Metric.CONCURRENCY, description="What the target is in.")
    target: float = Field(gt=0, description="The metric per replica the pool is sized for.")
    query: str | None = Field(
        None, max_length=4096, description="PromQL for metric promql; its value, summed."
    )
    scale_to_zero_after: Duration = Field(
        "10m", description="No request for this long and minReplicas 0: down to zero."
    )
    hold_timeout: Duration = Field(
        "5m",
        description="How long the gateway holds a request for a pool with no Ready replica "
        "(a cold start) before answering 503 with Retry-After.",
    )
    hold_queue: int = Field(
        1000, ge=0, le=100000, description="Requests the gateway holds per pool at most."
    )
    ttft_objective: Duration | None = Field(
        None,
        description="The time to first token the pool is meant to meet. While the gateway "
        "holds requests (a cold start, or a burst past maxConcurrency), a freed slot goes to "
        "the oldest request that can still meet it, before those already past it: a backlog "
        "then costs its own requests' latency, not every later request's too. Unset: oldest "
        "first.",
    )
    behavior: Behavior = Field(
        default_factory=Behavior, json_schema_extra={"default": {}}, description=Behavior.__doc__
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "autoscaling.minReplicas must not exceed maxReplicas",
                },
                {
                    "rule": "self.metric != 'promql' || has(self.query)",
                    "message": "metric promql needs a query",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed maxReplicas")
        if self.metric == Metric.PROMQL.value and not self.query:
            raise ValueError("metric promql needs a query")
        return self


class AutoscalingStatus(Wire):
    """The last decision and what the windows need across a restart."""

    desired_replicas: int | None = Field(None, ge=0, description="What the load asks for.")
    reason: str | None = Field(None, description="Why, in words.")
    load: float | None = Field(None, description="The metric summed over the pool.")
    last_request_time: str | None = Field(None, description="RFC 3339, as the gateways saw.")
    last_scale_time: str | None = Field(None, description="RFC 3339: when replicas last changed.")
    recommendations: list[list[float]] = Field(
        default_factory=list,
        description="[epoch seconds, replicas]: each change of the recommendation in the windows.",
    )
    events: list[list[float]] = Field(
        default_factory=list, description="[epoch seconds, replicas added or removed]."
    )
    last_cold_start_seconds: float | None = Field(
        None, description="First held request to its first token, the last time from zero."
    )
    replica_cost_per_hour: float | None = Field(
        None,
        ge=0,
        description="USD per hour one replica costs (its GPU memory's share of its node): what "
        "each warm replica (minReplicas above 0) costs to avoid a cold start.",
    )
