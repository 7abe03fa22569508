"""Scale-down plan: which GPU nodes to take away, and which must stay.

A GPU node is idle when no pod on it uses a GPU (DaemonSet pods never count, like the cluster
autoscaler), or, where its pool sets ``idleUtilizationPercent`` and Prometheus knows, when its
GPUs stayed under that utilization for the whole ``idleTimeout`` although pods hold them. An idle
node is removed once it has been idle for its pool's ``idleTimeout``, never
below ``minNodes`` and at most ``disruptionBudget`` nodes of a pool at a time. A node whose
remaining pods must not be disrupted (``gpucost.dev/do-not-disrupt``,
``karpenter.sh/do-not-disrupt``,
``cluster-autoscaler.kubernetes.io/safe-to-evict: "false"``) stays. A spot node being reclaimed is
drained at once, whatever the budget: it is going away either way and its work needs a new home.
A node bought for work is not idle while that work still waits for a place (and at most until
its reservation ends): held longer, it only keeps an empty node after its work landed elsewhere.

Idle-since times live on the Node (an annotation), so a restarted operator keeps counting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

IDLE = "Idle"
UNDERUTILIZED = "Underutilized"
INTERRUPTED = "SpotInterruption"


@dataclass(frozen=True)
class NodePod:
    namespace: str
    name: str
    uses_gpu: bool
    daemon: bool = False
    keep: str | None = None
    """Why this pod may not be disrupted (the annotation that says so), else None."""
    deleting: bool = False
    """Already being deleted (evicted): a drain waits for it instead of evicting it again."""


@dataclass(frozen=True)
class Replacing:
    """A replace-then-drain in progress, recorded on the node before the replacement launches."""

    since: float
    message: str


@dataclass(frozen=True)
class NodeState:
    name: str
    pool: str
    ready: bool
    pods: tuple[NodePod, ...] = ()
    idle_since: float | None = None
    """Epoch seconds from the node's annotation; None when it was not idle at the last look."""
    disruption: str | None = None
    """Why the node is being drained (set when a drain starts); None when it is not."""
    interrupted: bool = False
    """Tainted or conditioned as being reclaimed by the cloud."""
    utilization_pct: float | None = None
    """Highest GPU utilization over the pool's idleTimeout (Prometheus); None when unknown."""
    consolidatable_since: float | None = None
    """Since when its work has fit elsewhere (a Node annotation, so consolidateAfter survives a
    restart); None when it did not at the last look."""
    replacing: Replacing | None = None
    """Consolidation launched this node's replacement; it is drained once that has booted."""
    reserved_until: float = 0.0
    """Held for the work it was bought for until then: not idle before its replicas land."""
    reserved_for: frozenset[str] = frozenset()
    """Whose work it was bought for; the hold ends early once none of them waits for a place."""

    @property
    def booting(self) -> bool:
        """Created, not Ready yet, and not on its way out: capacity in flight."""
        return not self.ready and self.disruption is None and not self.interrupted

    @property
    def busy(self) -> bool:
        return any(p.uses_gpu and not p.daemon for p in self.pods)

    def held(self, now: float, waiting: Collection[str]) -> bool:
        """Still held for the work it was bought for. Once that work has landed (here or
        elsewhere) or is gone, the rest of the hold would only keep an empty node."""
        if now >= self.reserved_until:
            return False
        return not self.reserved_for or any(o in waiting for o in self.reserved_for)

    @property
    def keepers(self) -> list[NodePod]:
        return [p for p in self.pods if p.keep and not p.daemon]


@dataclass(frozen=True)
class PoolLimits:
    min_nodes: int
    idle_timeout_s: float
    disruption_budget: int
    consolidate_after_s: float | None = None
    """How long a busy node's work must have fit elsewhere before it is consolidated; None never."""
    idle_utilization_pct: float | None = None
    """A busy node whose GPUs stayed under this utilization for idleTimeout is idle too; None
    off."""


@dataclass(frozen=True)
class Disruption:
    node: str
    pool: str
    reason: str
    message: str


@dataclass
class ScaleDownPlan:
    idle_since: dict[str, float | None] = field(default_factory=dict)
    """Nodes whose idle-since mark changes: the new value (None clears it)."""
    drain: list[Disruption] = field(default_factory=list)
    """Nodes to cordon and drain now; the drain deletes them once empty."""
    kept: dict[str, str] = field(default_factory=dict)
    """Nodes idle past their timeout that stay, and why."""


def plan_scale_down(
    nodes: Sequence[NodeState],
    pools: dict[str, PoolLimits],
    now: float,
    waiting: Collection[str] = (),
) -> ScaleDownPlan:
    """``waiting``: the owners whose work still waits for a place (what keeps a hold)."""
    plan = ScaleDownPlan()
    for n in nodes:
        idle = n.ready and not n.busy and not n.held(now, waiting)
        if idle and n.idle_since is None:
            plan.idle_since[n.name] = now
        elif not idle and n.idle_since is not None:
            plan.idle_since[n.name] = None
    for n in nodes:
        if n.interrupted and n.disruption is None:
            plan.drain.append(
                Disruption(n.name, n.pool, INTERRUPTED, "the cloud is reclaiming this spot node")
            )
    staying = Counter(n.pool for n in nodes if n.disruption is None and not n.interrupted)
    draining = Counter(n.pool for n in nodes if n.disruption is not None or n.interrupted)
    candidates = sorted(
        (n for n in nodes if n.disruption is None and not n.interrupted and n.pool in pools),
        key=lambda n: (n.idle_since if n.idle_since is not None else now, n.name),
    )
    for n in candidates:
        limits = pools[n.pool]
        since = plan.idle_since[n.name] if n.name in plan.idle_since else n.idle_since
        reason = IDLE
        if since is not None and now - since >= limits.idle_timeout_s:
            idle_for = f"idle for {now - since:.0f}s (idleTimeout {limits.idle_timeout_s:.0f}s)"
        elif _underutilized(n, limits):
            reason = UNDERUTILIZED
            idle_for = (
                f"GPU utilization peaked at {n.utilization_pct:.0f}% over the last "
                f"{limits.idle_timeout_s:.0f}s "
                f"(idleUtilizationPercent {limits.idle_utilization_pct:g})"
            )
        else:
            continue
        if n.keepers:
            p = n.keepers[0]
            plan.kept[n.name] = f"pod {p.namespace}/{p.name} has {p.keep}"
        elif staying[n.pool] <= limits.min_nodes:
            plan.kept[n.name] = f"the pool is at minNodes {limits.min_nodes}"
        elif draining[n.pool] >= limits.disruption_budget:
            plan.kept[n.name] = (
                f"{draining[n.pool]} node(s) of the pool are being removed (disruptionBudget "
                f"{limits.disruption_budget})"
            )
        else:
            plan.drain.append(Disruption(n.name, n.pool, reason, idle_for))
            staying[n.pool] -= 1
            draining[n.pool] += 1
    return plan


def _underutilized(n: NodeState, limits: PoolLimits) -> bool:
    """Busy but its GPUs did (almost) nothing for the whole idleTimeout window."""
    return (
        n.ready
        and n.busy
        and limits.idle_utilization_pct is not None
        and n.utilization_pct is not None
        and n.utilization_pct < limits.idle_utilization_pct
    )
