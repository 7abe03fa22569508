"""Consolidation: remove a busy node whose work fits in the room the other nodes have.

Idle removal only takes empty nodes; a fleet of half-used nodes costs as much as a full one.
Like Karpenter's single-node delete consolidation, one node at a time: the busy node whose every
GPU pod the operator placed (so its ask is known and it will be re-placed by its InferencePool)
and whose pods all fit, with the configured packing policy, in the free room of the other Ready
nodes. The dearest such node goes first (the largest saving). A node must stay a candidate for
its pool's ``consolidateAfter`` before it is drained, so a passing dip in load does not move
work around; minNodes, the disruption budget and do-not-disrupt pods hold as for idle removal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gpucost.core.inventory import Allocation, Ask, FreeMap, GPUNode
from gpucost.core.placement import NoFit, place
from gpucost.core.scaledown import Disruption, NodeState, PoolLimits

CONSOLIDATION = "Consolidation"


@dataclass
class ConsolidationPlan:
    since: dict[str, float] = field(default_factory=dict)
    """Nodes whose work fits elsewhere now, with when that started (carried to the next look)."""
    drain: Disruption | None = None


def _fits_elsewhere(asks: Sequence[Ask], others: list[GPUNode], allocations: Sequence[Allocation], policy: str) -> bool:
    free = FreeMap.of(others, list(allocations))
    big_first = sorted(asks, key=lambda a: (a.gpus or 0, a.memory_mib or 0), reverse=True)
    return all(not isinstance(place(a, others, free, policy), NoFit) for a in big_first)


def plan_consolidation(
    nodes: Sequence[GPUNode],
    states: Mapping[str, NodeState],
    allocations: Sequence[Allocation],
    movable: Mapping[str, Sequence[Ask]],
    limits: Mapping[str, PoolLimits],
    since: Mapping[str, float],
    policy: str,
    now: float,
) -> ConsolidationPlan:
    """``movable``: per node, the asks of the GPU pods on it that the operator placed."""
    settled = {n.name: n for n in nodes if n.name in states and states[n.name].ready and n.schedulable
               and states[n.name].disruption is None and not states[n.name].interrupted}
    staying = Counter(s.pool for s in states.values() if s.disruption is None and not s.interrupted)
    draining = Counter(s.pool for s in states.values() if s.disruption is not None or s.interrupted)
    plan = ConsolidationPlan()
    ranked: list[tuple[float, int, str]] = []
    for name, node in settled.items():
        state, pool = states[name], limits.get(node.pool)
        asks = movable.get(name, ())
        gpu_pods = sum(p.uses_gpu and not p.daemon for p in state.pods)
        if (
            pool is None
            or pool.consolidate_after_s is None
            or not state.busy
            or gpu_pods != len(asks)  # a GPU pod the operator did not place can't be re-placed by it
            or state.keepers
            or not node.open_to("", now)  # still held for the work it was launched for
            or node.price_per_hour <= 0
        ):
            continue
        others = [n for other, n in settled.items() if other != name]
        if not _fits_elsewhere(asks, others, allocations, policy):
            continue
        plan.since[name] = since.get(name, now)
        if now - plan.since[name] < pool.consolidate_after_s:
            continue
        if staying[node.pool] <= pool.min_nodes or draining[node.pool] >= pool.disruption_budget:
            continue
        ranked.append((-node.price_per_hour, len(asks), name))
    if ranked:
        _, moves, name = min(ranked)
        node = settled[name]
        plan.drain = Disruption(
            name, node.pool, CONSOLIDATION,
            f"its {moves} GPU pod(s) fit on the other nodes (for {now - plan.since[name]:.0f}s)",
        )
    return plan
