"""Trace replays over the packing core, as the ATC'23 paper runs them, plus one with departures.

Static: shuffle the trace with a seed, resample it up to 130 % of the cluster's GPU capacity, place
tasks one by one with no departures, and read the GPU allocation ratio as the arrived GPU request
grows (mean over the steps at each whole percent, like the paper's analysis scripts).
Dynamic: tasks arrive at their creation time and leave at their deletion time; what autoscaling
turns into money is how many GPUs hold any work over time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gpucost.core.packing.cluster import PackingState
from gpucost.core.packing.frag import FragIndex, ShapeDistribution
from gpucost.core.packing.model import GPUChoice, NodeSpec, Task
from gpucost.core.packing.policies import Policy

LEVELS = (90, 95, 100, 110, 120, 130)


def inflate(
    tasks: Sequence[Task], capacity_milli: int, seed: int, ratio: float = 1.3
) -> list[Task]:
    """The tasks in a seeded random order, then random repeats until ``ratio`` of capacity is
    asked."""
    rng = np.random.default_rng(seed)
    order = [tasks[i] for i in rng.permutation(len(tasks))]
    target = ratio * capacity_milli
    asked = sum(t.gpu_request_milli() for t in order)
    while order and asked > target:  # trim a trace that is bigger than the target
        asked -= order.pop(int(rng.integers(len(order)))).gpu_request_milli()
    while True:
        extra = tasks[int(rng.integers(len(tasks)))]
        if asked + extra.gpu_request_milli() > target:
            return order
        order.append(extra)
        asked += extra.gpu_request_milli()


@dataclass
class StaticResult:
    alloc_pct: dict[int, float]
    frag_pct: dict[int, float]
    seconds: float
    """Time spent choosing and applying placements (not measuring)."""
    tasks: int
    placed: int
    unplaceable: int
    """Tasks no node could hold even empty: counted, never an error."""
    curve: list[tuple[float, float]] = field(default_factory=list)
    """(arrived %, allocated %) after each task, for plots."""


def _bucket_means(sums: dict[int, list[float]], levels: Sequence[int]) -> dict[int, float]:
    """Mean at each level; an empty bucket borrows its neighbours (±1), as the paper's script does,
    and failing that the nearest bucket (a small trace moves several percent per task)."""
    out: dict[int, float] = {}
    if not sums:
        return out
    for level in levels:
        vals = sums.get(level) or (sums.get(level - 1, []) + sums.get(level + 1, []))
        if not vals:
            vals = sums[min(sums, key=lambda b: (abs(b - level), -b))]
        out[level] = float(np.mean(vals))
    return out


def replay_static(
    nodes: Sequence[NodeSpec],
    tasks: Sequence[Task],
    policy: Policy,
    measure: ShapeDistribution,
    levels: Sequence[int] = LEVELS,
) -> StaticResult:
    cluster = PackingState(nodes)
    frag = FragIndex(cluster, measure)
    capacity = cluster.total_units
    arrived = 0
    used = 0
    placed = unplaceable = 0
    spent = 0.0
    alloc: dict[int, list[float]] = {}
    frags: dict[int, list[float]] = {}
    curve: list[tuple[float, float]] = []
    for task in tasks:
        arrived += task.gpu_request_milli()
        if not cluster.fits_empty(task).any():
            unplaceable += 1
        else:
            start = time.perf_counter()
            where = policy.choose(cluster, task)
            if where is not None:
                cluster.apply(task, where)
                placed += 1
                used += where.units * len(where.gpus)
            spent += time.perf_counter() - start
        pct = 100.0 * arrived / capacity
        level = round(pct)
        alloc.setdefault(level, []).append(100.0 * used / capacity)
        frags.setdefault(level, []).append(100.0 * frag.cluster_frag() / capacity)
        curve.append((pct, 100.0 * used / capacity))
    return StaticResult(
        _bucket_means(alloc, levels),
        _bucket_means(frags, levels),
        spent,
        len(tasks),
        placed,
        unplaceable,
        curve,
    )


@dataclass
class DynamicResult:
    gpu_hours: float
    node_hours: float
    placed: int
    failed: int
    peak_gpus: int
    timeline: list[tuple[float, int]]
    """(hours since start, GPUs holding any work) after each event."""


def replay_dynamic(
    nodes: Sequence[NodeSpec],
    timed: Sequence[tuple[Task, int, int]],
    policy: Policy,
) -> DynamicResult:
    """Place at creation, free at deletion (departures first at equal times)."""
    cluster = PackingState(nodes)
    events = sorted(
        [(created, 1, i) for i, (_, created, _) in enumerate(timed)]
        + [(deleted, 0, i) for i, (_, _, deleted) in enumerate(timed)]
    )
    where: dict[int, GPUChoice] = {}
    gpu_seconds = node_seconds = 0.0
    failed = 0
    peak = 0
    timeline: list[tuple[float, int]] = []
    t0 = events[0][0] if events else 0
    last = t0
    gpus = nodes_busy = 0
    for at, kind, i in events:
        gpu_seconds += gpus * (at - last)
        node_seconds += nodes_busy * (at - last)
        last = at
        task = timed[i][0]
        if kind == 0:
            if i in where:
                cluster.release(task, where.pop(i))
        else:
            placement = policy.choose(cluster, task)
            if placement is None:
                failed += 1
            else:
                cluster.apply(task, placement)
                where[i] = placement
        gpus, nodes_busy = cluster.gpus_in_use(), cluster.nodes_in_use()
        peak = max(peak, gpus)
        timeline.append(((at - t0) / 3600.0, gpus))
    return DynamicResult(
        gpu_seconds / 3600.0, node_seconds / 3600.0, len(timed) - failed, failed, peak, timeline
    )
