"""Thin kopf glue: kwargs → API models → core decisions → adapters.

Handlers are registered on an explicit registry (``build_registry``) so tests and embedding can
build their own; nothing registers itself at import time.
"""

from __future__ import annotations

import kopf

from gpucost.adapters.kube import Kube
from gpucost.handlers import (
    autoscaler,
    budget,
    compressionjob,
    demand,
    inferencepool,
    nodepool,
    tokens,
)
from gpucost.settings import Settings


def build_registry(kube: Kube, settings: Settings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    # kopf's own login handlers sit on its default registry; ours needs one explicitly.
    kopf.on.login(registry=registry)(kopf.login_via_client)
    inferencepool.register(registry, kube, settings)
    nodepool.register(registry, kube, settings)
    autoscaler.register(registry, kube, settings)
    budget.register(registry, kube, settings)
    compressionjob.register(registry, kube, settings)
    demand.register(registry, kube, settings)
    tokens.register(registry, kube, settings)
    return registry
