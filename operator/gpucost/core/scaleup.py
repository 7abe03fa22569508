"""Scale-up plan: the cheapest set of new nodes that holds the work nothing can hold now.

Pending work is first packed onto the capacity that exists or is already on its way (Ready nodes
with room, and nodes created but not Ready yet), so a batch is never provisioned twice. What is
left goes onto hypothetical new nodes one at a time, each time opening the pool whose node holds
the most work per dollar (greedy weighted set cover: within a log factor of the cheapest set, and
exact in the common one-pool-fits-all case). Non-interruptible asks only list on-demand capacity
types, so they never reach a spot pool; interruptible ones list both and land on spot because it
is cheaper per unit of work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from gpucost.core.inventory import Allocation, Ask, FreeMap, GPUNode
from gpucost.core.packing.policies import DEFAULT_POLICY
from gpucost.core.placement import Filled, NoFit, eligible, fits_ever, place, place_planned


@dataclass(frozen=True)
class Pending:
    """``count`` identical asks of one workload (an InferencePool's unplaced replicas, a pod)."""

    owner: str
    ask: Ask
    count: int = 1
    waking: bool = False
    """A pool waking from zero: requests wait at the gateway for it, so no batch window."""


@dataclass(frozen=True)
class Offer:
    """What one more node of a pool would be, and how many more the pool may add."""

    pool: str
    template: GPUNode
    headroom: int
    expected: float | None = None
    """The price with spot interruptions counted, where known."""

    @property
    def price(self) -> float:
        return self.template.price_per_hour

    @property
    def rank(self) -> float:
        """What choosing among pools compares: a useful node-hour's expected price."""
        return self.price if self.expected is None else self.expected


@dataclass(frozen=True)
class Slot:
    """One ask the plan put on a new node, on these GPUs."""

    owner: str
    gpu_indices: tuple[int, ...]


@dataclass(frozen=True)
class NewNode:
    pool: str
    slots: tuple[Slot, ...]


@dataclass
class ScaleUpPlan:
    launches: Counter[str] = field(default_factory=Counter)
    """New nodes per pool."""
    on_existing: Counter[str] = field(default_factory=Counter)
    """Asks per owner that fit on nodes that exist or are booting: no new node for them."""
    on_new: dict[str, Counter[str]] = field(default_factory=dict)
    """Per pool, asks per owner its new nodes are for (for the decision's Event)."""
    unfit: dict[str, str] = field(default_factory=dict)
    """Owner → why some of its asks fit on no new node."""
    new_nodes: list[NewNode] = field(default_factory=list)
    """Each new node and the asks the plan packed onto it, GPU by GPU: what the replicas are bound
    to when it boots, so what is bought is what was planned."""

    def cost_per_hour(self, offers: Sequence[Offer]) -> float:
        price = {o.pool: o.price for o in offers}
        return sum(price[p] * n for p, n in self.launches.items())


def _value(ask: Ask, whole_gpu_mib: int) -> int:
    """Work an ask represents, the same whichever pool holds it: a slice is its MiB; a whole GPU
    counts as the largest GPU offered, so the cheaper pool wins a whole-GPU ask on price alone."""
    return ask.memory_mib if ask.gpus is None else ask.gpus * whole_gpu_mib  # type: ignore[return-value]


def plan_scale_up(
    pending: Sequence[Pending],
    offers: Sequence[Offer],
    existing: Sequence[GPUNode] = (),
    held: Sequence[Allocation] = (),
    booting: Sequence[GPUNode] = (),
    policy: str = DEFAULT_POLICY,
    now: float = 0.0,
    filled: Mapping[str, Filled] | None = None,
) -> ScaleUpPlan:
    """``existing``: schedulable nodes with ``held`` allocations; ``booting``: nodes that will be
    schedulable soon (empty). A node reserved for other workloads (until ``now`` passes its
    reservation) holds none of an owner's asks. The plan never exceeds an offer's headroom.
    ``filled``: per owner, the planned slots its pods already fill (``place_planned``)."""
    plan = ScaleUpPlan()
    whole_gpu_mib = max((g.memory_mib for o in offers for g in o.template.gpus), default=1)
    # Identical asks of one owner are one group: once one of them does not fit somewhere, none of
    # the others does either, so a group costs one failed try per node, not one per ask.
    totals: Counter[tuple[str, Ask]] = Counter()
    for p in pending:
        totals[(p.owner, p.ask)] += p.count
    groups = sorted(totals.items(), key=lambda g: -_value(g[0][1], whole_gpu_mib))
    nodes = list(existing) + [replace(n, schedulable=True) for n in booting]
    free = FreeMap.of(nodes, list(held))
    left: list[tuple[str, Ask, int]] = []
    # As the InferencePool placer does: GPUs an earlier plan bought for the owner first; a node
    # whose slots still hold is closed to anything else.
    planned = [n for n in nodes if n.slots]
    for (owner, ask), count in groups:
        fitted = 0
        mine_filled = Counter((filled or {}).get(owner, {}))
        while fitted < count and place_planned(ask, planned, owner, free, mine_filled):
            fitted += 1
        mine = [n for n in nodes if n.open_to(owner, now) and eligible(ask, n) and not n.held(now)]
        while fitted < count:
            mine = [n for n in mine if _may_hold(ask, n, free)]
            if not mine or isinstance(place(ask, mine, free, policy), NoFit):
                break
            fitted += 1
        plan.on_existing[owner] += fitted
        if fitted < count:
            left.append((owner, ask, count - fitted))
    headroom = {o.pool: o.headroom for o in offers}
    opened: list[_NewNode] = []
    while left:
        best: tuple[float, float, _NewNode, list[tuple[str, Ask, int]]] | None = None
        for offer in offers:
            if headroom[offer.pool] <= 0:
                continue
            node = replace(offer.template, name=f"<new {offer.pool} node {len(opened)}>")
            new = _NewNode(offer, node, FreeMap.of([node], []))
            rest = new.fill(left, policy)
            if not new.holds:
                continue
            key = (offer.rank / sum(_value(a, whole_gpu_mib) for _, a in new.holds), offer.rank)
            if best is None or key < best[:2]:
                best = (*key, new, rest)
        if best is None:
            break
        new, left = best[2], best[3]
        headroom[new.offer.pool] -= 1
        opened.append(new)
    for new in _drop_redundant(opened, policy):
        plan.launches[new.offer.pool] += 1
        plan.on_new.setdefault(new.offer.pool, Counter()).update(owner for owner, _ in new.holds)
        plan.new_nodes.append(NewNode(new.offer.pool, tuple(new.slots)))
    for owner, ask, _ in left:
        plan.unfit.setdefault(owner, _why_unfit(ask, offers, headroom))
    return plan


@dataclass
class _NewNode:
    offer: Offer
    node: GPUNode
    free: FreeMap
    holds: list[tuple[str, Ask]] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)

    def fill(self, groups: list[tuple[str, Ask, int]], policy: str) -> list[tuple[str, Ask, int]]:
        """Pack groups of asks (largest first) onto this node; returns what did not fit."""
        rest: list[tuple[str, Ask, int]] = []
        for owner, ask, count in groups:
            taken = 0
            while taken < count and self.take(owner, ask, policy):
                taken += 1
            if taken < count:
                rest.append((owner, ask, count - taken))
        return rest

    def take(self, owner: str, ask: Ask, policy: str) -> bool:
        node = self.node
        if not (eligible(ask, node) and fits_ever(ask, node) and _may_hold(ask, node, self.free)):
            return False
        placed = place(ask, [node], self.free, policy)
        if isinstance(placed, NoFit):
            return False
        self.holds.append((owner, ask))
        self.slots.append(Slot(owner, placed.gpu_indices))
        return True


