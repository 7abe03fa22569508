"""Values the packing core works on: what a node offers, what a task asks, where it went.

GPU capacity is counted in integer *units* per GPU. The Alibaba trace has no GPU memory sizes, so
there a GPU is 1000 units (milli-GPUs); the operator knows each GPU's memory, so there a unit is one
MiB. A task may ask for a share of a GPU (thousandths), a memory slice (MiB) or k whole GPUs; the
cluster turns each ask into units per node, so one engine serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

MILLI = 1000


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int = 0
    model: str | None = None
    gpu_units: int = MILLI
    """Capacity of one GPU in units."""
    mib_per_unit: float | None = None
    """MiB of GPU memory one unit stands for; None when unknown (memory-slice asks never fit)."""
    whole_only: bool = False
    """A node whose GPUs are never shared: any GPU ask takes whole GPUs."""
    price_per_hour: float = 0.0


@dataclass(frozen=True)
class Task:
    cpu_milli: int = 0
    memory_mib: int = 0
    gpus: int = 0
    """GPUs the task spans; 0 for a CPU-only task."""
    gpu_milli: int = MILLI
    """Share of each GPU in thousandths; 1000 = whole GPUs."""
    gpu_mib: int | None = None
    """A memory slice of one GPU in MiB, instead of ``gpu_milli``."""
    models: frozenset[str] | None = None
    """GPU models the task may run on; None = any."""
    name: str = ""

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.cpu_milli < 0 or self.memory_mib < 0:
            raise ValueError(f"task {self.name!r}: negative request")
        if not 0 < self.gpu_milli <= MILLI:
            raise ValueError(
                f"task {self.name!r}: gpu_milli must be in 1..1000, got {self.gpu_milli}"
            )
        if self.gpu_mib is not None and (self.gpu_mib <= 0 or self.gpus != 1):
            raise ValueError(f"task {self.name!r}: a memory slice needs gpus=1 and a positive MiB")
        if self.gpus > 1 and self.gpu_milli < MILLI:
            raise ValueError(
                f"task {self.name!r}: a fraction of a GPU can only be asked for one GPU"
            )

    @property
    def shared(self) -> bool:
        """Takes part of one GPU (and so may share it with others)."""
        return self.gpus == 1 and (self.gpu_mib is not None or self.gpu_milli < MILLI)

    @property
    def shape(self) -> tuple[int, int, int, int | None, frozenset[str] | None]:
        """What placement depends on, without the name (memory is not part of FGD's shape)."""
        return (
            self.cpu_milli,
            self.gpus,
            self.gpu_milli if self.gpus else 0,
            self.gpu_mib,
            self.models,
        )

    def gpu_request_milli(self) -> int:
        """GPU asked for in thousandths of a GPU (the trace's measure of arrived work)."""
        return self.gpus * self.gpu_milli if self.gpu_mib is None else 0


@dataclass(frozen=True)
class GPUChoice:
    node: int
    """Index of the node in the cluster."""
    gpus: tuple[int, ...]
    units: int
    """Units taken on each of ``gpus``."""
