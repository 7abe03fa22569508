"""Applies one InferencePool's plan (``core.poolplan``) through the adapters: the pool
counterpart of the autoscaler's executor in this package.

Safe to apply again: pods are created by name (an existing one is a 409, not a second replica),
deletions of what is gone are no-ops, and the serving objects are server-side applied.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from gpucost import manifests
from gpucost.adapters import metrics
from gpucost.adapters.kube import Kube
from gpucost.api.inferencepool import InferencePoolSpec
from gpucost.api.nodepool import GPUNodePoolSpec
from gpucost.core import poolplan
from gpucost.core.placement import Placement
from gpucost.state.objects import OBJECTS

EVENT_PLACEMENTS = 20
"""Placements named in one Placed Event (an Event message stays well under its 1 kB limit)."""


def apply_pool_plan(
    kube: Kube,
    body: dict[str, Any],
    spec: InferencePoolSpec,
    decision: poolplan.PoolPlan,
    node_pools: Mapping[str, GPUNodePoolSpec],
    logger: logging.Logger | logging.LoggerAdapter,
) -> None:
    """Deletions first (a rollout frees the GPU its old replica held), then the new replicas,
    then the serving objects. A pod the API server refuses makes the plan ``invalid``, which the
    status then reports."""
    namespace = body["metadata"]["namespace"]
    for pod_name in decision.delete:
        kube.delete_pod(namespace, pod_name)
        logger.info("deleted replica pod %s", pod_name)
    for _ in decision.create:
        metrics.placements.labels("placed").inc()
    for _ in decision.unplaced:
        metrics.placements.labels("unplaced").inc()
    if decision.create and decision.rollout is not None:
        refused = _create_replicas(
            kube, body, spec, decision.rollout.update, decision.create, node_pools, logger
        )
        if refused and decision.invalid is None:
            decision.invalid = f"the API server refused the replica pod: {refused}"
    OBJECTS.sync(kube, decision.apply, decision.remove)


def _create_replicas(
    kube: Kube,
    body: dict[str, Any],
    spec: InferencePoolSpec,
    revision: str,
    placed: list[tuple[int, Placement]],
    node_pools: Mapping[str, GPUNodePoolSpec],
    logger: logging.Logger | logging.LoggerAdapter,
) -> str | None:
    """The pods of one reconcile's placements, created together; one Event names them all (an
    Event per replica was a third of a burst's API writes). The API server's reason when it
    refuses a pod as invalid (the template's fields are checked there), else None."""
    meta = body["metadata"]
    pods = [
        manifests.replica_pod(
            pool=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            spec=spec,
            replica=replica,
            revision=revision,
            placement=where,
            node_pool=node_pools[where.node],
        )
        for replica, where in placed
    ]
    results = kube.create_pods(pods)
    done = [
        f"replica {replica} ({pod['metadata']['name']}) on node {where.node} GPU "
        f"{','.join(map(str, where.gpu_indices))}, {where.memory_mib} MiB"
        for (replica, where), pod, created in zip(placed, pods, results)
        if created is True
    ]
    for line in done:
        logger.info("placed %s", line)
    if done:
        shown = "; ".join(done[:EVENT_PLACEMENTS])
        more = f"; and {len(done) - EVENT_PLACEMENTS} more" if len(done) > EVENT_PLACEMENTS else ""
        # kopf.info is gated by posting.level, which is WARNING so routine logs stay out of Events.
        kopf.event(body, type="Normal", reason="Placed", message=f"placed {shown}{more}")
    return next((r for r in results if isinstance(r, str)), None)
