"""One InferencePool's decision: spec + cluster snapshot + now → pods to delete, replicas to
create where, the objects that serve them, and what the status will say. Pure; the handler's
executor applies it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpucost import names, podtemplate
from gpucost.api.common import epoch
from gpucost.api.inferencepool import InferencePoolSpec, InferencePoolStatus
from gpucost.api.nodepool import GPUNodePoolSpec
from gpucost.core import endpoint, ondemandbase, rollout
from gpucost.core.engine import contradiction
from gpucost.core.inventory import Ask, FreeMap, GPUNode
from gpucost.core.packing.frag import ShapeDistribution
from gpucost.core.placement import (
    NoFit,
    Placement,
    demand_shapes,
    eligible,
    fits_ever,
    place,
    place_planned,
)
from gpucost.core.snapshot import PlacedPod, allocations, pool_template_node


@dataclass(frozen=True)
class Pool:
    """The pool as the decision needs it."""

    name: str
    namespace: str
    uid: str
    spec: InferencePoolSpec
    status: InferencePoolStatus
    want: int
    """Replicas wanted now (spec.replicas, or the budget's floor)."""


@dataclass(frozen=True)
class Snapshot:
    nodes: Sequence[GPUNode]
    pods: Sequence[PlacedPod]
    """Every placed pod in the cluster (the pool's own included)."""
    pool_specs: Mapping[str, GPUNodePoolSpec]
    ask: Ask
    base_ask: Ask | None = None
    """The ask of the pool's on-demand base replicas, when it has one."""
    avoid: frozenset[str] = frozenset()
    """Nodes this pass must not offer (kube-scheduler refused a replica there)."""
    extension_served: bool = False
    """The Gateway API Inference Extension CRD is installed."""


@dataclass(frozen=True)
class Rollout:
    update: str
    current: str
    updated: int
    updated_ready: int
    progress_at: float
    stalled: bool
    complete: bool


@dataclass
class PoolPlan:
    delete: tuple[str, ...] = ()
    create: list[tuple[int, Placement]] = field(default_factory=list)
    unplaced: list[NoFit] = field(default_factory=list)
    impossible: str | None = None
    invalid: str | None = None
    """Why the spec cannot be rolled out (a contradicting flag, a template field); nothing of the
    running revision is touched meanwhile."""
    rollout: Rollout | None = None
    apply: list[dict[str, Any]] = field(default_factory=list)
    remove: list[dict[str, Any]] = field(default_factory=list)
    """Objects the spec opted out of, deleted if they are there."""


def expected_shapes(pods: Sequence[PlacedPod], ask: Ask, pending: int) -> ShapeDistribution:
    """What the packing policy should expect to come: the replicas running now plus this pool's
    pending ones (FGD keeps room for the shapes a cluster actually runs, not a guess)."""
    running = [
        Ask(gpus=len(p.gpu_indices)) if len(p.gpu_indices) > 1 else Ask(memory_mib=p.mib_per_gpu)
        for p in pods
        if not p.terminal and p.gpu_indices
    ]
    return demand_shapes(running + [ask] * pending)


def never_fits(ask: Ask, pool_specs: Mapping[str, GPUNodePoolSpec]) -> str | None:
    """Why no pool's node, even empty, could hold the ask; None if some could."""
    templates = [pool_template_node(n, p) for n, p in pool_specs.items()]
    if any(eligible(ask, t) and fits_ever(ask, t) for t in templates):
        return None
    what = f"{ask.gpus} whole GPUs" if ask.gpus else f"a {ask.memory_mib} MiB slice"
    shapes = sorted(
        {
            f"{t.pool}: {len(t.gpus)}x{t.gpus[0].model} {t.gpus[0].memory_mib} MiB "
            f"{t.capacity_type}"
            for t in templates
        }
    )
    return (
        f"no GPUNodePool matching capacityTypes {sorted(ask.capacity_types)}"
        + (f", gpuModels {sorted(ask.gpu_models)}" if ask.gpu_models else "")
        + f" and the nodePoolSelector can hold {what}; pools: {'; '.join(shapes) or 'none'}"
    )


def invalid(
    spec: InferencePoolSpec, ask: Ask, pool_specs: Mapping[str, GPUNodePoolSpec]
) -> str | None:
    """What the schema cannot catch: a template fighting the operator, or engine args that
    contradict the slice on a GPU the replicas may land on."""
    conflict = podtemplate.template_conflict(spec)
    if conflict:
        return conflict
    sizes = [
        p.gpu.memory_mib for n, p in pool_specs.items() if eligible(ask, pool_template_node(n, p))
    ]
    return contradiction(
        spec.engine,
        spec.args,
        port=spec.serving_port,
        slice_mib=spec.gpu.memory_mib,
        gpus=spec.gpu.gpus or 1,
        gpu_sizes=sizes,
        model_mib=spec.model_memory_mib,
    )


def progress(pool: Pool, mine: Sequence[PlacedPod], update: str, now: float) -> tuple[float, bool]:
    """When the rollout last moved (a replica of the update revision made or readied), and
    whether it has stalled past the deadline. A stalled rollout stays stalled until the spec
    changes again: the pods it then removes are not progress."""
    old = pool.status
    live = [p for p in mine if not p.terminal and not p.deleting and p.revision == update]
    counts = (len(live), sum(p.ready for p in live))
    at = epoch(old.last_progress_time)
    if old.update_revision != update or at is None:
        return now, False
    complete = counts[1] >= pool.want and all(
        p.revision == update for p in mine if not p.terminal and not p.deleting
    )
    if complete:
        return at, False
    stalled = any(
        c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" for c in old.conditions
    )
    if stalled:
        return at, True
    if counts != (old.updated_replicas, old.updated_ready_replicas):
        return now, False
    return at, now - at > pool.spec.progress_deadline_seconds


def decide(
    pool: Pool,
    mine: Sequence[PlacedPod],
    snap: Snapshot,
    now: float,
    policy: str,
) -> PoolPlan:
    spec = pool.spec
    out = PoolPlan()
    out.apply, out.remove = objects(pool, snap.extension_served)
    update = rollout.revision(spec)
    out.invalid = invalid(spec, snap.ask, snap.pool_specs) or _refused(pool.status, update)
    out.impossible = never_fits(snap.ask, snap.pool_specs)
    if out.impossible is None and snap.base_ask is not None:
        out.impossible = never_fits(snap.base_ask, snap.pool_specs)
    at, stalled = progress(pool, mine, update, now)
    rolling = spec.strategy.rolling_update
    size = spec.base_size(pool.want)
    base = ondemandbase.base_pods(mine, ondemandbase.base_nodes(snap.nodes), update, size)
    steps = rollout.plan(
        pool.want,
        list(mine),
        update,
        rollout.resolve(rolling.max_surge, pool.want, round_up=True),
        rollout.resolve(rolling.max_unavailable, pool.want, round_up=False),
        stalled=stalled or out.invalid is not None,
        keep=frozenset(p.name for p in base),
    )
    out.delete = steps.delete
    current = pool.status.current_revision
    if steps.old == 0 or current is None:
        current = update if steps.old == 0 else _most(mine, update)
    complete = steps.old == 0 and steps.updated_ready >= pool.want
    out.rollout = Rollout(
        update, current, steps.updated, steps.updated_ready, at, stalled, complete
    )
    if steps.create and not out.impossible and out.invalid is None:
        out.create, out.unplaced = place_replicas(
            pool, mine, snap, steps.create, now, policy, size - len(base)
        )
    return out


def _refused(status: InferencePoolStatus, update: str) -> str | None:
    """The API server's refusal of this revision's pods, told in the status by an earlier pass:
    not asked again until the spec changes."""
    if status.update_revision != update:
        return None
    cond = next((c for c in status.conditions if c.type == "Progressing"), None)
    return cond.message if cond is not None and cond.reason == "InvalidSpec" else None


def _most(mine: Sequence[PlacedPod], update: str) -> str:
    """The revision most live pods other than ``update`` run: what serves while rolling."""
    counts = Counter(p.revision for p in mine if p.revision != update and not p.terminal)
    return counts.most_common(1)[0][0] if counts else update


def place_replicas(
    pool: Pool,
    mine: Sequence[PlacedPod],
    snap: Snapshot,
    ordinals: Sequence[int],
    now: float,
    policy: str,
    base: int = 0,
) -> tuple[list[tuple[int, Placement]], list[NoFit]]:
    """``base``: how many of the new replicas, the first, are on-demand only."""
    owner = names.workload("InferencePool", pool.namespace, pool.name)
    nodes = [n for n in snap.nodes if n.open_to(owner, now) and n.name not in snap.avoid]
    free = FreeMap.of(nodes, allocations(list(snap.pods)))
    shapes = expected_shapes(snap.pods, snap.ask, len(ordinals))
    # Nodes the autoscaler bought are filled the way its plan packed them, GPU by GPU: their room
    # outside this pool's slots belongs to the other pools of the same plan. A node bought
    # without slots (its provider names nodes later) is filled for the asks alone.
    planned = [n for n in nodes if n.slots]
    bought = [
        n for n in nodes if owner in n.reserved_for and now < n.reserved_until and not n.slots
    ]
    rest = [n for n in nodes if not n.held(now)]
    placed: list[tuple[int, Placement]] = []
    unplaced: list[NoFit] = []
    filled = Counter(
        (p.node, tuple(p.gpu_indices)) for p in mine if not p.terminal and not p.deleting
    )
    for i, replica in enumerate(ordinals):
        ask = snap.base_ask if i < base and snap.base_ask is not None else snap.ask
        result: Placement | NoFit | None = place_planned(ask, planned, owner, free, filled)
        if result is None and bought:
            result = place(ask, bought, free, policy)
        if not isinstance(result, Placement):
            result = place(ask, rest, free, policy, shapes)
        if isinstance(result, NoFit) and result.reason == "NoMatchingGPU" and planned:
            result = NoFit(
                "Unschedulable",
                f"the new nodes' GPUs are planned for other work; {result.message}",
                result.missing_mib,
            )
        if isinstance(result, NoFit):
            unplaced.append(result)
        else:
            placed.append((replica, result))
    return placed, unplaced


def objects(
    pool: Pool, extension_served: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Service, the inference-extension pool and the PodDisruptionBudget the spec asks for
    (to apply), and the ones it opted out of (to remove)."""
    args = (pool.name, pool.namespace, pool.uid, pool.spec)
    apply: list[dict[str, Any]] = []
    remove: list[dict[str, Any]] = []
    (apply if pool.spec.service.enabled else remove).append(endpoint.service(*args))
    if extension_served:
        wanted = pool.spec.inference_extension.enabled
        (apply if wanted else remove).append(endpoint.extension_pool(*args))
    budget = endpoint.disruption_budget(*args)
    if budget is not None:
        apply.append(budget)
    else:
        remove.append(endpoint.pdb_ref(*args[:2]))
    return apply, remove
