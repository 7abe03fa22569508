"""Placement policies: each picks a node and GPUs for one task, or None when nothing fits now.

``firstfit``, ``bestfit`` and ``fgd`` are the baselines, written the way the ATC'23 simulator scores
(integer node scores, ties broken at random), so our numbers can be held against the published ones.
``gpucost`` is ours; see :class:`GpuCost`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from gpucost.core.packing.cluster import Cluster
from gpucost.core.packing.frag import FragIndex, ShapeDistribution
from gpucost.core.packing.model import Placement, Task

MAX_SPEC_CPU = 128_000
MAX_SPEC_GPU = 8_000
"""The simulator's normalisation of best-fit scores: the largest node in milli-CPU / milli-GPU."""


class Policy(Protocol):
    name: str

    def choose(self, cluster: Cluster, task: Task) -> Placement | None: ...


class _Ranked:
    """Breaks score ties by a node order shuffled once per run.

    The ATC'23 simulator names nodes with a seeded random prefix and its scheduler keeps the first
    of equal scores; random tie-breaks instead spread work thin and lose ~6 points for FGD.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self._rank: np.ndarray | None = None

    def rank(self, cluster: Cluster) -> np.ndarray:
        if self._rank is None or len(self._rank) != len(cluster):
            self._rank = self.rng.permutation(len(cluster))
        return self._rank


class FirstFit:
    name = "firstfit"

    def choose(self, cluster: Cluster, task: Task) -> Placement | None:
        ok = np.flatnonzero(cluster.feasible(task))
        if not len(ok):
            return None
        node = int(ok[0])
        return cluster.placement(node, task, cluster.gpus_for(node, task, how="first"))


class BestFit(_Ranked):
    """Least leftover CPU and GPU (equal weights), integer-scored and min-max normalised."""

    name = "bestfit"

    def choose(self, cluster: Cluster, task: Task) -> Placement | None:
        ok = np.flatnonzero(cluster.feasible(task))
        if not len(ok):
            return None
        gpu_left = cluster.gpu_free[ok].sum(axis=1) - task.gpus * cluster.demand(task)[ok]
        cpu_left = cluster.cpu_free[ok] - task.cpu_milli
        raw = ((1.0 - (0.5 * cpu_left / MAX_SPEC_CPU + 0.5 * gpu_left / MAX_SPEC_GPU)) * 100).astype(np.int64)
        lo, hi = raw.min(), raw.max()
        scores = (raw - lo) * 100 // (hi - lo) if hi > lo else np.zeros_like(raw)
        top = ok[scores == scores.max()]
        node = int(top[np.argmin(self.rank(cluster)[top])])
        return cluster.placement(node, task, cluster.gpus_for(node, task, how="tightest"))


def _candidates(cluster: Cluster, task: Task, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(node, free units of the GPU(s) taken, demand) for every distinct way to place the task.

    A shared task may go on any GPU with room, but GPUs of one node with equal free units are
    interchangeable, so each distinct value is tried once. Whole-GPU tasks take fully free GPUs.
    """
    need = cluster.demand(task)[ok]
    if not task.gpus:
        zeros = np.zeros(len(ok), dtype=np.int64)
        return ok, zeros, zeros
    if not task.shared:
        return ok, need, need
    free = cluster.gpu_free[ok]
    rows, cols = np.nonzero(free >= need[:, None])
    values = free[rows, cols]
    key = np.unique(rows * (int(values.max()) + 1) + values)
    rows, values = np.divmod(key, int(values.max()) + 1)
    return ok[rows], values, need[rows]


def _gpus_with_free(cluster: Cluster, node: int, task: Task, value: int) -> tuple[int, ...]:
    """The task's GPUs on ``node``: the first ones whose free units equal ``value``."""
    hits = np.flatnonzero(cluster.gpu_free[node] == value)
    return tuple(int(i) for i in hits[: task.gpus])


class FGD(_Ranked):
    """Fragmentation Gradient Descent: the move that grows expected fragmentation least.

    Scores are the simulator's ``int(sigmoid(-Δfrag / 1000) · 100)`` with random tie-breaks; the
    shape distribution is the paper's typical pods (95 % most popular shapes, CPU tasks included).
    """

    name = "fgd"

    def __init__(self, dist: ShapeDistribution, seed: int = 0) -> None:
        super().__init__(seed)
        self.dist = dist
        self._index: FragIndex | None = None

    def index(self, cluster: Cluster) -> FragIndex:
        if self._index is None or self._index.cluster is not cluster:
            self._index = FragIndex(cluster, self.dist)
        self._index.refresh()
        return self._index

    def delta(self, cluster: Cluster, task: Task) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(nodes, free value taken, Δfrag) per candidate; None when nothing fits."""
        ok = np.flatnonzero(cluster.feasible(task))
        if not len(ok):
            return None
        idx = self.index(cluster)
        nodes, values, need = _candidates(cluster, task, ok)
        j = task.gpus if task.gpus else 0
        after = idx.after(nodes, values, j, need, cluster.cpu_free[nodes] - task.cpu_milli)
        return nodes, values, after - idx.frag[nodes]

    def choose(self, cluster: Cluster, task: Task) -> Placement | None:
        found = self.delta(cluster, task)
        if found is None:
            return None
        nodes, values, delta = found
        score = (100.0 / (1.0 + np.exp(delta / 1000.0))).astype(np.int64)
        # A node's score is its best GPU's; the simulator takes the lowest GPU index among equals.
        order = np.lexsort((values, -score, nodes))
        first = np.ones(len(order), dtype=bool)
        first[1:] = nodes[order][1:] != nodes[order][:-1]
        best_rows = order[first]
        top = best_rows[score[best_rows] == score[best_rows].max()]
        pick = top[np.argmin(self.rank(cluster)[nodes[top]])]
        node = int(nodes[pick])
        if task.shared:
            same = np.flatnonzero(score[nodes == node] == score[pick])
            cand_values = values[nodes == node][same]
            free = cluster.gpu_free[node]
            gpu = next(int(i) for i in range(len(free)) if free[i] in cand_values and free[i] >= 0)
            return cluster.placement(node, task, (gpu,))
        return cluster.placement(node, task, cluster.gpus_for(node, task, how="first"))


PolicyFactory = Callable[[ShapeDistribution, int], Policy]