def _drop_redundant(opened: list[_NewNode], policy: str) -> list[_NewNode]:
    """Greedy can open a cheap node for small asks before a big node with room to spare for them;
    drop any new node (dearest first) whose asks all fit in the others' leftover room."""
    # By node name: a kept node is a copy after a drop, so identity can't tell a candidate apart.
    kept = {n.node.name: n for n in opened}
    for name in sorted(kept, key=lambda k: -kept[k].offer.rank):
        cand = kept[name]
        trial = {
            k: _NewNode(n.offer, n.node, FreeMap(dict(n.free.free)), list(n.holds), list(n.slots))
            for k, n in kept.items()
            if k != name
        }
        if all(
            any(n.take(owner, ask, policy) for n in trial.values()) for owner, ask in cand.holds
        ):
            kept = trial
    return list(kept.values())


def _may_hold(ask: Ask, node: GPUNode, free: FreeMap) -> bool:
    """A quick necessary condition for ``place``: enough free memory on one GPU, or enough
    untouched GPUs, so the packing policy is only asked about nodes that might fit."""
    room = [free.free.get((node.name, g.index), 0) for g in node.gpus]
    if ask.gpus is not None or not node.shared:
        need = ask.gpus or 1
        return sum(r == g.memory_mib for r, g in zip(room, node.gpus)) >= need
    return max(room, default=0) >= (ask.memory_mib or 0)


def _why_unfit(ask: Ask, offers: Sequence[Offer], headroom: dict[str, int]) -> str:
    could = [o.pool for o in offers if eligible(ask, o.template) and fits_ever(ask, o.template)]
    if not could:
        return "no GPUNodePool's node can ever hold it (capacity type, GPU model, size or selector)"
    return f"every pool that could hold it is at maxNodes ({', '.join(sorted(could))})"
