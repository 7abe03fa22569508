"""Operator settings: one dataclass tree, every field defaulted, overridable from env and flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


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
    resync_seconds: float = field(default_factory=lambda: _env_float("GPUCOST_RESYNC_SECONDS", 30.0))
    """Every object is reconciled at least this often, so unplaced replicas retry without a retry storm."""


@dataclass(frozen=True)
class Settings:
    reconcile: Reconcile = field(default_factory=Reconcile)
    standalone: bool = True
    """One replica without kopf peering (the chart runs one replica with a Recreate strategy)."""
    liveness_endpoint: str | None = None
