"""The autoscaler's decision: a snapshot of the cluster in, commands and the next batch window out.

In the style of Karpenter's ``Solve() → Results`` and its disruption ``Command``s: what the cluster
is now (nodes with their pods, pending work, each pool's limits and offer) plus the intent earlier
ticks recorded on the API objects (idle-since, consolidatable-since and replacing marks on Nodes, a
pool's launch cool-down) goes in; the commands that move it towards the plan come out. Nothing here
does I/O: the operator's executor, the trace replay in ``bench/`` and the unit tests all run this
one function, with the clock they choose.

One look, four decisions, in this order:

1. Idle marks and scale-down (``core.scaledown``): cordon and drain nodes idle past their timeout
   or being reclaimed. A drained node is terminated only once no pod but DaemonSet pods is left on
   it, so no workload ever loses its node under it.
2. Consolidation (``core.consolidate``), only while the cluster is calm (nothing pending, booting
   or draining): a busy node whose pods fit elsewhere for the pool's ``consolidateAfter`` is
drained;
   one that needs a cheaper new node first is marked *replacing* before that node is launched, and
   drained on the first calm look after it booted, so moved replicas never wait for a boot.
3. Scale-up (``core.scaleup``): pending work, batched until it stops changing, packed onto the
   room that exists or is on its way first, then onto the cheapest new nodes. Each new node carries
   the plan's GPU slots for its work, so the replicas land as the plan packed them.
4. A failed launch takes the pool out for a cool-down (written on the pool, so a restart keeps it)
   and rolls back a replacement it was for; the next plan falls back to the next cheapest pool.

The batch window is the one piece of intent kept only in memory: a restart re-opens it, which
delays a scale-up by at most ``batch_idle`` and buys nothing twice (launched nodes are in flight).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from gpucost.api.common import duration_seconds
from gpucost.api.nodepool import ConsolidationPolicy, GPUNodePoolSpec
from gpucost.core.commitment import pool_marginal
from gpucost.core.consolidate import CONSOLIDATION, plan_consolidation
from gpucost.core.inventory import Allocation, Ask, GPUNode
from gpucost.core.placement import Filled
from gpucost.core.scaledown import (
    INTERRUPTED,
    UNDERUTILIZED,
    Disruption,
    NodeState,
    PoolLimits,
    plan_scale_down,
)
from gpucost.core.scaleup import NewNode, Offer, Pending, ScaleUpPlan, plan_scale_up
from gpucost.core.snapshot import pool_template_node


@dataclass(frozen=True)
class PoolView:
    """One GPUNodePool as the planner needs it."""

    name: str
    template: GPUNode
    """An empty new node of the pool."""
    limits: PoolLimits
    max_nodes: int
    nodes: int
    """Nodes labelled for the pool now."""
    joining: int | None
    """Launched but not yet Nodes; None when no provider can drive the pool (left out of
    scale-up)."""
    cooldown_until: float = 0.0
    boot_seconds: float = 0.0
    expected_price: float | None = None
    """The price with spot interruptions counted, when known: new nodes are chosen by it."""

    @property
    def price(self) -> float:
        return self.template.price_per_hour


def pool_view(
    name: str,
    spec: GPUNodePoolSpec,
    nodes: int,
    joining: int | None,
    cooldown_until: float = 0.0,
    expected_price: float | None = None,
    now: float = 0.0,
) -> PoolView:
    """A pool's spec as the planner reads it (the operator and the trace replay alike). Capacity
    paid for in advance (reserved nodes, a commitment) ranks at what a new node adds to the bill,
    and reserved nodes are kept however idle: removing one saves nothing."""
    consolidate = (
        duration_seconds(spec.consolidate_after)
        if spec.consolidation_policy == ConsolidationPolicy.WHEN_EMPTY_OR_UNDERUTILIZED.value
        else None
    )
    reserved = spec.reserved_nodes
    marginal = pool_marginal(spec, nodes + (joining or 0), spec.price_per_hour or 0.0, now)
    if marginal is not None:
        expected_price = marginal
    limits = PoolLimits(
        max(spec.min_nodes, reserved or 0),
        duration_seconds(spec.idle_timeout),
        spec.disruption_budget,
        consolidate,
        spec.idle_utilization_pct,
    )
    return PoolView(
        name,
        pool_template_node(name, spec),
        limits,
        min(spec.max_nodes, reserved) if reserved is not None else spec.max_nodes,
        nodes,
        joining,
        cooldown_until,
        duration_seconds(spec.provider.boot_delay),
        expected_price,
    )


@dataclass(frozen=True)
class Timing:
    batch_idle: float = 1.0
    batch_max: float = 10.0
    reservation: float = 60.0
    """A new node is held for its plan's work until it has booted and this long more."""
    cooldown: float = 300.0


