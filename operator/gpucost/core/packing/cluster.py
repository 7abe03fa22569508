"""Free resources of every node as numpy arrays, so a policy scores all nodes in one pass."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpucost.core.packing.model import MILLI, GPUChoice, NodeSpec, Task

NEVER = np.iinfo(np.int64).max // 4
"""Per-GPU demand on a node that can never serve the ask (no GPUs, no memory size known)."""


class PackingState:
    """Mutable free capacity; ``apply``/``release`` are the only writers and never over-commit."""

    def __init__(self, nodes: Sequence[NodeSpec]) -> None:
        self.nodes = tuple(nodes)
        n = len(self.nodes)
        width = max((s.gpus for s in self.nodes), default=0) or 1
        self.cpu_total = np.array([s.cpu_milli for s in self.nodes], dtype=np.int64)
        self.mem_total = np.array([s.memory_mib for s in self.nodes], dtype=np.int64)
        self.gpu_count = np.array([s.gpus for s in self.nodes], dtype=np.int64)
        self.units = np.array([s.gpu_units if s.gpus else 0 for s in self.nodes], dtype=np.int64)
        self.mib_per_unit = np.array(
            [s.mib_per_unit if s.mib_per_unit else np.nan for s in self.nodes], dtype=np.float64
        )
        self.whole_only = np.array([s.whole_only for s in self.nodes], dtype=bool)
        self.models = tuple(sorted({s.model for s in self.nodes if s.gpus and s.model}))
        index = {m: i for i, m in enumerate(self.models)}
        self.model_index = np.array(
            [index[s.model] if s.gpus and s.model else -1 for s in self.nodes], dtype=np.int64
        )
        self.gpu_exists = np.arange(width)[None, :] < self.gpu_count[:, None]
        self.cpu_free = self.cpu_total.copy()
        self.mem_free = self.mem_total.copy()
        # Missing GPUs (a 2-GPU node in an 8-wide array) hold 0 free units: nothing ever fits there.
        self.gpu_free = np.where(self.gpu_exists, self.units[:, None], 0).astype(np.int64)
        self.epoch = np.zeros(n, dtype=np.int64)
        """Bumped on every change to a node, so caches know which rows to refresh."""
        self._model_masks: dict[frozenset[str] | None, np.ndarray] = {}
        self._demands: dict[tuple[object, ...], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def total_units(self) -> int:
        return int((self.units * self.gpu_count).sum())

    @property
    def used_units(self) -> int:
        return self.total_units - int(self.gpu_free.sum())

    def busy_gpus(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Per node (of ``rows``) and GPU: does the GPU hold any work?"""
        return (self.gpu_free[rows] < self.units[rows, None]) & self.gpu_exists[rows]

    def gpus_in_use(self) -> int:
        return int(self.busy_gpus().sum())

    def nodes_in_use(self) -> int:
        return int((self.busy_gpus().any(axis=1) | (self.cpu_free < self.cpu_total)).sum())

    def model_mask(self, models: frozenset[str] | None) -> np.ndarray:
        mask = self._model_masks.get(models)
        if mask is None:
            if models is None:
                mask = np.ones(len(self), dtype=bool)
            else:
                mask = np.array([s.gpus > 0 and s.model in models for s in self.nodes], dtype=bool)
            self._model_masks[models] = mask
        return mask

    def demand(self, task: Task) -> np.ndarray:
        """Units the task takes on each of its GPUs, per node (``NEVER`` where it cannot)."""
        key = (task.gpus, task.gpu_milli, task.gpu_mib)
        cached = self._demands.get(key)
        if cached is not None:
            return cached
        if task.gpus == 0:
            need = np.zeros(len(self), dtype=np.int64)
        else:
            if task.gpu_mib is not None:
                with np.errstate(invalid="ignore"):
                    raw = np.ceil(task.gpu_mib / self.mib_per_unit)
                need = np.where(np.isnan(raw), NEVER, raw).astype(np.int64)
            else:
                need = -(-task.gpu_milli * self.units // MILLI)
            need = np.where(self.whole_only, self.units, need)
            need = np.where(need > self.units, NEVER, need)
            need = np.where(self.gpu_count > 0, need, NEVER)
        self._demands[key] = need
        return need

    def feasible(self, task: Task) -> np.ndarray:
        """Nodes that can take the task now: CPU, memory, GPU model and enough GPUs with room."""
        ok = (self.cpu_free >= task.cpu_milli) & (self.mem_free >= task.memory_mib)
        if task.gpus:
            ok &= self.model_mask(task.models)
            ok &= (self.gpu_free >= self.demand(task)[:, None]).sum(axis=1) >= task.gpus
        return ok

    def fits_empty(self, task: Task) -> np.ndarray:
        """Nodes that could take the task if they were empty (else it is unplaceable, not
        unlucky)."""
        ok = (self.cpu_total >= task.cpu_milli) & (self.mem_total >= task.memory_mib)
        if task.gpus:
            ok &= self.model_mask(task.models)
            ok &= (self.gpu_count >= task.gpus) & (self.demand(task) < NEVER)
        return ok

    def gpus_for(self, node: int, task: Task, how: str = "tightest") -> tuple[int, ...]:
        """Which GPUs of a node take the task: the tightest fits (best fit) or the first ones."""
        if not task.gpus:
            return ()
        need = int(self.demand(task)[node])
        free = self.gpu_free[node]
        fitting = np.flatnonzero(free >= need)
        if how == "tightest":
            fitting = fitting[np.argsort(free[fitting], kind="stable")]
        return tuple(int(i) for i in fitting[: task.gpus])

    def placement(self, node: int, task: Task, gpus: Sequence[int]) -> GPUChoice:
        return GPUChoice(node, tuple(gpus), int(self.demand(task)[node]) if task.gpus else 0)

    def apply(self, task: Task, where: GPUChoice) -> None:
        n = where.node
        if len(set(where.gpus)) != task.gpus:
            raise ValueError(
                f"{task.name or 'task'} needs {task.gpus} distinct GPUs, got {where.gpus}"
            )
        if self.cpu_free[n] < task.cpu_milli or self.mem_free[n] < task.memory_mib:
            raise ValueError(f"over-commit of CPU or memory on {self.nodes[n].name}")
        for g in where.gpus:
            if not self.gpu_exists[n, g] or self.gpu_free[n, g] < where.units:
                raise ValueError(f"over-commit of {self.nodes[n].name} GPU {g}")
        self.cpu_free[n] -= task.cpu_milli
        self.mem_free[n] -= task.memory_mib
        for g in where.gpus:
            self.gpu_free[n, g] -= where.units
        self.epoch[n] += 1

    def release(self, task: Task, where: GPUChoice) -> None:
        n = where.node
        self.cpu_free[n] += task.cpu_milli
        self.mem_free[n] += task.memory_mib
        for g in where.gpus:
            self.gpu_free[n, g] += where.units
        if (
            self.cpu_free[n] > self.cpu_total[n]
            or self.mem_free[n] > self.mem_total[n]
            or (self.gpu_free[n] > self.units[n]).any()
        ):
            raise ValueError(
                f"release of {task.name or 'task'} frees more than {self.nodes[n].name} has"
            )
        self.epoch[n] += 1

    def reserve(self, node: int, gpu: int, units: int) -> None:
        """Mark units of one GPU as held by work the cluster was built without (existing pods)."""
        if units < 0 or units > self.gpu_free[node, gpu] or not self.gpu_exists[node, gpu]:
            raise ValueError(f"cannot reserve {units} units of {self.nodes[node].name} GPU {gpu}")
        self.gpu_free[node, gpu] -= units
        self.epoch[node] += 1
