"""What GPUs exist and what is already taken, as frozen values the placement policies read."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GPU:
    index: int
    model: str
    memory_mib: int
    uuid: str | None = None
    healthy: bool = True
    """False when the node agent saw it lost or a fatal Xid: nothing new is placed on it."""


@dataclass(frozen=True)
class GPUNode:
    name: str
    pool: str
    capacity_type: str
    price_per_hour: float
    gpus: tuple[GPU, ...]
    shared: bool = True
    """False for ``sharing: whole`` pools: a slice ask then takes a whole GPU."""
    schedulable: bool = True
    """core.refusal's verdict: the node takes a new pod of the operator's now."""
    reserved_for: frozenset[str] = frozenset()
    reserved_until: float = 0.0
    """A new node is held for the workloads it was launched for until this time (epoch seconds)."""
    slots: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """(owner, GPU indices) of each ask the scale-up plan packed onto this node when it bought
    it."""

    def held(self, now: float) -> bool:
        """Its plan's slots still keep other work off it (the reservation's hold)."""
        return bool(self.slots) and now < self.reserved_until

    def slots_of(self, owner: str) -> list[tuple[int, ...]]:
        """The GPUs the plan gave this owner's asks here. They stay its own after the hold: the
        hold only keeps other work off the node, and a pool that gets to its replicas late (a
        burst of 5,000) still finds the room bought for them, unless others took it since."""
        return [gpus for who, gpus in self.slots if who == owner]

    def open_to(self, owner: str, now: float) -> bool:
        return not self.reserved_for or owner in self.reserved_for or now >= self.reserved_until


@dataclass(frozen=True)
class Allocation:
    """MiB of one GPU held by one existing pod."""

    node: str
    gpu_index: int
    memory_mib: int


@dataclass(frozen=True)
class Ask:
    memory_mib: int | None = None
    gpus: int | None = None
    capacity_types: frozenset[str] = frozenset({"on-demand"})
    gpu_models: frozenset[str] = frozenset()
    pools: frozenset[str] | None = None
    """Pools the ask may use; None = any."""

    def takes(self, capacity_type: str) -> bool:
        """Reserved capacity is on-demand capacity paid for in advance: on-demand work may use it
        (spot-only work may too: it is never taken back)."""
        return capacity_type in self.capacity_types or capacity_type == "reserved"

    def __post_init__(self) -> None:
        if (self.memory_mib is None) == (self.gpus is None):
            raise ValueError("an Ask needs exactly one of memory_mib or gpus")


@dataclass
class FreeMap:
    """Free MiB per (node, gpu index); mutable so a batch of placements sees its own earlier
    picks."""

    free: dict[tuple[str, int], int] = field(default_factory=dict)

    @classmethod
    def of(cls, nodes: list[GPUNode], allocations: list[Allocation]) -> "FreeMap":
        free = {(n.name, g.index): g.memory_mib if g.healthy else 0 for n in nodes for g in n.gpus}
        for a in allocations:
            key = (a.node, a.gpu_index)
            if key in free:
                free[key] -= a.memory_mib
        return cls(free)

    def take(self, node: str, gpu_index: int, mib: int) -> None:
        left = self.free[(node, gpu_index)] - mib
        if left < 0:
            raise ValueError(f"over-commit of {node} GPU {gpu_index} by {-left} MiB")
        self.free[(node, gpu_index)] = left
