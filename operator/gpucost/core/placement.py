"""The operator's side of placement: which nodes an ask may use, and the packing core's choice.

Eligibility (capacity type, pool, model, schedulable) is the operator's business; choosing among
eligible GPUs is the packing core's, with the policy named in the settings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gpucost.core.inventory import Ask, FreeMap, GPUNode
from gpucost.core.packing.cluster import PackingState
from gpucost.core.packing.frag import ShapeDistribution
from gpucost.core.packing.model import NodeSpec, Task
from gpucost.core.packing.policies import DEFAULT_POLICY, make_policy

UNTRACKED = 1 << 40
"""CPU/host memory the operator leaves to kube-scheduler: large enough never to bind."""


@dataclass(frozen=True)
class Placement:
    node: str
    gpu_indices: tuple[int, ...]
    gpu_uuids: tuple[str, ...]
    memory_mib: int
    """Total MiB reserved over its GPUs (a whole GPU reserves all of its memory)."""


@dataclass(frozen=True)
class NoFit:
    reason: str
    """``Unschedulable`` (no room now) or ``NoMatchingGPU`` (no node could ever hold it)."""
    message: str
    missing_mib: int
    """How much more free memory the best candidate GPU (or GPU set) would have needed."""


def eligible(ask: Ask, node: GPUNode) -> bool:
    return (
        node.schedulable
        and ask.takes(node.capacity_type)
        and (ask.pools is None or node.pool in ask.pools)
        and (not ask.gpu_models or all(g.model in ask.gpu_models for g in node.gpus))
    )


def fits_ever(ask: Ask, node: GPUNode) -> bool:
    """Could this node hold the ask if it were empty?"""
    if ask.gpus is not None:
        return len(node.gpus) >= ask.gpus
    return any(g.memory_mib >= (ask.memory_mib or 0) for g in node.gpus)


def task_of(ask: Ask) -> Task:
    models = frozenset(ask.gpu_models) or None
    if ask.gpus is not None:
        return Task(gpus=ask.gpus, models=models)
    return Task(gpus=1, gpu_mib=ask.memory_mib, models=models)


def demand_shapes(asks: list[Ask]) -> ShapeDistribution:
    """The policy's estimate of the work to come: the asks in the cluster now, placed and
    pending."""
    return ShapeDistribution.of([task_of(a) for a in asks])


def _node_spec(node: GPUNode) -> NodeSpec:
    """One unit = one MiB; CPU and host memory are left to kube-scheduler, so they never bind
    here."""
    return NodeSpec(
        name=node.name,
        cpu_milli=UNTRACKED,
        memory_mib=UNTRACKED,
        gpus=len(node.gpus),
        model=node.gpus[0].model if node.gpus else None,
        gpu_units=min((g.memory_mib for g in node.gpus), default=0),
        mib_per_unit=1.0,
        whole_only=not node.shared,
        price_per_hour=node.price_per_hour,
    )


def _shortfall(ask: Ask, nodes: list[GPUNode], free: FreeMap) -> int:
    """MiB more that the best candidate GPU (or set of GPUs) would have needed."""
    if ask.gpus is None:
        usable = [
            free.free[(n.name, g.index)]
            for n in nodes
            for g in n.gpus
            if n.shared or free.free[(n.name, g.index)] == g.memory_mib
        ]
        return max((ask.memory_mib or 0) - max(usable, default=0), 0)
    per_gpu = max((g.memory_mib for n in nodes for g in n.gpus), default=0)
    most = max(
        (
            sum(g.memory_mib for g in n.gpus if free.free[(n.name, g.index)] == g.memory_mib)
            for n in nodes
        ),
        default=0,
    )
    return max(ask.gpus * per_gpu - most, 0)


def _describe(ask: Ask) -> str:
    if ask.gpus is not None:
        return f"{ask.gpus} whole GPU(s) on one node"
    return f"a {ask.memory_mib} MiB slice of one GPU"


def place(
    ask: Ask,
    nodes: list[GPUNode],
    free: FreeMap,
    policy: str = DEFAULT_POLICY,
    shapes: ShapeDistribution | None = None,
) -> Placement | NoFit:
    """Place one ask with the named packing policy, updating ``free``; never over-commits a GPU."""
    candidates = [n for n in nodes if eligible(ask, n)]
    if not any(fits_ever(ask, n) for n in candidates):
        return NoFit(
            "NoMatchingGPU",
            f"no schedulable GPU node of capacity types {sorted(ask.capacity_types)}"
            + (f", GPU models {sorted(ask.gpu_models)}" if ask.gpu_models else "")
            + f" can hold {_describe(ask)}",
            ask.memory_mib or 0,
        )
    cluster = PackingState([_node_spec(n) for n in candidates])
    for i, node in enumerate(candidates):
        for j, gpu in enumerate(node.gpus):
            cluster.reserve(
                i, j, max(cluster.nodes[i].gpu_units - free.free[(node.name, gpu.index)], 0)
            )
    chosen = make_policy(policy, shapes or demand_shapes([ask])).choose(cluster, task_of(ask))
    if chosen is None:
        short = _shortfall(ask, candidates, free)
        return NoFit(
            "Unschedulable", f"no GPU has room for {_describe(ask)}; short {short} MiB", short
        )
    node = candidates[chosen.node]
    gpus = [node.gpus[j] for j in chosen.gpus]
    # A whole GPU (or any GPU of a whole-only pool) is reserved with all of its memory.
    takes = [
        g.memory_mib if (ask.gpus is not None or not node.shared) else chosen.units for g in gpus
    ]
    for g, take in zip(gpus, takes):
        free.take(node.name, g.index, take)
    return Placement(
        node.name, tuple(g.index for g in gpus), tuple(g.uuid for g in gpus if g.uuid), sum(takes)
    )


def place_all(
    ask: Ask, count: int, nodes: list[GPUNode], free: FreeMap, policy: str = DEFAULT_POLICY
) -> list[Placement | NoFit]:
    """Place ``count`` identical asks one after another, each seeing the ones before it."""
    return [place(ask, nodes, free, policy) for _ in range(count)]


Filled = Counter[tuple[str, tuple[int, ...]]]
"""An owner's pods per (node, GPU indices): the planned slots they already fill."""


