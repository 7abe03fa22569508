"""Which replica pods to create and which to delete, StatefulSet-style by ordinal.

Ordinals make the decision idempotent: a retried reconcile creates the same pod names, so a
lost response can never double a replica.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucost.core.snapshot import PlacedPod


@dataclass(frozen=True)
class ReplicaPlan:
    create: tuple[int, ...]
    """Ordinals with no live pod, lowest first."""
    delete: tuple[str, ...]
    """Pods past the desired count, or finished pods that must be replaced."""


def plan(desired: int, pods: list[PlacedPod]) -> ReplicaPlan:
    live = {p.replica for p in pods if not p.terminal}
    delete = [
        p.name
        for p in pods
        if not p.deleting and (p.replica >= desired or p.terminal or p.replica < 0)
    ]
    # A finished pod must be gone before its ordinal is reused: same name.
    blocked = {p.replica for p in pods if p.terminal or p.deleting}
    create = [i for i in range(desired) if i not in live and i not in blocked]
    return ReplicaPlan(tuple(create), tuple(sorted(delete)))
