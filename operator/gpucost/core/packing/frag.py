"""FGD's fragmentation measure, kept per node and evaluated for many candidate moves at once.

For a node and a task *shape* s (frequency f_s), the free GPU capacity that s could not use is:
all of it, when s cannot run there at all (too little CPU, wrong model, not enough GPUs with room);
otherwise the free capacity on GPUs too small for s. A node's fragmentation is the f-weighted sum
(ATC'23, "Beware of Fragmentation"). Shapes that ask the same per-GPU amount and GPU count form a
*group*; within a group only the CPU threshold and the model differ, so

    frag(n) = total(n)·F − Σ_g [cnt_g(n) ≥ k_g] · (total(n) − small_g(n)) · W_g(model(n), cpu(n))

where cnt_g counts GPUs with room for the group's ask, small_g sums the free units on the others and
W_g is the frequency of the group's shapes that fit the node's model and CPU. A candidate placement
changes j GPUs of one node from a to a−d and its CPU, so its effect is a handful of array operations
over (candidates × groups) instead of a loop over nodes, GPUs and shapes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from gpucost.core.packing.cluster import PackingState
from gpucost.core.packing.model import Task


@dataclass(frozen=True)
class ShapeDistribution:
    """Task shapes with their frequencies (summing to 1): FGD's model of the work to come."""

    shapes: tuple[tuple[Task, float], ...]

    @classmethod
    def of(
        cls, tasks: Iterable[Task], coverage: float = 1.0, weight: str = "count"
    ) -> "ShapeDistribution":
        """Most popular shapes until ``coverage`` of the tasks is reached, renormalised.

        ``coverage=0.95`` with ``weight="count"`` is the paper's "typical pods"; ``weight="gpu"``
        weighs each task by the GPU it asks for, so a rare 8-GPU job counts for what it occupies.
        """
        if weight not in ("count", "gpu"):
            raise ValueError(f"unknown weight {weight!r}")
        counts: Counter[tuple[object, ...]] = Counter()
        sample: dict[tuple[object, ...], Task] = {}
        for t in tasks:
            counts[t.shape] += 1.0 if weight == "count" else t.gpus * t.gpu_milli / 1000
            sample.setdefault(
                t.shape, Task(t.cpu_milli, 0, t.gpus, t.gpu_milli, t.gpu_mib, t.models)
            )
        total = sum(counts.values())
        if total <= 0:
            return cls(())
        # Most frequent first; equal counts in a fixed order so runs are reproducible.
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], repr(kv[0])))
        chosen: list[tuple[tuple[object, ...], float]] = []
        covered = 0.0
        for key, c in ranked:
            if covered >= coverage * total:
                break
            chosen.append((key, c))
            covered += c
        return cls(tuple((sample[k], c / covered) for k, c in chosen))


class FragIndex:
    """Per-node fragmentation for one cluster and one shape distribution, refreshed lazily."""

    def __init__(self, cluster: PackingState, dist: ShapeDistribution) -> None:
        self.cluster = cluster
        groups: dict[tuple[int, int, int | None], list[tuple[Task, float]]] = {}
        self.f_all = sum(f for _, f in dist.shapes)
        for task, f in dist.shapes:
            if task.gpus:
                groups.setdefault((task.gpus, task.gpu_milli, task.gpu_mib), []).append((task, f))
        keys = list(groups)
        self.k = np.array([k[0] for k in keys], dtype=np.int64)
        # Per-GPU demand of each group on each node (N × G).
        self.m = (
            np.stack([cluster.demand(groups[k][0][0]) for k in keys], axis=1)
            if keys
            else np.zeros((len(cluster), 0), dtype=np.int64)
        )
        thresholds = sorted({t.cpu_milli for k in keys for t, _ in groups[k]})
        self.thresholds = np.array(thresholds, dtype=np.int64)
        # W[model + 1, number of thresholds <= cpu, group]; row 0 is "no GPU model".
        w = np.zeros((len(cluster.models) + 1, len(thresholds) + 1, len(keys)))
        for g, key in enumerate(keys):
            for task, f in groups[key]:
                start = thresholds.index(task.cpu_milli) + 1
                for mi, model in enumerate(cluster.models):
                    if task.models is None or model in task.models:
                        w[mi + 1, start:, g] += f
        self.w = w
        self.epoch = np.full(len(cluster), -1, dtype=np.int64)
        n = len(cluster)
        self.total = np.zeros(n, dtype=np.int64)
        self.cnt = np.zeros((n, len(keys)), dtype=np.int64)
        self.small = np.zeros((n, len(keys)), dtype=np.int64)
        self.frag = np.zeros(n)
        self.refresh()

    def refresh(self) -> None:
        """Recompute the rows of nodes that changed since the last look."""
        c = self.cluster
        stale = np.flatnonzero(c.epoch != self.epoch)
        if not len(stale):
            return
        free = c.gpu_free[stale]
        m = self.m[stale]
        room = free[:, None, :] >= m[:, :, None]
        self.total[stale] = free.sum(axis=1)
        self.cnt[stale] = room.sum(axis=2)
        self.small[stale] = np.where(room, 0, free[:, None, :]).sum(axis=2)
        self.frag[stale] = self._frag(
            stale, self.total[stale], self.cnt[stale], self.small[stale], c.cpu_free[stale]
        )
        self.epoch[stale] = c.epoch[stale]

    def _frag(
        self,
        rows: np.ndarray,
        total: np.ndarray,
        cnt: np.ndarray,
        small: np.ndarray,
        cpu: np.ndarray,
    ) -> np.ndarray:
        tidx = np.searchsorted(self.thresholds, cpu, side="right")
        w = self.w[self.cluster.model_index[rows] + 1, tidx]
        usable = (cnt >= self.k) * (total[:, None] - small) * w
        return total * self.f_all - usable.sum(axis=1)

    def after(
        self, rows: np.ndarray, a: np.ndarray, j: int, d: np.ndarray, cpu_after: np.ndarray
    ) -> np.ndarray:
        """Fragmentation of nodes ``rows`` if j of their GPUs went from ``a`` to ``a − d`` free."""
        m = self.m[rows]
        a2 = (a - d)[:, None]
        a1 = a[:, None]
        cnt = self.cnt[rows] + j * ((a2 >= m).astype(np.int64) - (a1 >= m))
        small = self.small[rows] + j * (np.where(a2 < m, a2, 0) - np.where(a1 < m, a1, 0))
        total = self.total[rows] - j * d
        return self._frag(rows, total, cnt, small, cpu_after)

    def cluster_frag(self) -> float:
        self.refresh()
        return float(self.frag.sum())