@dataclass(frozen=True)
class Snapshot:
    now: float
    pools: Mapping[str, PoolView]
    nodes: Sequence[GPUNode]
    """GPU nodes with their inventory (scheduling verdict, reservation, slots)."""
    states: Sequence[NodeState]
    """Every node of a known pool, with the pods on it and its marks."""
    held: Sequence[Allocation]
    pending: Sequence[Pending]
    movable: Mapping[str, Sequence[tuple[str, Ask]]]
    """Per node, (owner, ask) of the operator's GPU pods there (what consolidation may move)."""
    policy: str
    filled: Mapping[str, Filled] = field(default_factory=dict)
    """Per owner, the planned slots its pods already fill."""


@dataclass(frozen=True)
class Batch:
    """Karpenter-style batching: act once the pending set has stopped changing for a moment."""

    key: frozenset[tuple[str, int]] = frozenset()
    first: float | None = None
    changed: float = 0.0

    def advance(self, pending: Sequence[Pending], now: float, timing: Timing) -> tuple[bool, Batch]:
        """(provision now?, the window after this look)."""
        key = frozenset((p.owner, p.count) for p in pending)
        if not key:
            return False, Batch()
        window = self
        if key != self.key:
            window = Batch(key, self.first if self.first is not None else now, now)
        first = window.first if window.first is not None else now
        waking = any(p.waking for p in pending)
        ready = (
            waking or now - window.changed >= timing.batch_idle or now - first >= timing.batch_max
        )
        return ready, (replace(window, first=None) if ready else window)

    def due(self, timing: Timing) -> float | None:
        """When a look would find this window ready."""
        if not self.key:
            return None
        first = self.first if self.first is not None else self.changed
        return min(self.changed + timing.batch_idle, first + timing.batch_max)


# Commands: each names its target, so the executor can apply it again after a crash.


@dataclass(frozen=True)
class MarkIdle:
    node: str
    since: float | None


@dataclass(frozen=True)
class MarkConsolidatable:
    node: str
    since: float | None


@dataclass(frozen=True)
class MarkReplacing:
    node: str
    since: float | None
    message: str = ""


@dataclass(frozen=True)
class Cooldown:
    pool: str
    until: float


@dataclass(frozen=True)
class Disrupt:
    """Cordon the node and mark why; the drain evicts its pods and terminates it when empty.
    Clears a replacing mark, whose replacement is what lets the drain start."""

    disruption: Disruption
    price: float

    @property
    def warning(self) -> bool:
        return self.disruption.reason in (INTERRUPTED, UNDERUTILIZED)


@dataclass(frozen=True)
class Evict:
    node: str
    pool: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Terminate:
    node: str
    pool: str
    reason: str
    price: float


