"""Consolidation: remove a busy node whose work fits elsewhere, or on a cheaper new node.

Idle removal only takes empty nodes; a fleet of half-used nodes costs as much as a full one, and
an 8-GPU node kept alive by one small slice costs twenty times the small node that would hold it.
Like Karpenter's single-node consolidation, one node at a time: a busy node whose every GPU pod
the operator placed (so its ask is known and its InferencePool re-places it) is planned away with
the scale-up planner itself: its pods go onto the free room of the other Ready nodes first, and
what does not fit onto the cheapest new nodes. If that needs no new node (delete) or new nodes
that cost less per hour than it does (replace), it is a candidate; the largest saving goes first.
A node must stay a candidate for its pool's ``consolidateAfter`` before it is drained, so a
passing dip in load does not move work around; minNodes, the disruption budget and
do-not-disrupt pods hold as for idle removal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gpucost.core.inventory import Allocation, Ask, FreeMap, GPUNode
from gpucost.core.scaledown import Disruption, NodeState, PoolLimits
from gpucost.core.scaleup import Offer, Pending, ScaleUpPlan, plan_scale_up

CONSOLIDATION = "Consolidation"


@dataclass
class ConsolidationPlan:
    since: dict[str, float] = field(default_factory=dict)
    """Nodes whose work fits elsewhere now, with when that started (carried to the next look)."""
    drain: Disruption | None = None
    replacement: ScaleUpPlan | None = None
    """New nodes to launch for the drained node's pods (none for a plain delete)."""


def plan_consolidation(
    nodes: Sequence[GPUNode],
    states: Mapping[str, NodeState],
    allocations: Sequence[Allocation],
    movable: Mapping[str, Sequence[tuple[str, Ask]]],
    limits: Mapping[str, PoolLimits],
    since: Mapping[str, float],
    policy: str,
    now: float,
    offers: Sequence[Offer] = (),
) -> ConsolidationPlan:
    """``movable``: per node, (owner, ask) of the GPU pods on it that the operator placed;
    ``offers``: the new nodes a replacement may use (none: delete only)."""
    # schedulable is core.refusal's one rule: Ready, not cordoned, drained, reclaimed or tainted.
    settled = {n.name: n for n in nodes if n.name in states and n.schedulable}
    staying = Counter(s.pool for s in states.values() if s.disruption is None and not s.interrupted)
    draining = Counter(s.pool for s in states.values() if s.disruption is not None or s.interrupted)
    free = FreeMap.of(list(settled.values()), list(allocations))
    free_on: Counter[str] = Counter()
    for (node_name, _), mib in free.free.items():
        free_on[node_name] += mib
    used_on = Counter({a.node: 0 for a in allocations})
    for a in allocations:
        used_on[a.node] += a.memory_mib
    # An empty node is on its way out (idle removal) unless its pool keeps it at minNodes: moving
    # work onto it would keep it, and what the move saves would be less than what it costs.
    receives = {
        name: states[name].busy
        or staying[n.pool] <= (limits[n.pool].min_nodes if n.pool in limits else 0)
        for name, n in settled.items()
    }
    room = sum(mib for node_name, mib in free_on.items() if receives.get(node_name))
    price = {o.pool: o.rank for o in offers}  # what a new node adds: nothing if reserved
    plan = ConsolidationPlan()
    ranked: list[tuple[float, int, str, ScaleUpPlan]] = []
    for name, node in settled.items():
        state, pool = states[name], limits.get(node.pool)
        asks = movable.get(name, ())
        gpu_pods = sum(p.uses_gpu and not p.daemon for p in state.pods)
        if (
            pool is None
            or pool.consolidate_after_s is None
            or not state.busy
            or gpu_pods
            != len(asks)  # a GPU pod the operator did not place can't be re-placed by it
            or state.keepers
            or not node.open_to("", now)  # still held for the work it was launched for
            or node.price_per_hour <= 0
        ):
            continue
        cheapest_new = min(
            (
                o.rank
                for o in offers
                if o.headroom > 0 and all(a.takes(o.template.capacity_type) for _, a in asks)
            ),
            default=float("inf"),
        )
        if used_on[name] > room - free_on[name] and cheapest_new >= node.price_per_hour:
            continue  # neither room elsewhere nor a cheaper node: skip the planning
        others = [n for other, n in settled.items() if other != name and receives[other]]
        moved = plan_scale_up(
            [Pending(owner, ask) for owner, ask in asks],
            offers,
            others,
            allocations,
            (),
            policy,
            now,
        )
        saving = node.price_per_hour - sum(price[p] * k for p, k in moved.launches.items())
        if moved.unfit or saving <= 1e-9:
            continue
        plan.since[name] = since.get(name, now)
        if now - plan.since[name] < pool.consolidate_after_s:
            continue
        if staying[node.pool] <= pool.min_nodes or draining[node.pool] >= pool.disruption_budget:
            continue
        ranked.append((-saving, len(asks), name, moved))
    if ranked:
        saving, moves, name, moved = min(ranked, key=lambda r: r[:3])
        node = settled[name]
        new = ", ".join(f"{k} new {p} node(s)" for p, k in sorted(moved.launches.items()))
        plan.drain = Disruption(
            name,
            node.pool,
            CONSOLIDATION,
            f"its {moves} GPU pod(s) fit on the other nodes{' and ' + new if new else ''}"
            f" (for {now - plan.since[name]:.0f}s), saving ${-saving:.2f}/h",
        )
        plan.replacement = moved if moved.launches else None
    return plan
