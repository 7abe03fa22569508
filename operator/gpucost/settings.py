"""Operator settings: one dataclass tree, every field defaulted, overridable from env and flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gpucost.core.packing.policies import DEFAULT_POLICY, POLICIES


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class Reconcile:
    resync_seconds: float = field(
        default_factory=lambda: _env_float("GPUCOST_RESYNC_SECONDS", 30.0)
    )
    """Every object is reconciled at least this often, so unplaced replicas retry without a retry
    storm."""
    cost_write_seconds: float = field(
        default_factory=lambda: _env_float("GPUCOST_COST_WRITE_SECONDS", 60.0)
    )
    """While a cost rate holds, the accumulated cost in a status is brought up to date this
    often."""


def _env_policy() -> str:
    raw = os.environ.get("GPUCOST_PLACEMENT_POLICY", DEFAULT_POLICY)
    if raw not in POLICIES:
        raise SystemExit(f"GPUCOST_PLACEMENT_POLICY={raw!r} is not one of {', '.join(POLICIES)}")
    return raw


@dataclass(frozen=True)
class PlacementSettings:
    policy: str = field(default_factory=_env_policy)
    """Packing policy for new replicas: gpucost (default), fgd, bestfit or firstfit."""


@dataclass(frozen=True)
class Autoscaling:
    interval_seconds: float = field(
        default_factory=lambda: _env_float("GPUCOST_AUTOSCALE_INTERVAL", 5.0)
    )
    """How often the autoscaler looks at the whole cluster."""
    batch_idle_seconds: float = 1.0
    batch_max_seconds: float = 10.0
    """Pending work is provisioned for once it has stopped changing for batch_idle, or after
    batch_max at the latest (Karpenter's defaults): 100 new replicas make one decision."""
    reservation_seconds: float = field(
        default_factory=lambda: _env_float("GPUCOST_RESERVATION_SECONDS", 60.0)
    )
    """A launched node is held for the work it was bought for until it has booted and this long
    more."""
    launch_cooldown_seconds: float = field(
        default_factory=lambda: _env_float("GPUCOST_LAUNCH_COOLDOWN", 300.0)
    )
    """A pool whose provider failed to launch is left out this long (spot capacity exhausted)."""


@dataclass(frozen=True)
class Demand:
    interval_seconds: float = field(
        default_factory=lambda: _env_float("GPUCOST_DEMAND_INTERVAL", 5.0)
    )
    """How often a pool with spec.autoscaling is looked at besides its gateways' signals."""


@dataclass(frozen=True)
class Budgets:
    interval_seconds: float = field(
        default_factory=lambda: _env_float("GPUCOST_BUDGET_INTERVAL", 30.0)
    )
    """How often budgets account spend; a threshold fires at most this late."""


DCGM_UTILIZATION = "max by (Hostname) (max_over_time(DCGM_FI_DEV_GPU_UTIL[{window}]))"


@dataclass(frozen=True)
class Utilization:
    """Where GPU utilization comes from for utilization-based idleness; no URL = allocation only."""

    prometheus_url: str | None = field(
        default_factory=lambda: os.environ.get("GPUCOST_PROMETHEUS_URL") or None
    )
    query: str = field(
        default_factory=lambda: os.environ.get("GPUCOST_UTILIZATION_QUERY", DCGM_UTILIZATION)
    )
    """PromQL giving each node's highest GPU utilization (%) over ``{window}`` (the pool's
    idleTimeout)."""
    node_label: str = field(
        default_factory=lambda: os.environ.get("GPUCOST_UTILIZATION_NODE_LABEL", "Hostname")
    )
    """The result label that holds the node name (DCGM exporter: Hostname)."""


@dataclass(frozen=True)
class Tokens:
    """$ per million tokens per InferencePool (needs GPUCOST_PROMETHEUS_URL)."""

    window_seconds: float = field(
        default_factory=lambda: _env_float("GPUCOST_TOKEN_WINDOW_SECONDS", 3600.0)
    )
    interval_seconds: float = field(
        default_factory=lambda: _env_float("GPUCOST_TOKEN_INTERVAL", 60.0)
    )


@dataclass(frozen=True)
class Prices:
    """Where a GPUNodePool without pricePerHour gets its price (see core.prices for formats)."""

    sources: tuple[str, ...] = field(
        default_factory=lambda: tuple(
            s.strip() for s in os.environ.get("GPUCOST_PRICE_SOURCES", "").split(",") if s.strip()
        )
    )
    """Each a file path, an http(s) URL or ``configmap:NAMESPACE/NAME`` (every key a table)."""
    refresh_seconds: float = field(
        default_factory=lambda: _env_float("GPUCOST_PRICE_REFRESH_SECONDS", 3600.0)
    )
    region: str = field(default_factory=lambda: os.environ.get("GPUCOST_REGION", "us-east-1"))
    max_age_seconds: float = field(
        default_factory=lambda: _env_float("GPUCOST_PRICE_MAX_AGE_SECONDS", 7 * 86400.0)
    )
    """A quote older than this is still used, and flagged stale on the pool."""


@dataclass(frozen=True)
class Settings:
    prices: Prices = field(default_factory=Prices)
    tokens: Tokens = field(default_factory=Tokens)
    reconcile: Reconcile = field(default_factory=Reconcile)
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    utilization: Utilization = field(default_factory=Utilization)
    budgets: Budgets = field(default_factory=Budgets)
    demand: Demand = field(default_factory=Demand)
    standalone: bool = True
    """One replica without kopf peering (the chart runs one replica with a Recreate strategy)."""
    liveness_endpoint: str | None = None