def place_planned(
    ask: Ask, nodes: list[GPUNode], owner: str, free: FreeMap, filled: Filled
) -> Placement | None:
    """The ask on GPUs a scale-up plan gave this owner on a node it bought, if one is still open:
    the plan packed every owner of the batch together, so following it buys no node twice
    (placing pool by pool with the cluster-wide policy would spread over other pools' GPUs).
    A slot the owner's pods already fill is not offered again, even where its GPU has room left:
    that room is another owner's slot. ``filled`` counts the new placement too."""
    for node in nodes:
        if not eligible(ask, node):
            continue
        seen: Filled = Counter()
        for gpus in node.slots_of(owner):
            seen[(node.name, gpus)] += 1
            if seen[(node.name, gpus)] <= filled[(node.name, gpus)]:
                continue
            by_index = {g.index: g for g in node.gpus}
            if len(gpus) != (ask.gpus or 1) or any(i not in by_index for i in gpus):
                continue  # a slot from another shape of this owner (its spec changed since)
            whole = ask.gpus is not None or not node.shared
            takes = [by_index[i].memory_mib if whole else ask.memory_mib or 0 for i in gpus]
            if all(free.free.get((node.name, i), 0) >= t for i, t in zip(gpus, takes)):
                for i, t in zip(gpus, takes):
                    free.take(node.name, i, t)
                filled[(node.name, gpus)] += 1
                uuids = tuple(u for i in gpus if (u := by_index[i].uuid))
                return Placement(node.name, gpus, uuids, sum(takes))
    return None
