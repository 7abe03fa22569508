"""Which replicas hold an InferencePool's on-demand base (``spec.onDemandBase``).

The base is counted by where replicas run, not by their ordinals: a rolling update names its new
pods by the lowest free ordinals, so after one the pool may have no replica 0 at all, and a rule
"ordinals below N" would leave the whole pool on spot. Counting the update revision's replicas on
nodes other than spot is what SkyServe does for its base, and it needs no state beyond the pods.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

from gpucost.api.common import CapacityType
from gpucost.core.inventory import GPUNode
from gpucost.core.snapshot import PlacedPod


def base_nodes(nodes: Iterable[GPUNode]) -> frozenset[str]:
    """The nodes a base replica may run on: every one that is not spot."""
    return frozenset(n.name for n in nodes if n.capacity_type != CapacityType.SPOT.value)


def base_pods(
    pods: Iterable[PlacedPod], on_base: Set[str], revision: str, size: int
) -> list[PlacedPod]:
    """The live pods of ``revision`` that make up the base: on a node of ``on_base``
    (``base_nodes``), lowest ordinals first, at most ``size``."""
    held = [
        p
        for p in pods
        if not p.terminal and not p.deleting and p.revision == revision and p.node in on_base
    ]
    return sorted(held, key=lambda p: p.replica)[:size]


def missing(pods: Iterable[PlacedPod], on_base: Set[str], revision: str, size: int) -> int:
    """Base replicas still to place (each on-demand only)."""
    return size - len(base_pods(pods, on_base, revision, size))