@dataclass(frozen=True)
class Launch:
    pool: str
    nodes: tuple[NewNode, ...]
    """One per new node, with the GPU slots the plan packed for its work."""
    reserved_until: float
    """Held for the slots' owners until then at least (its boot delay and ``hold`` from now)."""
    hold: float
    """And this long after it turns Ready."""
    price: float
    on_failure: tuple[Command, ...]
    """Applied when the provider refuses: the pool's cool-down, and the rollback of what the
    launch was part of."""

    @property
    def count(self) -> int:
        return len(self.nodes)

    def owners(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes:
            for s in n.slots:
                out[s.owner] = out.get(s.owner, 0) + 1
        return dict(sorted(out.items()))


@dataclass(frozen=True)
class Keep:
    """A node idle past its timeout that stays, and why (said once per change, not per look)."""

    node: str
    why: str


Command = (
    MarkIdle
    | MarkConsolidatable
    | MarkReplacing
    | Cooldown
    | Disrupt
    | Evict
    | Terminate
    | Launch
    | Keep
)


@dataclass
class Decision:
    commands: list[Command] = field(default_factory=list)
    batch: Batch = field(default_factory=Batch)
    scale_up: ScaleUpPlan | None = None
    """The scale-up plan of this look, when the batch was provisioned."""
    wake_at: float | None = None
    """The earliest time a look would decide something new without any change (a batch window
    closing, an idle or consolidateAfter timeout running out); None when only a change would."""


def plan(snap: Snapshot, batch: Batch, timing: Timing, consolidate: bool = True) -> Decision:
    """``consolidate``: whether this look may start a consolidation (the operator's every look
    may; a trace replay looks at its own pace, as Karpenter's disruption loop runs apart from
    provisioning)."""
    now = snap.now
    out = Decision(batch=batch)
    limits = {name: p.limits for name, p in snap.pools.items()}
    down = plan_scale_down(snap.states, limits, now, {p.owner for p in snap.pending})
    out.commands += [MarkIdle(node, since) for node, since in down.idle_since.items()]
    out.commands += [Keep(node, why) for node, why in down.kept.items()]
    out.commands += [Disrupt(d, snap.pools[d.pool].price) for d in down.drain]
    offers = _offers(snap)
    replacing = [s for s in snap.states if s.replacing is not None]
    calm = not (
        snap.pending
        or down.drain
        or any(p.joining for p in snap.pools.values())
        or any(s.booting or s.disruption for s in snap.states)
    )
    if not calm:  # work moves only while nothing else changes
        out.commands += [
            MarkConsolidatable(s.name, None)
            for s in snap.states
            if s.consolidatable_since is not None
        ]
    elif replacing:  # their replacements have booted: drain them now (which clears the mark)
        for s in replacing:
            message = s.replacing.message if s.replacing else ""
            if s.disruption is None and not s.interrupted and s.pool in snap.pools:
                d = Disruption(s.name, s.pool, CONSOLIDATION, message)
                out.commands.append(Disrupt(d, snap.pools[s.pool].price))
            else:  # already going another way: the mark has nothing left to do
                out.commands.append(MarkReplacing(s.name, None))
    elif consolidate:
        out.commands += _consolidate(snap, offers, timing)
    out.commands += _drain(snap)
    ready, out.batch = batch.advance(snap.pending, now, timing)
    if ready:
        out.scale_up = _scale_up(snap, offers)
        out.commands += _launches(snap, out.scale_up.new_nodes, timing)
    marks = {
        (type(c), c.node): c.since
        for c in out.commands
        if isinstance(c, MarkIdle | MarkConsolidatable)
    }
    out.wake_at = _wake_at(snap, out.batch, timing, marks)
    return out


def _offers(snap: Snapshot) -> list[Offer]:
    """A new node of each pool a provider can launch now (not cooling down), within maxNodes."""
    return [
        Offer(name, p.template, p.max_nodes - p.nodes - (p.joining or 0), p.expected_price)
        for name, p in snap.pools.items()
        if p.joining is not None and p.cooldown_until <= snap.now
    ]


def _consolidate(snap: Snapshot, offers: list[Offer], timing: Timing) -> list[Command]:
    now = snap.now
    since = {
        s.name: s.consolidatable_since for s in snap.states if s.consolidatable_since is not None
    }
    result = plan_consolidation(
        snap.nodes,
        {s.name: s for s in snap.states},
        snap.held,
        snap.movable,
        {name: p.limits for name, p in snap.pools.items()},
        since,
        snap.policy,
        now,
        offers,
    )
    out: list[Command] = [MarkConsolidatable(n, None) for n in since if n not in result.since]
    out += [MarkConsolidatable(n, t) for n, t in result.since.items() if since.get(n) != t]
    if result.drain is None:
        return out
    if result.replacement is None:
        return [*out, Disrupt(result.drain, snap.pools[result.drain.pool].price)]
    # Replace: record the intent on the node first, then launch; the drain follows on the first
    # calm look after the new nodes booted. A refused launch rolls the mark back.
    node = result.drain.node
    out.append(MarkReplacing(node, now, result.drain.message))
    rollback = (MarkReplacing(node, None),)
    return out + _launches(snap, result.replacement.new_nodes, timing, rollback)


def _launches(
    snap: Snapshot, new_nodes: Sequence[NewNode], timing: Timing, rollback: tuple[Command, ...] = ()
) -> list[Command]:
    out: list[Command] = []
    for name in sorted({n.pool for n in new_nodes}):
        pool = snap.pools[name]
        mine = tuple(n for n in new_nodes if n.pool == name)
        out.append(
            Launch(
                name,
                mine,
                snap.now + pool.boot_seconds + timing.reservation,
                timing.reservation,
                pool.price,
                (Cooldown(name, snap.now + timing.cooldown), *rollback),
            )
        )
    return out


def _drain(snap: Snapshot) -> list[Command]:
    """Evict what is left on nodes being removed; terminate a node once only DaemonSet pods
    remain."""
    out: list[Command] = []
    for s in snap.states:
        if s.disruption is None:
            continue
        left = [p for p in s.pods if not p.daemon]
        out += [Evict(s.name, s.pool, p.namespace, p.name) for p in left if not p.deleting]
        if not left and s.pool in snap.pools:
            out.append(Terminate(s.name, s.pool, s.disruption, snap.pools[s.pool].price))
    return out


def _scale_up(snap: Snapshot, offers: list[Offer]) -> ScaleUpPlan:
    booting_names = {s.name for s in snap.states if s.booting}
    existing = [n for n in snap.nodes if n.schedulable]
    booting = [n for n in snap.nodes if n.name in booting_names]
    for name, p in snap.pools.items():
        booting += [
            replace(p.template, name=f"<{name} node joining #{i}>") for i in range(p.joining or 0)
        ]
    return plan_scale_up(
        snap.pending, offers, existing, snap.held, booting, snap.policy, snap.now, snap.filled
    )


def _wake_at(
    snap: Snapshot, batch: Batch, timing: Timing, marks: Mapping[tuple[type, str], float | None]
) -> float | None:
    """``marks``: the idle and consolidatable marks this look sets (newer than the snapshot's)."""
    times = [t for t in (batch.due(timing),) if t is not None]
    for s in snap.states:
        limits = snap.pools[s.pool].limits if s.pool in snap.pools else None
        if limits is None:
            continue
        idle = marks.get((MarkIdle, s.name), s.idle_since)
        if idle is not None:
            times.append(idle + limits.idle_timeout_s)
        fits = marks.get((MarkConsolidatable, s.name), s.consolidatable_since)
        if fits is not None and limits.consolidate_after_s is not None:
            times.append(fits + limits.consolidate_after_s)
    later = [t for t in times if t > snap.now]
    return min(later) if later else None
